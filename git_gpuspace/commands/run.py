"""`git gpuspace run -- CMD` and `git gpuspace sweep NAME -p k=v1,v2 -- CMD`: submit runs
pinned to a commit, each with its own detached worktree, then dispatch them in the foreground."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace

from .. import config, private_git, state, worktrees
from ..errors import GpuspaceError, UsageError
from ..lifecycle import resolve_worktree
from ..output import escape
from ..runs import backend as backends
from ..runs import grid
from ..runs.submit import Submission, recover, submit, withdraw
from ..runs import store as run_store
from ..runs.model import GRACE_S, Run
from ..runs.output_stream import OutputStream
from ..settings import settings_from

SETTING_FLAGS = ("image", "gpus", "memory", "cpus", "shm_size")
SWEEP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktrees.require_plain_repo(info, args.verb)
    command = list(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if args.verb == "sweep" and args.name == "resume" and len(command) == 1 and not args.params:
        return _resume_sweep(info, command[0])  # `sweep resume NAME`, as `runs resume` for one sweep
    if not command:
        raise UsageError(f"give the command after --, e.g. git gpuspace {args.verb} -- python train.py")
    sweep = args.name if args.verb == "sweep" else None
    if sweep:
        if not SWEEP_NAME.match(sweep):
            raise UsageError(f"invalid sweep name '{sweep}'", hint="lower-case letters, digits, '.', '_' and '-'")
        axes = grid.parse_axes(args.params or [])
        sets: list[dict[str, str]] = []
        if args.grid_file:
            file_axes, sets = grid.load_grid_file(args.grid_file)
            twice = sorted(set(axes) & set(file_axes))
            if twice:
                raise UsageError(f"axis '{twice[0]}' is given by -p and by the grid file")
            axes.update(file_axes)
        param_sets = grid.parameter_sets(command, axes, sets, args.random, args.seed)
    else:
        grid.check(command, {})
        param_sets = [{}]
    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    if args.retries < 0:
        raise UsageError("--retries must be 0 or more")
    if args.runs_per_gpu < 1:
        raise UsageError("--runs-per-gpu must be at least 1")
    flags = {key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key) is not None}
    defaults = state.load(info.common_dir).defaults
    settings = settings_from(defaults, flags, False)
    known = run_store.load(info.common_dir, ids=set())  # the sweeps alone
    if sweep and sweep in known.sweeps and not args.append:
        raise UsageError(f"a sweep named '{sweep}' exists", hint="choose another name, or --append to add runs to it")
    preemption = _preemption(args, defaults)
    backend = backends.choose(args.backend, defaults)
    asked = Submission(command, "", False, flags, sweep, param_sets, args.max_parallel, args.priority, args.retries,
                       args.runs_per_gpu, backend=backend.name, **preemption)
    backend.preflight(info, asked, settings)  # before anything is made
    if args.commit is None:  # a container's commits come in first: the run pins what it committed
        private_git.sync_here(info)
    commit, snapshot = _pin(info, args.commit)
    ids = submit(info, replace(asked, commit=commit, snapshot=snapshot))
    print(f"Queued {len(ids)} run{'s' if len(ids) > 1 else ''} at {commit[:8]}"
          + (" (a snapshot of uncommitted changes)" if snapshot else "") + f": {', '.join(ids)}", file=sys.stderr)
    try:
        launched = backend.launch(info, ids, args.max_parallel, args.detach)
    except GpuspaceError as error:
        withdraw(info, ids, str(error))
        raise
    for line in launched:
        print(line, file=sys.stderr)
    if args.detach:
        return 0
    stream = None
    if not args.quiet:  # its output, as `docker run` shows it
        stream = OutputStream(ids[0], sys.stdout.buffer)
    elif sweep is not None:
        print(f"`git gpuspace logs -f {ids[0]}` follows a run's output", file=sys.stderr)
    return wait_and_report(info, [(backend, set(ids))], stream=stream)


def _preemption(args: argparse.Namespace, defaults: dict) -> dict:
    """--preemptible (else the `preemptible` setting), --preempt, --grace and --time-slice, as
    the Submission's fields. A time slice makes the run preemptible: it yields its GPU."""
    grace = config.duration(args.grace, "--grace") if args.grace is not None else GRACE_S
    time_slice = config.duration(args.time_slice, "--time-slice", zero=False) if args.time_slice is not None else None
    if time_slice is not None and args.preemptible is False:
        raise UsageError("--time-slice makes a run preemptible (it yields its GPU when the slice is over), "
                         "and --no-preemptible says it is not", hint="drop one of them")
    preemptible = args.preemptible
    if preemptible is None:
        preemptible = config.boolean("preemptible", config.effective(defaults, {}).get("preemptible", False))
    return {"preemptible": preemptible or time_slice is not None, "preempt": args.preempt, "grace": grace,
            "time_slice": time_slice}


def wait_and_report(info: worktrees.RepoInfo, waits: list, stop_on_failure: bool = False,
                    about: set[str] | None = None, stream: OutputStream | None = None) -> int:
    """Wait in the foreground for each (backend, runs) in turn (runs None: all of the backend's),
    then report on those runs (or on `about`); 0 when every one succeeded. Ctrl-C leaves started
    runs running. `stream`: one run's output, copied to stdout as it is written."""
    ended = []
    try:
        for backend, wanted in waits:
            ended += backend.wait(info, wanted, stop_on_failure=stop_on_failure, stream=stream)
    except KeyboardInterrupt:
        print("git-gpuspace: dispatching stopped; runs already started go on. "
              "`git gpuspace runs resume` dispatches the rest, `git gpuspace runs` shows them", file=sys.stderr)
        return 130
    return report(run_store.load(info.common_dir, ids=about).runs if about is not None else ended)


def resume(info: worktrees.RepoInfo) -> None:
    """What submitters that died left: their submissions finished, what they queued handed over."""
    lines = recover(info)
    for backend in backends.every():
        lines += backend.recover(info)
    for line in lines:
        print(f"git-gpuspace: {escape(line)}", file=sys.stderr)


def report(ended: list[Run]) -> int:
    failed = [run for run in ended if run.state != "succeeded"]
    print(f"{len(ended) - len(failed)} succeeded, {len(failed)} failed or stopped", file=sys.stderr)
    return 1 if failed else 0


def _resume_sweep(info: worktrees.RepoInfo, name: str) -> int:
    if name not in run_store.load(info.common_dir, ids=set()).sweeps:
        raise UsageError(f"no sweep '{name}'", hint="`git gpuspace runs` lists the runs and their sweeps")
    resume(info)
    mine = run_store.load(info.common_dir, sweep=name).runs
    return wait_and_report(info, [(backend, {run.id for run in mine if run.backend == backend.name})
                                  for backend in backends.with_active(mine)], about={run.id for run in mine})


def _pin(info: worktrees.RepoInfo, commit_ish: str | None) -> tuple[str, bool]:
    """`--commit`, or HEAD of this worktree with its uncommitted changes to tracked files."""
    if commit_ish is not None:
        return worktrees.resolve_commit(info, commit_ish), False
    pinned = worktrees.snapshot(resolve_worktree(info, None).path)
    if pinned.untracked:
        # a container may have named them: shown escaped
        print(f"git-gpuspace: warning: untracked files are not in the run: {escape(', '.join(pinned.untracked[:10]))}"
              + (f" and {len(pinned.untracked) - 10} more" if len(pinned.untracked) > 10 else ""), file=sys.stderr)
    return pinned.commit, pinned.snapshot
