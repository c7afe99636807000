"""`git gpuspace run -- CMD` and `git gpuspace sweep NAME -p k=v1,v2 -- CMD`: submit runs
pinned to a commit, each with its own detached worktree, then dispatch them in the foreground."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace

from .. import config, state
from ..git import private_git, worktrees
from ..errors import GpuspaceError, UsageError
from ..lifecycle import resolve_worktree
from ..output import escape
from ..runs import backend as backends
from ..runs import grid
from ..runs.submit import Submission, recover, submit, withdraw
from ..runs import store as run_store
from ..runs.model import ACTIVE, GRACE_S, Run
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
    if args.verb == "sweep" and args.name == "show" and len(command) == 1 and not args.params:
        from .sweep_show import show

        return show(info, command[0])
    if not command:
        raise UsageError(f"give the command after --, e.g. git gpuspace {args.verb} -- python train.py")
    sweep = args.name if args.verb == "sweep" else None
    if sweep:
        if not SWEEP_NAME.fullmatch(sweep):
            raise UsageError(f"invalid sweep name '{sweep}'", hint="lower-case letters, digits, '.', '_' and '-'")
        if args.search:
            space = _search_space(args, command)
            param_sets = []  # asked for as runs end
        else:
            if args.trials is not None or args.metric or args.direction or args.prune != "none":
                raise UsageError("--trials, --metric, --minimize/--maximize and --prune go with --search",
                                 hint="--search tpe|random|cmaes|grid")
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
    commit, snapshot, branch = _pin(info, args.commit)
    asked = replace(asked, commit=commit, snapshot=snapshot, branch=branch)
    if sweep and args.search:
        return _begin_search(info, args, backend, space, asked, settings)
    ids = submit(info, asked)
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
    """A line of how the runs ended; 0 when each succeeded (or was pruned by its search)."""
    failed = [run for run in ended if run.state not in ("succeeded", "pruned")]
    pruned = sum(1 for run in ended if run.state == "pruned")
    print(f"{len(ended) - len(failed) - pruned} succeeded, " + (f"{pruned} pruned, " if pruned else "")
          + f"{len(failed)} failed or stopped", file=sys.stderr)
    return 1 if failed else 0


def _search_space(args: argparse.Namespace, command: list[str]) -> dict:
    """The parameters a search draws from, and its plan checked, before anything is made."""
    from ..runs import search

    if args.grid_file or args.random is not None:
        raise UsageError("--search asks for each trial's parameters itself: no --grid-file or --random with it")
    if args.trials is None:
        raise UsageError("--search needs --trials N (how many runs in all)")
    space = search.parse_space(args.params or [])
    search.check_plan(args.search, args.trials, args.metric, args.direction, args.prune, space, command)
    if args.runs_per_gpu > 1:
        raise UsageError("--runs-per-gpu does not go with --search", hint="trials run one per GPU")
    return space


def _begin_search(info: worktrees.RepoInfo, args: argparse.Namespace, backend, space: dict, asked: Submission,
                  settings) -> int:
    """Make the study and queue its first trials; then, unless --detach, dispatch until every
    trial has run and been told."""
    import dataclasses

    from .. import gpus
    from ..runs import search

    trials = args.trials
    if args.search == "grid":
        trials = min(trials, search.grid_size(space))  # a grid is searched once
    parallel = args.max_parallel
    if parallel is None:  # as many trials as the GPUs hold at once: each trial learns from those before
        count = settings.request.count or 1
        parallel = max(1, len(gpus.inventory()) // count) if not settings.request.none else 1
    kept = {key: value for key, value in dataclasses.asdict(asked).items() if key not in ("param_sets", "trials", "sweep")}
    plan = search.Plan(args.search, trials, args.metric, args.direction, search.space_to_json(space), args.prune,
                       args.seed, parallel, kept)
    lines = search.begin(info, args.name, plan, args.append)
    print(f"Searching {args.name}: {args.search}, {trials} trials, {args.direction} {args.metric}, at most "
          f"{parallel} at once, at {asked.commit[:8]}" + (" (a snapshot of uncommitted changes)" if asked.snapshot else ""),
          file=sys.stderr)
    for line in lines:
        print(escape(line), file=sys.stderr)
    mine = [run.id for run in run_store.load(info.common_dir, sweep=args.name).runs if run.state == "queued"]
    if args.detach:  # a dispatcher of its own asks for the next trials as runs end (on Slurm too: it follows)
        from ..runs.local import start_background

        print(f"Searching in the background (log: {start_background(info)}); `git gpuspace sweep show {args.name}` "
              "shows how it does", file=sys.stderr)
        return 0
    print(f"`git gpuspace logs -f {mine[0]}` follows a run's output; `git gpuspace sweep show {args.name}` the best "
          "trial so far" if mine else f"`git gpuspace sweep show {args.name}` shows the search", file=sys.stderr)
    return _wait_search(info, backend, args.name)


def _wait_search(info: worktrees.RepoInfo, backend, name: str) -> int:
    """Dispatch the search's runs as they are asked for, until every trial is told."""
    import time

    from ..runs import search

    if not search.installed():
        raise UsageError(f"Optuna is not installed: sweep {name} cannot go on searching", hint=search.INSTALL_HINT)
    said = set()
    try:
        while True:
            active = {run.id for run in run_store.load(info.common_dir, sweep=name).runs if run.state in ACTIVE}
            if active:
                backend.wait(info, active)
                continue
            lines = search.step(info, {name})  # the last ones told, the next ones asked
            for line in lines:
                if line not in said:  # as the dispatcher prints its events, a waiting line once
                    waiting = line.startswith("waiting:")
                    print(escape("git-gpuspace: " + line[len("waiting:"):].strip() if waiting else line), file=sys.stderr)
                said.update(line for line in lines if line.startswith("waiting:"))
            if search.done(info, name):
                break
            if not lines or all(line.startswith("waiting:") for line in lines):
                time.sleep(0.5)  # another process takes the step, or the next one may do better
    except KeyboardInterrupt:
        print("git-gpuspace: dispatching stopped; runs already started go on. "
              f"`git gpuspace sweep resume {name}` goes on searching", file=sys.stderr)
        return 130
    ended = run_store.load(info.common_dir, sweep=name).runs
    code = report(ended)
    from .sweep_show import best_line

    line = best_line(info, name)
    if line:
        print(line, file=sys.stderr)
    elif ended:
        metric = run_store.load(info.common_dir, ids=set()).sweeps[name].search["metric"]
        print(f"git-gpuspace: no trial printed {metric}=... (nor wrote it to /data/metrics.json): "
              f"`git gpuspace logs {ended[-1].id}` shows what one printed", file=sys.stderr)
        return 1
    return code


def _resume_sweep(info: worktrees.RepoInfo, name: str) -> int:
    if name not in run_store.load(info.common_dir, ids=set()).sweeps:
        raise UsageError(f"no sweep '{name}'", hint="`git gpuspace runs` lists the runs and their sweeps")
    resume(info)
    found = run_store.load(info.common_dir, ids=set()).sweeps[name].search
    if found:
        return _wait_search(info, backends.named(found["asked"]["backend"]), name)
    mine = run_store.load(info.common_dir, sweep=name).runs
    return wait_and_report(info, [(backend, {run.id for run in mine if run.backend == backend.name})
                                  for backend in backends.with_active(mine)], about={run.id for run in mine})


def _pin(info: worktrees.RepoInfo, commit_ish: str | None) -> tuple[str, bool, str | None]:
    """`--commit`, or HEAD of this worktree with its uncommitted changes to tracked files; and
    the branch it is on (that worktree's; with --commit, none: a commit is on many)."""
    if commit_ish is not None:
        return worktrees.resolve_commit(info, commit_ish), False, None
    here = resolve_worktree(info, None)
    pinned = worktrees.snapshot(here.path)
    if pinned.untracked:
        # a container may have named them: shown escaped
        print(f"git-gpuspace: warning: untracked files are not in the run: {escape(', '.join(pinned.untracked[:10]))}"
              + (f" and {len(pinned.untracked) - 10} more" if len(pinned.untracked) > 10 else ""), file=sys.stderr)
    return pinned.commit, pinned.snapshot, here.branch
