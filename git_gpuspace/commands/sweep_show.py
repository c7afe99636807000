"""`git gpuspace sweep show NAME`: a search's best trial (its parameters, value, run, commit, and
the `add` that gets its worktree back), its trials, and the parameters' importances where
Optuna computes them. A grid sweep is shown as its runs are."""

from __future__ import annotations

import math
import shlex
import sys

from ..runs import search
from ..git import worktrees
from ..errors import UsageError
from ..output import escape
from ..runs import store as run_store
from ..runs.model import Run


def _runs_by_trial(info: worktrees.RepoInfo, name: str) -> dict[int, Run]:
    return {run.trial: run for run in run_store.load(info.common_dir, sweep=name).runs if run.trial is not None}


def best(info: worktrees.RepoInfo, name: str) -> tuple[Run, float] | None:
    """The run of the best trial told so far, and its value (from the run store: no Optuna)."""
    sweep = run_store.load(info.common_dir, ids=set()).sweeps.get(name)
    if sweep is None or not sweep.search:
        return None
    plan = search.Plan.of(sweep)
    told = [run for run in _runs_by_trial(info, name).values() if run.value is not None and run.state == "succeeded"]
    if not told:
        return None
    pick = min if plan.direction == "minimize" else max
    winner = pick(told, key=lambda run: (run.value, -run.trial) if plan.direction == "maximize" else (run.value, run.trial))
    return winner, winner.value


def add_command(run: Run) -> str:
    """The command that gets a run's worktree back as a bound worktree of its own."""
    branch = f"best/{run.id}"
    return f"git gpuspace add -b {shlex.quote(branch)} {shlex.quote('../' + run.id)} {run.commit[:12]}"


def best_line(info: worktrees.RepoInfo, name: str) -> str | None:
    found = best(info, name)
    if found is None:
        return None
    run, value = found
    sweep = run_store.load(info.common_dir, ids=set()).sweeps[name]
    plan = search.Plan.of(sweep)
    params = " ".join(f"{key}={value}" for key, value in run.params.items())
    return escape(f"best: trial {run.trial} ({run.id}) {plan.metric}={value:g} with {params}; "
                  f"`git gpuspace sweep show {name}` shows every trial")


def show(info: worktrees.RepoInfo, name: str) -> int:
    sweep = run_store.load(info.common_dir, ids=set()).sweeps.get(name)
    if sweep is None:
        raise UsageError(f"no sweep '{name}'", hint="`git gpuspace runs` lists the runs and their sweeps")
    if not sweep.search:
        raise UsageError(f"sweep '{name}' is a grid, not a search", hint=f"git gpuspace runs --sweep {name}")
    plan = search.Plan.of(sweep)
    by_trial = _runs_by_trial(info, name)
    study = _study(info, name)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    states = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    out = sys.stdout
    print(f"Sweep {name}: {plan.sampler} search, {len(trials)} of {plan.trials} trials asked"
          + (f" ({', '.join(f'{count} {state}' for state, count in sorted(states.items()))})" if states else "")
          + f"; {plan.direction} {plan.metric}", file=out)
    print("Space: " + ", ".join(f"{key}={search.space_from_json({key: item})[key].describe()}"
                                for key, item in plan.space.items()), file=out)
    found = best(info, name)
    if found is None:
        print("Best: none yet (no trial has ended with a value)", file=out)
    else:
        run, value = found
        print(f"Best: trial {run.trial}, {plan.metric}={value:g}, run {run.id} at {run.commit[:12]}", file=out)
        for key, item in run.params.items():
            print(f"  {key} = {escape(item)}", file=out)
        print(f"  its worktree again: {add_command(run)}", file=out)
    print(file=out)
    keys = list(plan.space)
    header = ["TRIAL", "RUN", "STATE", plan.metric.upper(), *keys]
    rows = []
    for number in sorted(set(by_trial) | {trial.number for trial in trials}):
        run = by_trial.get(number)
        trial = next((t for t in trials if t.number == number), None)
        value = run.value if run is not None and run.value is not None else (trial.value if trial is not None else None)
        params = run.params if run is not None else {k: search.as_param(v) for k, v in (trial.params if trial else {}).items()}
        rows.append([str(number), run.id if run else "-", run.state if run else (trial.state.name.lower() if trial else "?"),
                     "-" if value is None or not math.isfinite(value) else f"{value:.6g}",
                     *(escape(str(params.get(key, "-")))[:24] for key in keys)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
    importances = _importances(study)
    if importances:
        print(file=out)
        print("Importance: " + ", ".join(f"{key} {weight:.2f}" for key, weight in importances.items()), file=out)
    return 0


def _study(info: worktrees.RepoInfo, name: str):
    if not search.installed():
        print(f"git-gpuspace: note: Optuna is not installed: the study is not read ({search.INSTALL_HINT})",
              file=sys.stderr)
        return None
    try:
        return search.study_of(info.common_dir, name)
    except KeyError:  # its sweep is recorded, its study not yet made
        return None


def _importances(study) -> dict[str, float]:
    """Optuna's (fANOVA) where it can compute them: two trials or more with a value, a space
    that varies."""
    if study is None:
        return {}
    try:
        import optuna

        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError):
        return {}
