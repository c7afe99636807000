"""`git gpuspace remove <worktree>`: container gone, GPUs free, worktree removed; the branch stays."""

from __future__ import annotations

import argparse
import shutil

from .. import data_dirs, state
from ..git import private_git, worktrees
from ..engine.containers import Engine
from ..errors import UsageError, WorktreeError
from ..faults import checkpoint
from ..lifecycle import absolute, not_bound, resolve_worktree, run_of_worktree, unbind
from ..output import escape
from ..reconcile import converge_quietly


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    with state.locked(info.common_dir) as current:
        try:
            worktree = resolve_worktree(info, args.worktree)
        except UsageError:
            # git may have forgotten the worktree already (`git worktree remove`): drop the binding
            binding = current.find(absolute(args.worktree))
            if binding is None:
                raise
            engine = Engine()
            unbind(engine, current, binding)
            converge_quietly(info, engine, current)
            print(f"Removed container {binding.container} (worktree {binding.path} was already gone)")
            return 0
        binding = current.find(worktree.path)
        if binding is None and run_of_worktree(info, worktree) is not None:
            raise not_bound(info, worktree, "remove")  # a run's worktree: `runs stop`, then `runs clean`
        engine = Engine() if binding is not None else None  # unreachable: stop before changing anything
        if binding is not None:  # what its container committed comes in before the worktree is judged
            _import_first(info, engine, binding, worktree, args.force)
        if args.keep_worktree:
            if binding is None:
                raise UsageError(f"'{worktree.path}' is not bound to a container")
        else:
            _check_removable(info, worktree, args.force, args.worktree)
        if args.purge and binding is not None and binding.data_dir:  # the state file is data: check before acting
            data_dirs.checked_data_dir(binding.data_dir, binding.container,
                                       f"{current.path}: bindings[{current.bindings.index(binding)}]")
        if binding is not None:
            unbind(engine, current, binding)
            checkpoint("after-unbind")
        if not args.keep_worktree:
            worktrees.remove(info, worktree, force=True)
        if engine is not None:
            converge_quietly(info, engine, current)
        if args.purge and binding is not None and binding.data_dir:
            shutil.rmtree(binding.data_dir, ignore_errors=True)
            print(f"Deleted data dir {binding.data_dir}")
    if binding is not None:
        print(f"Removed container {binding.container}" + ("; GPUs released" if binding.gpus else ""))
    if not args.keep_worktree:
        print(escape(f"Removed worktree {worktree.path}"
                     + (f" (branch {worktree.branch} kept)" if worktree.branch else "")))
    return 0


def _check_removable(info: worktrees.RepoInfo, worktree: worktrees.Worktree, force: int, shown: str) -> None:
    """Everything is checked before anything changes: a refusal leaves the container running.
    As git's: a locked worktree needs -f twice; then submodules, then dirt, unless -f."""
    if worktree.is_main:
        raise UsageError("the main worktree cannot be removed", hint="--keep-worktree drops only its container")
    if worktree.locked and force < 2:
        raise worktrees.locked_refusal(info, worktree)
    if force:
        return
    if not worktree.prunable and worktrees.has_initialized_submodules(worktree.path):
        raise worktrees.submodules_refused()
    if not worktree.prunable and worktrees.is_dirty(worktree.path):
        raise worktrees.dirty_refusal(shown)


def _import_first(info: worktrees.RepoInfo, engine: Engine, binding, worktree: worktrees.Worktree, force: bool) -> None:
    """The container's commits come in before its git dir goes; like unpushed work, what cannot
    come in (both sides moved, the container stopped) stops the removal unless --force."""
    running = private_git.running_names(engine.list_managed())
    found = private_git.sync_bindings(info, engine, [binding], [worktree], running).get(binding.path)
    if found is not None and found.waiting and not force:
        raise WorktreeError(f"the container of '{worktree.path}' has commits that are not in {worktree.branch} "
                            f"on the host", hint="bring them in (see above), or use --force to drop them")
