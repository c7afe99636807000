"""`git gpuspace bind [<worktree>]`: give an existing worktree (made by git) its container."""

from __future__ import annotations

import argparse

from .. import state
from ..git import worktrees
from ..errors import UsageError
from ..lifecycle import bind_worktree, prepare, require_unbound, resolve_worktree
from ..lifecycle_commands import file_commands, run_lifecycle
from ..rollback import Rollback
from ..settings import settings_for_worktree
from ..reconcile import converge_quietly
from .add import flag_settings, report


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktrees.require_plain_repo(info, "bind")
    worktree = resolve_worktree(info, args.worktree)
    if worktree.prunable:
        raise UsageError(f"'{worktree.path}' no longer exists", hint="`git worktree prune` forgets it")
    # devcontainer.json, and pulling or building its image, take as long as the repository
    # makes them: not under the repo lock (checked again under it).
    known = state.load(info.common_dir)
    settings = settings_for_worktree(
        info, known.defaults, flag_settings(args), args.share, worktree, args.devcontainer, args.trust
    )
    require_unbound(known, worktree.path)
    plan = prepare(settings)
    with state.locked(info.common_dir) as current:
        require_unbound(current, worktree.path)
        converge_quietly(info, plan.engine, current)
        with Rollback() as undo:
            binding, chosen = bind_worktree(info, plan, current, worktree, start=not args.no_start, undo=undo)
    report(binding, chosen, started=not args.no_start)
    if not args.no_start and not run_lifecycle(plan.engine, binding, file_commands(plan.settings), first_start=True):
        return 1
    return 0
