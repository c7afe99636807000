"""Submitting runs: ids reserved and the runs recorded `queued (preparing)` under the repo's
lock, then a pinned worktree and ref made for each, then the runs released to the queue.

Each submitter holds a shared lock while it works, so a submission cut short (kill -9, a
power cut) is known by that lock being free while runs are still `preparing`: `recover`
finishes it — each such run's worktree made anew and its ref set — and queues its runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..git import worktrees
from ..errors import GpuspaceError
from ..faults import checkpoint
from ..rollback import Rollback
from . import grid
from . import store as run_store
from .at_work import submitters
from . import model
from .model import PREPARING, Run, Sweep


@dataclass(frozen=True)
class Submission:
    """What is asked to run: one run per parameter set, each pinned to `commit`."""

    command: list[str]  # argv, with {placeholders} of the parameters
    commit: str
    snapshot: bool = False  # `commit` is a snapshot of uncommitted changes
    flags: dict[str, str] = field(default_factory=dict)  # image, gpus, memory, cpus, shm_size as given
    sweep: str | None = None
    param_sets: list[dict[str, str]] = field(default_factory=lambda: [{}])
    max_parallel: int | None = None
    priority: int = 0
    retries: int = 0
    runs_per_gpu: int = 1
    check: str | None = None  # a `verify` check: its verdict becomes a git note when it ends
    backend: str = "local"
    preemptible: bool = False  # its GPU may be taken (it checkpoints on SIGTERM and resumes)
    preempt: bool = False  # it may take a GPU from a preemptible run of lower priority
    time_slice: float | None = None  # seconds on a GPU before it yields to waiting runs of its priority
    grace: float = model.GRACE_S  # seconds from SIGTERM to SIGKILL when preempted
    trials: list[int] | None = None  # a search's trial number of each parameter set (search.py)
    branch: str | None = None  # the branch of the worktree it was submitted from


def submit(info: worktrees.RepoInfo, asked: Submission) -> list[str]:
    """Queue one run per parameter set: ids are reserved under the lock, worktrees and refs made
    outside it (a checkout takes as long as the repo makes it), then the runs are released."""
    sweep = asked.sweep
    with submitters(info.common_dir, exclusive=False):
        with run_store.locked(info.common_dir, ids=set()) as runs:  # the sweeps; the new runs are added
            if sweep:
                runs.sweeps.setdefault(sweep, Sweep(sweep))
                if asked.max_parallel is not None:
                    runs.sweeps[sweep].max_parallel = asked.max_parallel
                if asked.runs_per_gpu > 1:
                    runs.sweeps[sweep].runs_per_gpu = asked.runs_per_gpu
            made = []
            for index, params in enumerate(asked.param_sets):
                run_id, path = _place(info, runs, sweep or "run")
                made.append(Run(id=run_id, command=grid.fill(asked.command, params), commit=asked.commit,
                                worktree=str(path), flags=dict(asked.flags), sweep=sweep, params=dict(params),
                                snapshot=asked.snapshot, priority=asked.priority, retries=asked.retries,
                                reason=PREPARING, check=asked.check, backend=asked.backend,
                                preemptible=asked.preemptible or asked.time_slice is not None, preempt=asked.preempt,
                                time_slice=asked.time_slice, grace=asked.grace,
                                trial=asked.trials[index] if asked.trials else None, branch=asked.branch))
                runs.runs.append(made[-1])
            runs.save()
        checkpoint("after-runs-reserved")
        ids = [run.id for run in made]
        try:
            with Rollback() as undo, worktrees.batch(info):  # each run at a path reserved for it
                for run in made:
                    _make_worktree(info, run, undo)
        except BaseException:
            with run_store.locked(info.common_dir, ids=set(ids)) as runs:
                runs.runs = []
                if sweep and all(run.id in ids for run in run_store.load(info.common_dir, sweep=sweep).runs):
                    runs.sweeps.pop(sweep, None)
                runs.save()
            raise
        _release(info, set(ids))
    return ids


def _place(info: worktrees.RepoInfo, runs: run_store.Runs, prefix: str) -> tuple[str, Path]:
    """A new run id and its worktree's path, `<repo's parent>/worktrees/runs/<repo>/<id>`: keyed by
    repo, as ids are unique per repo only (two repos side by side both have a run-1). A path
    something else took (made by hand) is passed over, as an id is never given twice anyway."""
    for _ in range(1000):
        run_id = runs.next_id(prefix)
        path = info.anchor.parent / "worktrees" / "runs" / info.anchor.name / run_id
        if not os.path.lexists(path):
            return run_id, path
    raise GpuspaceError(f"no free path for a run under {path.parent}", hint="remove what is there, or `runs clean`")


def _make_worktree(info: worktrees.RepoInfo, run: Run, undo: Rollback) -> None:
    worktree = worktrees.add(info, Path(run.worktree), worktrees.Checkout(commit=run.commit))
    undo.push(f"remove worktree {worktree.path}", lambda w=worktree: worktrees.remove(info, w, force=True))
    checkpoint("after-run-worktree")
    ref = f"refs/gpuspace/runs/{run.id}"
    worktrees.set_ref(info, ref, run.commit)  # nothing a run ran is garbage-collected
    undo.push(f"delete {ref}", lambda r=ref: worktrees.delete_ref(info, r))
    checkpoint("after-run-ref")


def _release(info: worktrees.RepoInfo, ids: set[str]) -> None:
    with run_store.locked(info.common_dir, ids=ids) as runs:
        for run in runs.runs:
            if run.id in ids and run.reason == PREPARING:
                run.reason = None
        runs.save()


def _finish(info: worktrees.RepoInfo, run: Run) -> None:
    """Make what a dead submitter left of one run's worktree and ref whole. The ref is the run's
    alone (ids are never given twice): a lock left on it is the dead submitter's."""
    ref = f"refs/gpuspace/runs/{run.id}"
    worktrees.remove_ref_lock(info, ref)
    found = worktrees.find_worktree(info, Path(run.worktree))
    if found is not None and not found.locked and not found.prunable and found.head == run.commit:
        worktrees.set_ref(info, ref, run.commit)
        return
    worktrees.discard_unfinished(info, Path(run.worktree))
    with Rollback() as undo:
        _make_worktree(info, run, undo)


def recover(info: worktrees.RepoInfo) -> list[str]:
    """Finish the submissions whose submitter died: each of their runs gets its worktree made
    anew (what the dead `add` left of it is removed: the path was reserved for that run alone)
    and its ref, and is queued. Returns what was done, one line per sweep or run."""
    with submitters(info.common_dir, exclusive=True) as alone:
        if not alone:
            return []  # a submitter is at work: its runs are its own to finish
        orphans = [run for run in run_store.load(info.common_dir, states=("queued",)).runs
                   if run.state == "queued" and run.reason == PREPARING]
        if not orphans:
            return []
        dropped: dict[str, str] = {}
        for run in orphans:
            try:
                _finish(info, run)
            except (GpuspaceError, OSError) as error:
                dropped[run.id] = str(error) if isinstance(error, GpuspaceError) else error.strerror or str(error)
        with run_store.locked(info.common_dir, ids={orphan.id for orphan in orphans}) as runs:
            for run in runs.runs:
                if run.id in dropped:
                    model.drop(run, f"dropped: its submission was cut short and its worktree could not be made: "
                                    f"{dropped[run.id]}")
                elif run.id in {orphan.id for orphan in orphans} and run.reason == PREPARING:
                    run.reason = None
            runs.save()
    groups: dict[str, list[str]] = {}
    for run in orphans:
        if run.id not in dropped:
            groups.setdefault(run.sweep or "", []).append(run.id)
    lines = [f"{'sweep ' + sweep if sweep else 'run ' + ids[0]}: its submission was cut short; its worktree"
             f"{'s are' if len(ids) > 1 else ' is'} made and {', '.join(ids)} queued" for sweep, ids in groups.items()]
    return lines + [f"{run_id} dropped: its submission was cut short and its worktree could not be made: {why}"
                    for run_id, why in dropped.items()]


def withdraw(info: worktrees.RepoInfo, ids: list[str], why: str) -> None:
    """Runs that were queued but could not be handed over (sbatch refused them): dropped, with
    why, so that nothing waits for them; `runs clean` removes their worktrees."""
    with run_store.locked(info.common_dir, ids=set(ids)) as runs:
        for run in runs.runs:
            if run.state == "queued" and not run.job:
                model.drop(run, f"not submitted: {why}")
        runs.save()
