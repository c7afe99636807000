"""`git gpuspace prune`: converge bindings, worktrees and containers now."""

from __future__ import annotations

import argparse

from .. import reconcile, state, worktrees
from ..containers import Engine


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    with state.locked(info.common_dir) as current:
        actions = reconcile.converge(info, Engine(), current, retry_pending=True)
        actions += worktrees.prune_admin_dirs(info)  # as `git worktree prune` does
    for line in actions:
        print(line)
    if not actions:
        print("Nothing to prune.")
    return 0
