"""`git gpuspace verify`: named checks, each commit checked in a run of its own, verdicts in git
notes (see verify.py). The runs are the queue's: a detached worktree at the commit, a container
with the repo's settings and the check's GPUs."""

from __future__ import annotations

import argparse
import sys

from .. import state, verify
from ..git import worktrees
from ..errors import UsageError
from ..output import escape
from ..runs import backend as backends
from ..verify import Check, Checks

ACTIONS = ("add", "list", "rm", "on-commit", "off")


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    command = list(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if args.target in ACTIONS:
        return _manage(info, args, command)
    if args.check is not None:
        raise UsageError(f"unexpected '{args.check}'", hint="git gpuspace verify [COMMIT|A..B] [--name NAME] [-- CMD]")
    if args.jobs < 1:
        raise UsageError("-j must be at least 1")
    checks = _chosen(info, args.name, command)
    commits = _commits(info, args.target)
    backend = backends.chosen(args.backend, state.load(info.common_dir).defaults)
    return check_commits(info, checks, commits, args.jobs, args.keep_going, args.force, backend_name=backend)


def check_commits(info: worktrees.RepoInfo, checks: list[Check], commits: list[str], jobs: int = 1,
                  keep_going: bool = False, force: bool = False, backend_name: str | None = None,
                  wait: bool = True) -> int:
    """Each check on each commit (oldest first): a tree already checked gets that verdict, the
    rest are queued and handed to the backend (the repo's unless given), and waited for here
    unless not `wait`. One line per commit and check; 0 when all pass."""
    name = backend_name or backends.chosen(None, state.load(info.common_dir).defaults)
    backend = None  # loaded when something must run: the cache path stays light
    wanted: dict[tuple[str, str], str] = {}  # (check, commit) -> run id
    cached: dict[str, dict[str, verify.Verdict | None]] = {}  # per check: the verdicts read first
    for check in checks:
        ignored: list[verify.Ignored] = []
        known = cached[check.name] = {} if force else verify.verdicts(info, check.name, commits, ignored)
        for note in ignored:  # checked again below: the new verdict, signed, replaces that note
            print(note.line(check.name), file=sys.stderr)
        queued_any = False
        for commit in commits:
            found = known.get(commit)
            if found is not None:
                if not found.own:  # the tree was checked as another commit: this one gets the note too
                    verify.copy_verdict(info, check.name, commit, found)
                continue
            # the engine and the queue only when something must run: the cache path stays light
            from ..settings import settings_from
            from ..runs.submit import Submission, submit

            backend = backend or backends.named(name)
            asked = Submission(check.command, commit, flags=check.flags(), sweep=verify.sweep_of(check.name),
                               max_parallel=jobs, check=check.name, backend=backend.name)
            if not queued_any:  # the verdicts will be signed: the key, or why not, before anything runs
                from ..signing import ensure_key

                ensure_key()
                backend.preflight(info, asked, settings_from(state.load(info.common_dir).defaults, check.flags(), False))
            queued_any = True
            [run_id] = submit(info, asked)
            wanted[(check.name, commit)] = run_id
        if queued_any:  # one hand-over per check (on Slurm one job array: it runs at most -j at once)
            for line in backend.launch(info, [wanted[(check.name, c)] for c in commits if (check.name, c) in wanted],
                                       jobs, detach=not wait, stop_on_failure=not keep_going):
                print(line, file=sys.stderr)
    if not wait:
        return 0
    if wanted:
        try:
            backend.wait(info, set(wanted.values()), stop_on_failure=not keep_going)
        except KeyboardInterrupt:
            print("git-gpuspace: dispatching stopped; checks already started go on. `git gpuspace runs resume` "
                  "finishes them (their verdicts become notes)", file=sys.stderr)
            return 130
    runs = {}
    if wanted:  # the store only when something ran: the cache path stays light
        from ..runs import store as run_store

        runs = {run.id: run for run in run_store.load(info.common_dir, ids=set(wanted.values())).runs}
    subjects = _subjects(info, commits)
    all_passed = True
    for check in checks:
        # read again only where a run may have written a note since
        ran = any(key[0] == check.name for key in wanted)
        known = verify.verdicts(info, check.name, commits) if ran else cached[check.name]
        for commit in commits:
            found = known[commit]
            run = runs.get(wanted.get((check.name, commit), ""))
            word = found.word if found else ("not run" if run is None or run.state == "stopped" else run.state)
            all_passed &= word == "pass"
            cached = " (cached)" if found and (check.name, commit) not in wanted else ""
            label = f" [{check.name}]" if len(checks) > 1 else ""
            where = "" if word in ("pass", "not run") else _where_to_look(found, run)
            print(f"{commit[:7]} {word}{cached}{label} {subjects.get(commit, '')}{where}")
    return 0 if all_passed else 1


def _where_to_look(found: verify.Verdict | None, run) -> str:
    """What a line that did not pass ends with: the path of the full log, from this run or from
    the note of an earlier one (while that file is there); else how to see what became of the run."""
    import os

    for log in (verify.log_of(run) if run is not None else None, found.log if found is not None else None):
        if log and os.path.exists(log):
            return f"  (log: {escape(log)})"
    if run is not None:
        return f"  (git gpuspace runs show {run.id})"
    return ""


def _manage(info: worktrees.RepoInfo, args: argparse.Namespace, command: list[str]) -> int:
    action = args.target
    if action == "list":
        known = Checks.from_state(state.load(info.common_dir).checks)
        for check in known.entries.values():
            extras = [f"--gpus {check.gpus}"] * bool(check.gpus) + [f"--image {check.image}"] * bool(check.image)
            print(f"{check.name}: {' '.join(check.command)}" + (f"  ({', '.join(extras)})" if extras else "")
                  + ("  [on commit]" if check.on_commit else ""))
        if not known.entries:
            print("No checks yet: git gpuspace verify add NAME -- CMD")
        return 0
    if args.check is None:
        raise UsageError(f"verify {action} needs a check name")
    name = verify.check_name(args.check)
    with state.locked(info.common_dir) as current:
        known = Checks.from_state(current.checks)
        if action == "add":
            if not command:
                raise UsageError("give the check's command after --", hint=f"git gpuspace verify add {name} -- pytest -q")
            if args.gpus is not None:
                from ..settings import settings_from

                settings_from(current.defaults, {"gpus": args.gpus}, False)  # refuses a bad spec now
            known.entries[name] = Check(name, command, args.gpus, args.image,
                                        known.entries[name].on_commit if name in known.entries else False)
            message = f"Check {name}: {' '.join(command)}"
        elif name not in known.entries:
            raise UsageError(f"no check named '{name}'", hint="`git gpuspace verify list` shows them")
        elif action == "rm":
            del known.entries[name]
            message = f"Removed check {name} (its notes stay in refs/notes/gpuspace/{name})"
        else:
            known.entries[name].on_commit = action == "on-commit"
            message = (f"Each new commit is checked with {name} (the post-commit hook queues it)"
                       if action == "on-commit" else f"Commits are no longer checked with {name} on commit")
        current.checks = known.to_state()
        current.save()
    from ..git import hooks

    if action == "on-commit" and not hooks.installed(info):
        for line in hooks.install(info):
            print(line)
    print(message)
    return 0


def _chosen(info: worktrees.RepoInfo, name: str | None, command: list[str]) -> list[Check]:
    known = Checks.from_state(state.load(info.common_dir).checks)
    if command:
        return [Check(verify.check_name(name or "default"), command)]
    if name is not None:
        if name not in known.entries:
            raise UsageError(f"no check named '{name}'", hint="`git gpuspace verify list` shows them")
        return [known.entries[name]]
    if not known.entries:
        raise UsageError("no check to run", hint="name one with `git gpuspace verify add NAME -- CMD`, or give `-- CMD`")
    return list(known.entries.values())


def _commits(info: worktrees.RepoInfo, target: str | None) -> list[str]:
    """A range's commits oldest first (topological), one commit, or HEAD as committed."""
    if target is None:
        from ..lifecycle import resolve_worktree
        from ..git.private_git import sync_here

        here = resolve_worktree(info, None)
        sync_here(info)  # what the worktree's container committed comes in first: its HEAD is checked
        if worktrees.is_dirty(here.path):
            print("git-gpuspace: uncommitted changes are not checked: HEAD is checked as committed", file=sys.stderr)
        return [worktrees.head_commit(info)]
    if ".." not in target:
        return [worktrees.resolve_commit(info, target)]
    listed = info.git("rev-list", "--topo-order", "--reverse", "--end-of-options", target)
    if listed.returncode != 0:
        raise UsageError(f"invalid range: {target}", hint="A..B, with A and B commits")
    commits = listed.stdout.split()
    if not commits:
        raise UsageError(f"the range {target} has no commits")
    return commits


def _subjects(info: worktrees.RepoInfo, commits: list[str]) -> dict[str, str]:
    shown = info.git("log", "--no-walk=unsorted", "--format=%H %s", *commits).stdout
    return dict(line.split(" ", 1) if " " in line else (line, "") for line in shown.splitlines())
