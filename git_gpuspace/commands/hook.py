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

from .. import state
from ..git import worktrees
from ..cli import report_internal_error
from ..engine.containers import Engine
from ..errors import GpuspaceError
from ..lifecycle import bind_worktree, prepare, record_pending, resolve_worktree
from ..lifecycle_commands import file_commands, run_lifecycle
from ..rollback import Rollback
from ..settings import settings_for_worktree
from ..reconcile import converge
from .add import report


def run(args: argparse.Namespace) -> int:
    if args.event in ("converge", "sync", "verify"):
        # in the background, from the worktree's top: git's GIT_DIR (a linked worktree's admin
        # dir, which is no repository to open) and GIT_INDEX_FILE are the hook's, not ours
        kept = worktrees.own_env()
        os.environ.clear()
        os.environ.update(kept)
    try:
        if args.event == "new-worktree":
            _bind_new_worktree()
        elif args.event == "verify":
            _verify_new_commit()
        elif args.event == "pre-push":
            return _pre_push(sys.stdin.read())
        elif args.event == "sync":
            _sync()
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
        run_lifecycle(plan.engine, binding, file_commands(plan.settings), first_start=True)  # git's status is git's
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


def _sync() -> None:
    """In the background, after a commit or checkout: commits cross between the containers' own
    git dirs and the repository, as `git gpuspace sync` does."""
    from ..git import private_git

    info = worktrees.discover()
    engine = Engine()
    private_git.sync_bindings(info, engine, state.load(info.common_dir).bindings, worktrees.list_worktrees(info),
                              private_git.running_names(engine.list_managed()))


def _verify_new_commit() -> None:
    """post-commit, in the background: queue the on-commit checks of the new HEAD (unless its
    tree has a verdict) and hand them to the repo's backend (this machine's: its background
    dispatcher)."""
    from ..runs import backend as backends
    from ..verify import Checks, verdict, sweep_of
    from ..runs.submit import Submission, submit

    info = worktrees.discover()
    commit = worktrees.head_commit(info)
    current = state.load(info.common_dir)
    backend = backends.choose(None, current.defaults)
    for check in Checks.from_state(current.checks).entries.values():
        if check.on_commit and verdict(info, check.name, commit) is None:
            ids = submit(info, Submission(check.command, commit, flags=check.flags(), sweep=sweep_of(check.name),
                                          check=check.name, backend=backend.name))
            for line in backend.launch(info, ids, None, detach=True):
                print(line, file=sys.stderr)


def _pre_push(pushed: str) -> int:
    """pre-push: refuse commits about to be pushed whose tree has no `pass` of the repo's
    pre-push checks. stdin: `<local ref> <local sha> <remote ref> <remote sha>` lines."""
    from ..verify import Checks, verdicts

    info = worktrees.discover()
    gate = state.load(info.common_dir).pre_push
    if not gate:
        return 0
    commits: list[str] = []
    for line in pushed.splitlines():
        fields = line.split()
        if len(fields) != 4 or set(fields[1]) == {"0"}:
            continue  # a deletion pushes no commit
        since = ["--not", "--remotes"] if set(fields[3]) == {"0"} else [f"^{fields[3]}"]
        listed = info.git("rev-list", fields[1], *since).stdout.split()
        commits += [commit for commit in listed if commit not in commits]
    known = Checks.from_state(state.load(info.common_dir).checks).entries
    missing = []
    for name in gate:
        found = verdicts(info, name, commits)
        missing += [f"{commit[:7]} ({name}: {found[commit].word if found[commit] else 'not checked'})"
                    for commit in commits if not (found[commit] and found[commit].passed)]
    if missing:
        how = " and ".join(f"git gpuspace verify <range> --name {name}" for name in gate if name in known)
        print(f"git-gpuspace: push refused: {len(missing)} commit(s) without a pass: {', '.join(missing[:10])}"
              + (" ..." if len(missing) > 10 else ""), file=sys.stderr)
        print(f"hint: check them ({how or 'git gpuspace verify'}), or push anyway with git push --no-verify",
              file=sys.stderr)
        return 1
    return 0
