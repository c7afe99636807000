"""`git gpuspace bind [<worktree>]`: give an existing worktree (made by git) its container."""

from __future__ import annotations

import argparse

from .. import state, worktrees
from ..errors import UsageError
from ..lifecycle import Rollback, bind_worktree, prepare, require_unbound, resolve_worktree, run_post_create
from ..settings import settings_for_worktree
from ..reconcile import converge_quietly
from .add import flag_settings, report


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktrees.require_plain_repo(info, "bind")
    worktree = resolve_worktree(info, args.worktree)
    if worktree.prunable:
        raise UsageError(f"'{worktree.path}' no longer exists", hint="`git worktree prune` forgets it")
    with state.locked(info.common_dir) as current:
        settings = settings_for_worktree(
            info, current.defaults, flag_settings(args), args.share, worktree, args.devcontainer, args.trust
        )
        require_unbound(current, worktree.path)
        plan = prepare(settings)
        converge_quietly(info, plan.engine, current)
        with Rollback() as undo:
            binding, chosen = bind_worktree(info, plan, current, worktree, start=not args.no_start, undo=undo)
    report(binding, chosen, started=not args.no_start)
    if not args.no_start:
        run_post_create(plan.engine, binding, settings.post_create)
    return 0
