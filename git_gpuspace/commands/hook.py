"""`git gpuspace _hook new-worktree|converge`: what our git hooks run. Never fails git.

new-worktree: post-checkout of `git worktree add`, run in the new worktree: bind it as
`git gpuspace add` would, with the repo defaults. If that cannot be done now (engine down,
image missing, no GPU free), record the binding as pending with the reason and warn.
converge: run in the background after other hooks saw a vanished, moved or pending binding.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import state, worktrees
from ..cli import report_internal_error
from ..containers import Engine
from ..errors import GpuspaceError
from ..lifecycle import Rollback, bind_worktree, prepare, record_pending, resolve_worktree, run_post_create
from ..settings import settings_for_worktree
from ..reconcile import converge
from .add import report


def run(args: argparse.Namespace) -> int:
    try:
        if args.event == "new-worktree":
            _bind_new_worktree()
        else:
            _converge()
    except GpuspaceError as error:
        print(f"git-gpuspace: warning: {error}", file=sys.stderr)
    except Exception as error:  # a bug must not break git either
        report_internal_error(error)
    return 0


def _bind_new_worktree() -> None:
    info = worktrees.discover()
    worktree = resolve_worktree(info, None)
    if os.environ.get(worktrees.ADDING) == str(worktree.path):
        return  # `git gpuspace add` runs the hooks of the worktree it makes, and binds it itself
    known = state.load(info.common_dir)
    if not known.auto_bind or worktree.is_main or not _unbound(known, worktree):
        return  # this repo did not run `git gpuspace init`, or there is nothing to do
    # devcontainer.json, and pulling or building its image, take as long as the repository
    # makes them: not under the repo lock.
    settings = settings_for_worktree(info, known.defaults, {}, False, worktree)
    try:
        plan = prepare(settings)
        with state.locked(info.common_dir) as current:
            if not _unbound(current, worktree):
                return
            with Rollback() as undo:
                binding, chosen = bind_worktree(info, plan, current, worktree, start=True, undo=undo)
        run_post_create(plan.engine, binding, settings.post_create)
    except GpuspaceError as error:
        with state.locked(info.common_dir) as current:
            if _unbound(current, worktree):
                record_pending(current, info, worktree, settings, str(error))
        print(
            f"git-gpuspace: warning: {worktree.path} has no container yet: {error}; "
            f"it is pending (`git gpuspace start {worktree.path}` or `git gpuspace prune` retries)",
            file=sys.stderr,
        )
        return
    report(binding, chosen, started=True, stream=sys.stderr)


def _unbound(current: state.State, worktree: worktrees.Worktree) -> bool:
    existing = current.find(worktree.path)
    return existing is None or bool(existing.pending)


def _converge() -> None:
    info = worktrees.discover()
    with state.locked(info.common_dir) as current:
        for action in converge(info, Engine(), current, retry_pending=True):
            print(action)
