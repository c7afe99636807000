"""`git gpuspace sync [<worktree>...]`: commits cross between the containers' private git dirs
and the repository (see private_git.py): a container's on its worktree's branch come in,
fast-forward only; the host's go to the container. Exit 1 when one side needs the user."""

from __future__ import annotations

import argparse

from ..git import private_git, worktrees
from .. import state
from ..engine.containers import Engine
from ..errors import UsageError
from ..lifecycle import resolve_worktree


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    current = state.load(info.common_dir)
    known = worktrees.list_worktrees(info)
    bindings = current.bindings
    if args.worktree:
        wanted = {str(resolve_worktree(info, target).path) for target in args.worktree}
        bindings = [binding for binding in bindings if binding.path in wanted]
        unbound = wanted - {binding.path for binding in bindings}
        if unbound:
            raise UsageError(f"'{sorted(unbound)[0]}' is not bound to a container", hint="`git gpuspace status` lists them")
    engine = Engine()
    outcomes = private_git.sync_bindings(info, engine, bindings, known, private_git.running_names(engine.list_managed()))
    if not any(outcome.said for outcome in outcomes.values()):
        print("Everything is in sync." if outcomes else "No container has a git dir of its own to sync.")
    return 1 if any(outcome.problem for outcome in outcomes.values()) else 0
