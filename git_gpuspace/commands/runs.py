"""`git gpuspace runs [list|resume|show|stop|retry|clean|forget]`: the queue and history of runs.

`clean` frees what a finished run holds (worktree, container, ref; its data dir with --purge)
and keeps its record (params, commit, metrics, state, times), marked cleaned: the table of
results stays. `forget` drops records; a run is cleaned before it is forgotten, and an active
one is never forgotten."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import data_dirs, output
from ..git import git_cli
from ..errors import UsageError
from ..runs import backend as backends
from ..runs import model, results
from ..runs import store as run_store
from ..runs.at_work import alive, cut_short, dispatcher_pid
from ..runs.model import ACTIVE, FINISHED, PREPARING, STOPPING, Run

if TYPE_CHECKING:
    from ..git import worktrees


def run(args: argparse.Namespace) -> int:
    if args.action in (None, "list"):
        return _list(git_cli.common_dir(), args)
    from ..git import worktrees  # dulwich: not for the listing, which reads the store alone

    info = worktrees.discover()
    action = {"resume": _resume, "show": _show, "stop": _stop, "retry": _retry, "clean": _clean,
              "forget": _forget, "plot": _plot}[args.action]
    return action(info, args)


def _resume(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    from .run import resume, wait_and_report  # the engine's client: not for `runs` that only lists

    resume(info)
    active = run_store.load(info.common_dir, states=ACTIVE).runs
    waits = [(backend, None) for backend in backends.with_active(active)]
    return wait_and_report(info, waits or [(backends.named("local"), None)])


def _plot(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    from .runs_plot import plot  # matplotlib: only here

    return plot(info, args)


def _chosen(runs: run_store.Runs, args: argparse.Namespace, verb: str) -> list[Run]:
    """The runs an action is for: one by id, or a sweep's."""
    if args.run:
        found = runs.find(args.run)
        if found is None:
            raise UsageError(f"no run '{args.run}'", hint="`git gpuspace runs` lists them")
        return [found]
    if args.sweep:
        if args.sweep not in runs.sweeps:
            raise UsageError(f"no sweep '{args.sweep}'", hint="`git gpuspace runs` lists the runs and their sweeps")
        return [run for run in runs.runs if run.sweep == args.sweep]
    if verb in ("clean", "forget"):
        return list(runs.runs)  # as filtered when read
    raise UsageError(f"runs {verb} needs a run's id or --sweep NAME")


def _show(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    [found] = _chosen(run_store.load(info.common_dir, ids={args.run or ""}), argparse.Namespace(run=args.run or "", sweep=None), "show")
    json.dump(record(found), sys.stdout, indent=2)
    print()
    return 0


def _stop(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    """Running runs are stopped (SIGTERM, then SIGKILL; a Slurm job cancelled) and recorded
    `stopped`; queued ones are dropped when named by id or with --all."""
    with run_store.locked(info.common_dir, **_which(args)) as runs:
        chosen = [run for run in _chosen(runs, args, "stop") if run.state in ACTIVE]
        dropped = [run for run in chosen if run.state == "queued" and (args.run or args.all)]
        stopping = [run for run in chosen if run.state in ("running", "preempted") or (run in dropped and run.job)]
        for run in dropped:
            if run.job:
                run.reason = STOPPING  # its job is cancelled: recorded stopped when Slurm says it is gone
            else:
                model.drop(run, "dropped before it started")
        for run in stopping:
            run.reason = STOPPING
        runs.save()
    for backend in backends.with_active(stopping):
        for line in backend.cancel(info, [run for run in stopping if run.backend == backend.name]):
            print(output.escape(line))
    dropped = [run for run in dropped if not run.job]
    if dropped:
        print(f"Dropped {len(dropped)} queued run{'s' if len(dropped) > 1 else ''}: "
              f"{output.escape(', '.join(r.id for r in dropped))}")
    if not stopping and not dropped:
        print("Nothing to stop" + ("" if args.all or args.run else " (queued runs stay queued; --all drops them)"))
    return 0


def _retry(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    with run_store.locked(info.common_dir, **_which(args)) as runs:
        chosen = [run for run in _chosen(runs, args, "retry")
                  if run.state in ("failed", "stopped") and (args.run or not args.failed or run.state == "failed")]
        cleaned = [run for run in chosen if run.cleaned]
        if args.run and cleaned:
            raise UsageError(f"run {args.run} was cleaned: its worktree is gone, so it cannot run again",
                             hint=f"submit it again (`git gpuspace run --commit {cleaned[0].commit[:12]} -- ...`)")
        chosen = [run for run in chosen if not run.cleaned]  # of a sweep: those that can run again
        if not chosen:
            raise UsageError("no failed or stopped run to retry" + (f" ({len(cleaned)} cleaned: their worktrees are "
                             "gone)" if cleaned else ""), hint="submit them again" if cleaned else None)
        for run in chosen:
            model.requeue(run)
        runs.save()
    print(f"Queued again: {output.escape(', '.join(run.id for run in chosen))}", file=sys.stderr)
    from .run import wait_and_report
    waits = []
    for backend in backends.with_active(chosen):
        ids = [run.id for run in chosen if run.backend == backend.name]
        for sweep in dict.fromkeys(run.sweep for run in chosen if run.backend == backend.name):
            limit = runs.sweeps[sweep].max_parallel if sweep in runs.sweeps else None
            for line in backend.launch(info, [run.id for run in chosen if run.id in ids and run.sweep == sweep],
                                       limit, detach=False):
                print(line, file=sys.stderr)
        waits.append((backend, set(ids)))
    return wait_and_report(info, waits)


def _which(args: argparse.Namespace) -> dict:
    """The store's filter for the runs an action names: one run, a sweep's, or all."""
    return {"ids": {args.run}} if args.run else {"sweep": args.sweep} if args.sweep else {}


def _clean(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    """Finished runs give back what they hold: their worktree, container and ref; their data dir
    too with --purge. Their records stay (marked cleaned), and a cleaned run is not read again
    (--purge: unless its data dir is still there).

    A data dir that cannot be proved ours (a container can delete its owner mark) is kept and
    named, and the rest cleaned: a warning, not a failure, as `git clean` skips a repository
    nested in the tree. One of ours that cannot be removed in full makes the exit status 1."""
    wanted = {} if args.run else {"states": FINISHED, **({} if args.purge else {"cleaned": False})}
    with run_store.locked(info.common_dir, **_which(args), **wanted) as runs:
        done = [run for run in _chosen(runs, args, "clean") if run.state in FINISHED
                and (not run.cleaned or (args.purge and run.data_dir))]
        kept, left = _free(info, done, args.purge)
        runs.save()
    _warn(kept, left)
    print(f"Removed {len(done)} finished run{'s' if len(done) != 1 else ''}" + (" and their data" if args.purge else "")
          + (f", but kept {len(kept)} data dir{'s' if len(kept) > 1 else ''} (see above)" if kept else "")
          + ("; their records stay (`git gpuspace runs forget` drops them)" if done else ""))
    return 1 if left else 0


def _forget(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    """Records go: a run's by id, a sweep's, or (no target) those of the runs cleaned before. A
    run not cleaned yet is cleaned first (nothing of it left behind for no record to name); an
    active one is refused: stop it first. A sweep goes with its last run; ids are never given
    again (the store keeps the numbers it issued)."""
    wanted = {} if args.run or args.sweep else {"states": FINISHED, "cleaned": True}
    with run_store.locked(info.common_dir, **_which(args), **wanted) as runs:
        chosen = _chosen(runs, args, "forget")
        active = [run for run in chosen if run.state not in FINISHED]
        if active:
            what = f"run {active[0].id} is" if args.run else f"{len(active)} run{'s' if len(active) > 1 else ''} of " \
                f"sweep {args.sweep} {'are' if len(active) > 1 else 'is'}"
            raise UsageError(f"{what} {active[0].state if args.run else 'queued or running'}: not forgotten",
                             hint=f"stop it first: `git gpuspace runs stop {args.run or '--sweep ' + args.sweep} --all`")
        fresh = [run for run in chosen if not run.cleaned or (args.purge and run.data_dir)]
        kept, left = _free(info, fresh, args.purge)
        gone = {run.id for run in chosen}
        emptied = {name for name in {run.sweep for run in chosen if run.sweep}  # a sweep goes with its last run
                   if all(run.id in gone for run in run_store.load(info.common_dir, sweep=name).runs)}
        runs.runs = [run for run in runs.runs if run.id not in gone]
        runs.sweeps = {name: sweep for name, sweep in runs.sweeps.items() if name not in emptied}
        runs.save()
    _warn(kept, left)
    if not chosen:
        waiting = len(run_store.listing(info.common_dir, states=FINISHED))
        print("Nothing to forget" + (f": no finished run is cleaned ({waiting} not cleaned; `git gpuspace runs clean` "
                                     "first, or name them: `runs forget ID|--sweep NAME`)" if waiting else ""))
        return 0
    print(f"Forgot {len(chosen)} run{'s' if len(chosen) != 1 else ''}"
          + (f" ({len(fresh)} cleaned first{' with their data' if args.purge else ''})" if fresh else "")
          + (f", but kept {len(kept)} data dir{'s' if len(kept) > 1 else ''} (see above)" if kept else ""))
    return 1 if left else 0


def _free(info: worktrees.RepoInfo, done: list[Run], purge: bool) -> tuple[list[str], list[str]]:
    """What finished runs hold, removed; each marked cleaned. Returns the data dirs kept (not
    provably ours) and those left (not all of them could be removed)."""
    kept, left, purged = [], [], []
    for run in done:  # checked before anything is deleted
        if run.metrics is None:  # kept in its record: `--sort` works once its data dir is gone
            run.metrics = results.metrics(run.data_dir)
        if purge and run.data_dir and os.path.lexists(run.data_dir):
            problem = data_dirs.data_dir_problem(run.data_dir, run.container or "")
            if problem:
                kept.append(f"{run.data_dir}: it {problem}")
            else:
                purged.append(run)
        elif purge and run.data_dir:
            run.data_dir = None  # gone already
    fresh = [run for run in done if not run.cleaned]
    if fresh:
        from ..git import worktrees

        worktrees.remove_many(info, [Path(run.worktree) for run in fresh])
        worktrees.delete_refs(info, [f"refs/gpuspace/runs/{run.id}" for run in fresh])
    for run in purged:
        shutil.rmtree(run.data_dir, ignore_errors=True)
        if os.path.lexists(run.data_dir):
            left.append(run.data_dir)
        else:
            run.data_dir = None  # its record no longer names a place with nothing there
    for run in done:
        run.cleaned = True
    return kept, left


def _warn(kept: list[str], left: list[str]) -> None:
    for line in kept:
        print(f"git-gpuspace: warning: kept {output.escape(line)}; remove it by hand if it is yours", file=sys.stderr)
    for path in left:
        print(f"git-gpuspace: warning: could not remove all of {output.escape(path)} (files you may not delete?)",
              file=sys.stderr)


REASON_WIDTH = 60  # the table's; --json and --csv give a reason whole


def _list(common_dir: Path, args: argparse.Namespace) -> int:
    polled = backends.with_active(run_store.load(common_dir, states=ACTIVE).runs)
    if polled:
        from ..git.worktrees import discover

        for backend in polled:
            backend.poll(discover())  # e.g. Slurm says what became of its jobs
    wanted = {"sweep": args.sweep, "states": (args.state,) if args.state else None}
    # the table needs a few fields of each run: read by SQLite; --json gives all of them
    runs = run_store.load(common_dir, **wanted).runs if args.json else run_store.listing(common_dir, **wanted)
    shown = [(run, metrics_of(run)) for run in runs]
    if args.sort:
        key, descending = args.sort.lstrip("-"), args.sort.startswith("-")
        if shown and not any(key in metrics for _, metrics in shown):
            seen = sorted({name for _, metrics in shown for name in metrics})
            raise UsageError(f"no run has a metric '{key}'", hint=f"metrics seen: {', '.join(seen) or 'none'}")
        present = sorted((pair for pair in shown if key in pair[1]), key=lambda pair: pair[1][key], reverse=descending)
        shown = present + [pair for pair in shown if key not in pair[1]]
    pid = dispatcher_pid(common_dir)
    if pid is not None:  # the process to signal (SIGTERM stops dispatching; its runs go on)
        print(f"git-gpuspace: dispatcher: pid {pid}", file=sys.stderr)
    if args.json:
        json.dump([record(run, metrics) for run, metrics in shown], sys.stdout, indent=2)
        print()
        return 0
    names = _metric_columns(common_dir, args, shown)
    jobs = any(run.job for run, _ in shown)
    restarts = any(run.restarts or run.preemptible for run, _ in shown)  # only where preemption is in play
    headers = ["RUN", "SWEEP", "PARAMS", "STATE", "REASON", "EXIT", "TIME", *(["RESTARTS"] if restarts else []), "GPUS",
               "COMMIT", *(["JOB"] if jobs else []), *[n.upper() for n in names]]
    whole = bool(args.csv)
    rows = [[run.id, run.sweep or "-", " ".join([f"{k}={v}" for k, v in run.params.items()]) or "-", run.state,
             _reason(run.reason, whole), "-" if run.exit_code is None else str(run.exit_code),
             "-" if run.started is None else f"{run.duration_s:.1f}s", *([_restarts(run)] if restarts else []),
             _gpus(run), _commit(run),
             *([run.job or "-"] if jobs else []),
             *[f"{metrics[n]:g}" if n in metrics else "-" for n in names]]
            for run, metrics in shown]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([output.escape(h.lower()) for h in headers])
        writer.writerows([[output.escape(cell) for cell in row] for row in rows])
        return 0
    print(output.table(headers, rows))
    if any(run.reason == PREPARING for run in runs) and cut_short(common_dir):
        print("git-gpuspace: a submission was cut short (runs still `preparing`): `git gpuspace runs resume` "
              "finishes it and queues its runs", file=sys.stderr)
    elif any(run.state == "queued" for run in runs) and pid is None and not alive(common_dir):
        print("git-gpuspace: runs are queued and no dispatcher is running: `git gpuspace runs resume`", file=sys.stderr)
    return 0


def _metric_columns(common_dir: Path, args: argparse.Namespace, shown: list) -> list[str]:
    """--metrics, else the repo's (or user's) `runs.metrics` setting, else every metric of the
    runs shown that is not one of their parameters' names (`lr=0.1` echoed in a log is a
    parameter, already in PARAMS)."""
    chosen = args.metrics
    if chosen is None:
        from .. import config, state  # the settings, only when no choice was made here

        chosen = config.effective(state.load(common_dir).defaults, {}).get("runs.metrics")
    if chosen is not None:
        return metric_names(str(chosen))
    params = {name for run, _ in shown for name in run.params}
    return sorted({name for _, metrics in shown for name in metrics} - params)


def metric_names(text: str) -> list[str]:
    """`loss, acc` as the names it lists, each once, in order (none: no metric columns)."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _reason(reason: str | None, whole: bool) -> str:
    if not reason:
        return "-"
    return reason if whole or len(reason) <= REASON_WIDTH else reason[:REASON_WIDTH - 3] + "..."


def lost_of(run: Run | run_store.Listed) -> float:
    """Seconds it spent off its GPU because it was preempted, the time since its last
    preemption included while it waits to go on."""
    lost = run.lost_s
    if run.preempted_at is not None and run.state in ACTIVE:
        lost += max(0.0, (model.now() - run.preempted_at).total_seconds())
    return lost


def _restarts(run: Run | run_store.Listed) -> str:
    """`0`, or `2 (41s lost)`: how many times it was preempted and started again, and the time that cost it."""
    if not run.restarts and run.preempted_at is None:
        return str(run.restarts)
    lost = lost_of(run)
    shown = f"{lost:.0f}s" if lost < 100 else f"{lost / 60:.0f}m" if lost < 6000 else f"{lost / 3600:.1f}h"
    return f"{run.restarts} ({shown} lost)"


def _gpus(run: Run | run_store.Listed) -> str:
    """The host's numbers of its GPUs, as `status` shows them; a run recorded before they were
    kept shows how many it had."""
    if run.gpu_indices:
        return ",".join(str(index) for index in run.gpu_indices)
    count = run.gpus if isinstance(run.gpus, int) else len(run.gpus)
    return f"{count} GPU{'s' if count > 1 else ''}" if count else "-"


def _commit(run: Run | run_store.Listed) -> str:
    """The commit it ran, short; `*`: a snapshot of uncommitted changes, on top of that worktree's HEAD."""
    return (run.commit[:7] + ("*" if run.snapshot else "")) if run.commit else "-"


def metrics_of(run: Run | run_store.Listed) -> dict[str, float]:
    """A finished run's, as kept when it ended; a live one's from its log as it is now."""
    return run.metrics if run.metrics is not None and run.state in FINISHED else results.metrics(run.data_dir)


def record(run: Run, metrics: dict[str, float] | None = None) -> dict:
    """One run in the documented `runs --json` schema."""
    return {
        "id": run.id, "sweep": run.sweep, "params": dict(run.params), "commit": run.commit,
        "state": run.state, "reason": run.reason, "exit_code": run.exit_code,
        "started": run.started.isoformat() if run.started else None,
        "finished": run.finished.isoformat() if run.finished else None,
        "duration_s": run.duration_s, "gpus": list(run.gpus), "worktree": run.worktree,
        "data_dir": run.data_dir,
        "metrics": metrics_of(run) if metrics is None else metrics,
        "backend": run.backend, "job": run.job,
        "snapshot": run.snapshot, "gpu_indices": list(run.gpu_indices), "cleaned": run.cleaned,
        "priority": run.priority, "preemptible": run.preemptible, "preempt": run.preempt,
        "time_slice": run.time_slice, "grace": run.grace, "restarts": run.restarts, "lost_s": round(lost_of(run), 3),
        "trial": run.trial, "value": run.value, "pruned": run.state == "pruned",
    }
