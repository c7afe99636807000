"""Sweeps that search: `sweep NAME --search tpe|random|cmaes|grid --trials N --metric M` asks
Optuna for the next parameters as runs end, instead of enumerating a grid. Each trial is an
ordinary run (pinned, its own worktree, container and GPUs); the study lives in a SQLite
database in the repo's common dir, so `optuna.load_study` reads it and a search goes on after a
kill -9 or a reboot.

Crash safety, in the order things happen (each step finds what the one before left):
  ask        Optuna records trial N RUNNING with its parameters
  submit     a run with `trial = N` is recorded, then its worktree made (submit.py)
  tell       once the run has ended, its value (or FAIL, PRUNED) goes to trial N
  told       the run is marked told
A RUNNING trial with no run is submitted with the parameters it has (never asked again); a run
ended but not told is told, unless its trial already was. Only the holder of the repo's search
lock takes these steps. Optuna is imported only while a search has something to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..git import worktrees
from ..errors import GpuspaceError, UsageError
from ..faults import checkpoint
from ..locking import file_lock
from . import grid
from . import model
from . import store as run_store
from .model import FINISHED, Run, Sweep
from .wrapper import LOG, exit_written
from ..untrusted_files import read_under

SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
DB_NAME = "gpuspace-studies.db"  # in the common dir, beside the run store
INSTALL_HINT = "pip install 'git-gpuspace[optuna]'"
DISTRIBUTION = re.compile(r"^(loguniform|uniform|int|choice)\((.*)\)$", re.S)
GRID_MAX = 10_000  # the most points of a grid search
LOG_CHUNK = 1 << 20  # at most this much of a trial's log read at a look
INTERRUPTED_MAX = 3  # a trial's run interrupted from outside (a reboot) runs again this many times at most


@dataclasses.dataclass(frozen=True)
class Space:
    """A parameter's distribution, as `-p` wrote it."""

    kind: str  # loguniform, uniform, int, choice
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice({','.join(self.choices)})"
        return f"{self.kind}({_number(self.low)},{_number(self.high)})"


def installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("optuna") is not None
    except (ImportError, ValueError):
        return False


# --- what `-p` says: pure ----------------------------------------------------------------------


def parse_space(specs: list[str]) -> dict[str, Space]:
    """`-p lr=loguniform(1e-5,1e-1)`, `uniform(0,0.5)`, `int(2,8)`, `choice(16,32,64)`; a plain
    `-p k=a,b` is a choice too (a grid axis of a grid search), `-p k=a` a fixed value."""
    space: dict[str, Space] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not grid.KEY.fullmatch(key):
            raise UsageError(f"invalid -p '{spec}'", hint="write -p NAME=loguniform(1e-5,1e-1), uniform(A,B), "
                             "int(A,B), choice(A,B,...) or V1,V2,...")
        if key in space:
            raise UsageError(f"parameter '{key}' is given twice")
        found = DISTRIBUTION.match(text)
        kind, inner = (found.group(1), found.group(2)) if found else ("choice", text)
        items = [item.strip() for item in inner.split(",")]
        if not inner.strip() or any(not item for item in items):
            raise UsageError(f"parameter '{key}' has an empty value in '{spec}'")
        if kind == "choice":
            if len(set(items)) != len(items):
                raise UsageError(f"parameter '{key}' has a value twice in '{spec}'")
            space[key] = Space("choice", choices=tuple(items))
            continue
        if len(items) != 2:
            raise UsageError(f"{kind}(...) takes two bounds, low and high: '{spec}'")
        low, high = (_bound(key, kind, item, spec) for item in items)
        if not low < high and not (kind == "int" and low == high):
            raise UsageError(f"parameter '{key}': the low bound must be below the high one in '{spec}'")
        if kind == "loguniform" and low <= 0:
            raise UsageError(f"parameter '{key}': loguniform needs bounds above 0 in '{spec}'")
        space[key] = Space(kind, low, high)
    return space


def _bound(key: str, kind: str, text: str, spec: str) -> float:
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        raise UsageError(f"parameter '{key}': '{text}' is not {'an integer' if kind == 'int' else 'a number'} "
                         f"in '{spec}'") from None
    if not math.isfinite(value):
        raise UsageError(f"parameter '{key}': '{text}' is not a finite number in '{spec}'")
    return value


def _number(value: float | None) -> str:
    return "" if value is None else format(value, "g") if isinstance(value, float) else str(value)


def space_to_json(space: dict[str, Space]) -> dict[str, dict]:
    return {key: {"kind": dist.kind, "low": dist.low, "high": dist.high, "choices": list(dist.choices)}
            for key, dist in space.items()}


def space_from_json(document: dict[str, dict]) -> dict[str, Space]:
    return {key: Space(item["kind"], item.get("low"), item.get("high"), tuple(item.get("choices") or ()))
            for key, item in document.items()}


def grid_points(space: dict[str, Space]) -> dict[str, list]:
    """A grid search's axes: choices and integer ranges; a float range has no points."""
    axes: dict[str, list] = {}
    for key, dist in space.items():
        if dist.kind == "choice":
            axes[key] = list(dist.choices)
        elif dist.kind == "int":
            axes[key] = list(range(int(dist.low), int(dist.high) + 1))
        else:
            raise UsageError(f"--search grid needs points: '{key}' is {dist.describe()}",
                             hint="give it as choice(...) or int(A,B), or search it with --search tpe")
    if math.prod(len(values) for values in axes.values()) > GRID_MAX:
        raise UsageError(f"the grid has more than {GRID_MAX} points", hint="narrow the ranges, or --search tpe")
    return axes


def grid_size(space: dict[str, Space]) -> int:
    """How many points a grid search has (each is run once)."""
    return math.prod(len(values) for values in grid_points(space).values())


def as_param(value: Any) -> str:
    """A trial's value as the run's parameter (and `{placeholder}`): exact, as Optuna holds it."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclasses.dataclass
class Plan:
    """A search, as kept in its sweep's record (`Sweep.search`)."""

    sampler: str
    trials: int
    metric: str
    direction: str  # minimize | maximize
    space: dict[str, dict]
    prune: str = "none"
    seed: int | None = None
    max_parallel: int = 1
    asked: dict[str, Any] = dataclasses.field(default_factory=dict)  # the Submission, less its parameter sets

    @classmethod
    def of(cls, sweep: Sweep) -> Plan:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in sweep.search.items() if key in names})


def check_plan(sampler: str, trials: int, metric: str | None, direction: str | None, prune: str,
               space: dict[str, Space], command: list[str]) -> None:
    """What a search needs, before anything is made."""
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown --search '{sampler}'", hint=", ".join(SAMPLERS))
    if prune not in PRUNERS:
        raise UsageError(f"unknown --prune '{prune}'", hint=", ".join(PRUNERS))
    if trials < 1:
        raise UsageError("--trials must be at least 1")
    if not metric:
        raise UsageError("--search needs --metric NAME (a `NAME=value` its runs print, or a key of metrics.json)")
    if not re.fullmatch(r"[A-Za-z_][\w./-]*", metric):
        raise UsageError(f"invalid --metric '{metric}'", hint="a name as the runs print it: loss, val/acc")
    if direction is None:
        raise UsageError("--search needs --minimize or --maximize")
    if not space:
        raise UsageError("a search needs at least one parameter", hint="-p lr=loguniform(1e-5,1e-1)")
    if sampler == "grid":
        grid_points(space)
    grid.check(command, {key: [] for key in space})


# --- the study -----------------------------------------------------------------------------------


def storage_uri(common_dir: Path) -> str:
    return f"sqlite:///{common_dir / DB_NAME}"


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")  # experimental samplers, a step reported twice
    return optuna


def _sampler(plan: Plan, asked_before: int):
    """The plan's sampler. Samplers keep no state in the study: one made again after a restart
    is seeded past the trials already asked, so it does not draw them again."""
    optuna = _quiet_optuna()
    seed = None if plan.seed is None else plan.seed + asked_before
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if plan.sampler == "grid":  # each trial's point is enqueued (_enqueue_point); nothing is drawn
        return optuna.samplers.RandomSampler(seed=seed)
    # trials run side by side: the liar keeps TPE from asking what is already being tried
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(plan: Plan):
    optuna = _quiet_optuna()
    if plan.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, plan.trials // 4)))
    if plan.prune == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def distributions(space: dict[str, Space]) -> dict:
    optuna = _quiet_optuna()
    found = {}
    for key, dist in space.items():
        if dist.kind == "loguniform":
            found[key] = optuna.distributions.FloatDistribution(float(dist.low), float(dist.high), log=True)
        elif dist.kind == "uniform":
            found[key] = optuna.distributions.FloatDistribution(float(dist.low), float(dist.high))
        elif dist.kind == "int":
            found[key] = optuna.distributions.IntDistribution(int(dist.low), int(dist.high))
        else:
            found[key] = optuna.distributions.CategoricalDistribution(list(dist.choices))
    return found


_STUDIES: dict[tuple[str, str], Any] = {}  # (common dir, sweep) -> its study, with the sampler it draws with


def study_of(common_dir: Path, name: str, plan: Plan | None = None, fresh: bool = False):
    """The sweep's study (made with `plan`; `fresh`: any old study of that name dropped first)."""
    key = (str(common_dir), name)
    if key in _STUDIES and not fresh:
        return _STUDIES[key]
    optuna = _quiet_optuna()
    storage = storage_uri(common_dir)
    if fresh:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
    if plan is None:
        return optuna.load_study(study_name=name, storage=storage)
    made = optuna.create_study(storage=storage, study_name=name, direction=plan.direction, load_if_exists=True,
                               pruner=_pruner(plan))
    made.sampler = _sampler(plan, len(made.get_trials(deepcopy=False)))
    _STUDIES[key] = made
    return made


def lock_path(common_dir: Path) -> Path:
    from .at_work import lock_path as dispatch_lock

    dispatch = dispatch_lock(common_dir)
    return dispatch.parent / f"{dispatch.stem}.search"


@contextlib.contextmanager
def searching(common_dir: Path, wait: bool = False) -> Iterator[bool]:
    """The repo's search lock: one process asks and tells at a time."""
    with file_lock(lock_path(common_dir), wait=wait, timeout=60) as mine:
        yield mine


# --- one step of every search that has something to do ------------------------------------------


@dataclasses.dataclass
class _Reading:
    """How far a running trial's log was read, and the steps of its metrics."""

    data_dir: str
    offset: int = 0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)


_READINGS: dict[tuple[str, str], _Reading] = {}


def step(info: worktrees.RepoInfo, names: set[str] | None = None) -> list[str]:
    """For each search sweep (of `names`; None: all) with something to do: tell the trials whose
    runs ended, report intermediate values and stop the trials the pruner says to, submit runs
    for trials asked but never recorded, and ask new ones while fewer than max-parallel run.
    A line per event. Cheap (no Optuna) when no search has anything to do."""
    if not _searching_sweeps(info, names):
        return []
    with searching(info.common_dir) as mine:
        if not mine:
            return []  # another process is taking this step
        return _step_all(info, _searching_sweeps(info, names))  # as they are now, under the lock


def _searching_sweeps(info: worktrees.RepoInfo, names: set[str] | None) -> list[Sweep]:
    return [sweep for sweep in run_store.load(info.common_dir, ids=set()).sweeps.values()
            if sweep.search and not sweep.search.get("done") and (names is None or sweep.name in names)]


def _step_all(info: worktrees.RepoInfo, sweeps: list[Sweep]) -> list[str]:
    busy, finished = [], []
    for sweep in sweeps:
        runs = run_store.load(info.common_dir, sweep=sweep.name).runs
        if _has_work(Plan.of(sweep), runs):
            busy.append((sweep, runs))
        elif not any(run.state in model.ACTIVE for run in runs):
            finished.append(sweep.name)
    if finished:  # every trial asked, run and told: not looked at again (until --append asks for more)
        with run_store.locked(info.common_dir, ids=set()) as current:
            for name in finished:
                if current.sweeps.get(name) and current.sweeps[name].search:
                    current.sweeps[name].search["done"] = True
            current.save()
    if not busy:
        return []
    if not installed():
        # "waiting:", as the dispatcher's lines that it says once, not at every turn they last
        return [f"waiting: sweep {sweep.name} asks for nothing more: Optuna is not installed ({INSTALL_HINT})"
                for sweep, _ in busy]
    from optuna.exceptions import OptunaError
    from sqlalchemy.exc import SQLAlchemyError

    lines: list[str] = []
    for sweep, _ in busy:
        try:
            lines += _step_one(info, sweep)
        except (GpuspaceError, OptunaError, SQLAlchemyError, OSError) as error:  # said; the next step tries again
            lines.append(f"waiting: sweep {sweep.name}: cannot take the search's next step: "
                         f"{' '.join(str(error).split())[:300]}")
    return lines


def _trial_runs(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.trial is not None]


def _has_work(plan: Plan, runs: list[Run]) -> bool:
    trial_runs = _trial_runs(runs)
    if any(run.state in FINISHED and not run.told for run in trial_runs):
        return True
    active = [run for run in trial_runs if run.state in model.ACTIVE]
    if plan.prune != "none" and any(run.state == "running" for run in active):
        return True
    return len(trial_runs) < plan.trials and len(active) < plan.max_parallel


def _step_one(info: worktrees.RepoInfo, sweep: Sweep) -> list[str]:
    from optuna.trial import TrialState

    plan = Plan.of(sweep)
    study = study_of(info.common_dir, sweep.name, plan)
    runs = run_store.load(info.common_dir, sweep=sweep.name).runs
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    lines = _tell(info, plan, study, trials, runs, TrialState)
    if plan.prune != "none":
        lines += _prune(info, plan, study, trials, runs)
    recorded = {run.trial for run in _trial_runs(runs)}
    unrecorded = [trial for number, trial in sorted(trials.items())
                  if trial.state == TrialState.RUNNING and number not in recorded]
    in_flight = sum(1 for run in _trial_runs(runs) if run.state in model.ACTIVE) + len(unrecorded)
    space = distributions(space_from_json(plan.space))
    # (a grid point enqueued but not yet asked, by a process killed in between, is asked next)
    asked, limit = sum(1 for trial in trials.values() if trial.state != TrialState.WAITING), plan.trials
    if plan.sampler == "grid":  # each point once
        limit = min(limit, grid_size(space_from_json(plan.space)))
    while asked < limit and in_flight < plan.max_parallel:
        if plan.sampler == "grid":
            _enqueue_point(study, plan)
        unrecorded.append(study.ask(space))
        checkpoint("after-trial-asked")
        asked += 1
        in_flight += 1
    if unrecorded:
        lines += _submit(info, sweep.name, plan, [(trial.number, trial.params) for trial in unrecorded])
    return lines


def _enqueue_point(study, plan: Plan) -> None:
    """A grid search's next point, in the order of nested loops, as the trial `ask` takes next.
    (Optuna's GridSampler stops `optimize` when the grid is done, and a study outside it cannot
    be stopped.) One left waiting by a process killed before its `ask` is taken first."""
    import itertools

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(trial.state == TrialState.WAITING for trial in trials):
        return
    axes = grid_points(space_from_json(plan.space))
    taken = {tuple(sorted(trial.params.items())) for trial in trials}
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        if tuple(sorted(point.items())) not in taken:
            study.enqueue_trial(point)
            checkpoint("after-grid-point-enqueued")
            return


def _tell(info, plan: Plan, study, trials: dict, runs: list[Run], TrialState) -> list[str]:
    """The trials whose runs ended get their value (FAIL without one, PRUNED), once."""
    lines, told = [], {}
    lines += _again(info, [run for run in _trial_runs(runs) if _interrupted(run, trials, TrialState)])
    for run in _trial_runs(runs):
        if run.state not in FINISHED or run.told or _interrupted(run, trials, TrialState):
            continue
        value = (run.metrics or {}).get(plan.metric)
        value = value if value is not None and math.isfinite(value) else None
        trial = trials.get(run.trial)
        if trial is not None and trial.state == TrialState.RUNNING:
            live = _live(study, trial)
            live.set_user_attr("gpuspace.run", run.id)
            live.set_user_attr("gpuspace.commit", run.commit)
            if run.state == "succeeded" and value is not None:
                study.tell(run.trial, value)
                lines.append(f"trial {run.trial} ({run.id}): {plan.metric}={value:g}{_best_note(study, run.trial)}")
            elif run.state == "pruned":
                study.tell(run.trial, state=TrialState.PRUNED)
            else:
                study.tell(run.trial, state=TrialState.FAIL)
                why = f"no {plan.metric} in its output" if run.state == "succeeded" else run.state
                lines.append(f"trial {run.trial} ({run.id}) failed: {why}")
            checkpoint("after-trial-told")
        told[run.id] = value if run.state == "succeeded" else None
    if told:
        with run_store.locked(info.common_dir, ids=set(told)) as current:
            for run in current.runs:
                run.told, run.value = True, told[run.id]
            current.save()
    return lines


def _cut_short(run: Run) -> bool:
    """Its run failed because it was cut short from outside: its container vanished with the
    engine or the machine (no exit code), or its command got a SIGTERM that was none of ours
    (exit 143: a shutdown stops containers so; our stops, prunes and preemptions are recorded
    as such)."""
    return run.state == "failed" and (run.exit_code is None and run.reason == "interrupted" or run.exit_code == 143)


def _interrupted(run: Run, trials: dict, TrialState) -> bool:
    """Cut short, and may run again as the same trial: a reboot loses no trial."""
    trial = trials.get(run.trial)
    return (_cut_short(run) and not run.told and run.restarts < INTERRUPTED_MAX and trial is not None
            and trial.state == TrialState.RUNNING)


def _again(info: worktrees.RepoInfo, interrupted: list[Run]) -> list[str]:
    """Interrupted trials' runs queued again, to resume (GPUSPACE_RESUME=1) in their data dirs."""
    if not interrupted:
        return []
    lines = []
    with run_store.locked(info.common_dir, ids={run.id for run in interrupted}) as current:
        for run in current.runs:
            if _cut_short(run) and not run.told:
                model.requeue(run)
                run.restarts += 1
                lines.append(f"trial {run.trial} ({run.id}) was interrupted: queued again (restart {run.restarts})")
        current.save()
    return lines


def _best_note(study, number: int) -> str:
    try:
        return " (best so far)" if study.best_trial.number == number else ""
    except ValueError:
        return ""


def _live(study, trial):
    """A trial to report to, from the one the study lists (Optuna's own way to reopen a trial)."""
    import optuna

    return optuna.trial.Trial(study, trial._trial_id)  # noqa: SLF001 - its id, which the constructor takes


def _prune(info: worktrees.RepoInfo, plan: Plan, study, trials: dict, runs: list[Run]) -> list[str]:
    """The metric's values in each running trial's log go to its trial as they appear; a trial
    the pruner gives up is stopped and recorded `pruned`."""
    from .tracking import parse, split_complete

    lines = []
    for run in _trial_runs(runs):
        key = (str(info.common_dir), run.id)
        if run.state != "running" or not run.data_dir:
            _READINGS.pop(key, None)
            continue
        if run.reason == model.PRUNING:
            lines += _stop_pruned(info, run)  # marked, then cut short before it was stopped
            continue
        if exit_written(run) is not None:
            continue  # its command has ended: its last value is its trial's, nothing is left to save
        trial = trials.get(run.trial)
        if trial is None:
            continue
        reading = _READINGS.get(key)
        if reading is None or reading.data_dir != run.data_dir:
            reading = _READINGS[key] = _Reading(run.data_dir)
        found = read_under(run.data_dir, LOG.as_posix(), LOG_CHUNK, reading.offset)
        if not found:
            continue
        whole = split_complete(found, final=False, full=len(found) >= LOG_CHUNK)
        reading.offset += whole
        values = [(value, at) for name, value, at in parse(found[:whole].decode(errors="replace"), reading.counters)
                  if name == plan.metric]
        if not values:
            continue
        live = _live(study, trial)
        for value, at in values:
            live.report(value, at)
        if live.should_prune():
            lines += _mark_pruned(info, run, values[-1])
    return lines


def _mark_pruned(info: worktrees.RepoInfo, run: Run, last: tuple[float, int]) -> list[str]:
    with run_store.locked(info.common_dir, ids={run.id}) as current:
        found = current.find(run.id)
        if found is None or found.state != "running" or found.reason is not None:
            return []
        found.reason = model.PRUNING
        current.save()
    return [f"trial {run.trial} ({run.id}) pruned at step {last[1]} ({last[0]:g}): stopping it", *_stop_pruned(info, run)]


def _stop_pruned(info: worktrees.RepoInfo, run: Run) -> list[str]:
    from . import backend as backends

    current = run_store.load(info.common_dir, ids={run.id}).find(run.id)
    if current is None or current.state != "running":
        return []
    return backends.of(current).cancel(info, [current])


def _submit(info: worktrees.RepoInfo, name: str, plan: Plan, trials: list[tuple[int, dict]]) -> list[str]:
    from .submit import Submission, submit

    asked = Submission(**{**plan.asked, "command": list(plan.asked["command"]), "sweep": name,
                          "param_sets": [{key: as_param(value) for key, value in params.items()} for _, params in trials],
                          "trials": [number for number, _ in trials]})
    ids = submit(info, asked)
    lines = []
    if asked.backend != "local":  # the dispatcher starts local runs; a cluster's are handed over
        from . import backend as backends

        lines = backends.named(asked.backend).launch(info, ids, None, detach=True)
    return [*lines, *(f"trial {number}: {run_id} queued ({', '.join(f'{k}={as_param(v)}' for k, v in params.items())})"
            for (number, params), run_id in zip(trials, ids))]


def begin(info: worktrees.RepoInfo, name: str, plan: Plan, append: bool) -> list[str]:
    """A new search (or more trials for one, `append`): its plan kept in the sweep's record,
    its study made, and its first trials asked and queued."""
    if not installed():
        raise UsageError("Optuna is not installed: a sweep cannot search", hint=INSTALL_HINT)
    with searching(info.common_dir, wait=True):
        with run_store.locked(info.common_dir, ids=set()) as runs:
            known = runs.sweeps.get(name)
            if append and known is not None and known.search:
                before = Plan.of(known)
                if (before.space, before.metric, before.direction, before.sampler) != \
                        (plan.space, plan.metric, plan.direction, plan.sampler):
                    raise UsageError(f"sweep '{name}' is a {before.sampler} search of another space or metric",
                                     hint="--append adds trials to the same search: give its --search, -p and --metric")
                plan = dataclasses.replace(before, trials=plan.trials, max_parallel=plan.max_parallel)
            elif append and known is not None:
                raise UsageError(f"sweep '{name}' is a grid, not a search", hint="--append it without --search")
            sweep = runs.sweeps.setdefault(name, Sweep(name))
            sweep.search = dataclasses.asdict(plan)
            sweep.max_parallel = plan.max_parallel
            runs.save()
        study_of(info.common_dir, name, plan, fresh=not append)
        lines = _step_one(info, run_store.load(info.common_dir, ids=set()).sweeps[name])
    return lines


def done(info: worktrees.RepoInfo, name: str) -> bool:
    """Every trial asked, run and told."""
    sweep = run_store.load(info.common_dir, ids=set()).sweeps.get(name)
    if sweep is None or not sweep.search:
        return True
    runs = run_store.load(info.common_dir, sweep=name).runs
    plan = Plan.of(sweep)
    return not _has_work(plan, runs) and not any(run.state in model.ACTIVE for run in runs)
