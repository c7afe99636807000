"""`git gpuspace prune`: converge bindings, worktrees and containers now."""

from __future__ import annotations

import argparse

from .. import reconcile, state
from ..git import worktrees
from ..engine.containers import Engine
from ..specs import format_size
from . import data


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    if args.dry_run:
        actions = reconcile.converge(info, Engine(), state.load(info.common_dir), dry_run=True)
        actions += worktrees.prune_admin_dirs(info, dry_run=True)
        actions += [f"data dir {d.path} ({format_size(d.size)}) is orphaned: kept (`git gpuspace data rm` deletes it)"
                    for d in data.orphaned()]
    else:
        with state.locked(info.common_dir) as current:
            actions = reconcile.converge(info, Engine(), current, retry_pending=True)
            actions += worktrees.prune_admin_dirs(info)  # as `git worktree prune` does
    for line in actions:
        print(line)
    if not actions:
        print("Nothing to prune.")
    return 0
