"""A run and its sweep: what was asked, where it stands, how it ended, and the one state machine
every backend records its runs by (see DESIGN.md section 6):

    queued (preparing) -> queued           its submission made its worktree and ref
    queued -> running (starting) -> running  its start recorded, then its container (or job) runs
    queued -> running                      Slurm started its job
    queued -> stopped                      dropped before it ran (`runs stop`, an earlier failure)
    queued | running (starting) -> failed  it could not start (its worktree gone, its image missing)
    running (stopping) -> stopped          `runs stop`
    running -> succeeded | failed          its command ended (failed: an exit code other than 0,
                                           or none: interrupted, could not start)
    running -> queued                      its start was cut short before anything ran
    running -> preempted -> queued         its GPU was taken (preemption, a time slice): SIGTERM,
                                           a grace period, SIGKILL; then back in line, to restart
                                           in the same worktree and data dir (GPUSPACE_RESUME=1)
    preempted -> stopped                   `runs stop` while it was being preempted
    running (pruning) -> pruned            a search's pruner gave its trial up: stopped
    failed | stopped -> queued             retries left, or `runs retry`

A reason says more within a state: `preparing`, `starting`, `stopping`, a Slurm job's PENDING
reason, why a run failed without an exit code."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

STATES = ("queued", "running", "preempted", "succeeded", "failed", "stopped", "pruned")
FINISHED = ("succeeded", "failed", "stopped", "pruned")
ACTIVE = ("queued", "running", "preempted")
PREPARING = "preparing"  # queued, its worktree still being made by its submitter
# running, its start recorded but its container perhaps not started yet: whoever comes next
# starts that container (or job), never a new one
STARTING = "starting"
STOPPING = "stopping"  # running, asked to stop: however it ends, it ends `stopped`
PRUNING = "pruning"  # running, its trial given up by a search's pruner: it ends `pruned`
MOVES = {"queued": ("queued", "running", "stopped", "failed"),
         "running": ("running", "queued", "preempted", *FINISHED), "preempted": ("queued", "stopped"),
         "succeeded": (), "failed": ("queued",), "stopped": ("queued",), "pruned": ()}
GRACE_S = 30.0  # how long a preempted run's command has, after SIGTERM, to write a checkpoint
ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def now() -> _dt.datetime:
    moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # milliseconds: short runs have a duration


@dataclass
class Run:
    id: str
    command: list[str]  # argv, placeholders filled
    commit: str
    worktree: str  # a detached worktree at `commit`, made at submission
    flags: dict[str, str] = field(default_factory=dict)  # image, gpus, memory, cpus, shm_size as given
    sweep: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    snapshot: bool = False  # `commit` is a snapshot of uncommitted changes
    state: str = "queued"
    reason: str | None = None  # why it failed without an exit code (interrupted, could not start)
    exit_code: int | None = None
    priority: int = 0
    retries: int = 0  # how many more times a failed run is queued again
    submitted: _dt.datetime = field(default_factory=now)
    started: _dt.datetime | None = None
    finished: _dt.datetime | None = None
    gpus: list[str] = field(default_factory=list)  # UUIDs, while and after it ran
    gpu_indices: list[int] = field(default_factory=list)  # the same GPUs as the host (or node) numbers them
    container: str | None = None
    data_dir: str | None = None
    check: str | None = None  # a `verify` check: its verdict becomes a git note when it ends
    backend: str = "local"  # or "slurm": then Slurm starts it, and `job` is its job id
    job: str | None = None
    metrics: dict[str, float] | None = None  # read from its data dir once, when it ended
    cleaned: bool = False  # `runs clean` removed its worktree, container and ref; its record stays
    preemptible: bool = False  # its GPU may be taken from it (it checkpoints on SIGTERM and resumes)
    preempt: bool = False  # it may take a GPU from a preemptible run of lower priority
    time_slice: float | None = None  # seconds on a GPU before it yields to runs of its priority that wait
    grace: float = GRACE_S  # seconds from SIGTERM to SIGKILL when preempted
    restarts: int = 0  # how many times it was preempted and started again
    lost_s: float = 0.0  # seconds it spent off its GPU because it was preempted
    preempted_at: _dt.datetime | None = None  # when its last preemption began
    trial: int | None = None  # a search's trial number (search.py): the study has its parameters
    told: bool = False  # its trial was told how it ended
    value: float | None = None  # the search's metric, as its trial was told (None: failed, pruned)
    branch: str | None = None  # the branch of the worktree it was submitted from (None: --commit, detached)

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or now()) - self.started).total_seconds()


@dataclass
class Sweep:
    name: str
    max_parallel: int | None = None  # None: as many as GPUs allow
    runs_per_gpu: int = 1  # K runs of this sweep may share one GPU (and nothing else)
    search: dict | None = None  # a search's plan (search.Plan): its runs are asked for, trial by trial


def params_env(run: Run) -> dict[str, str]:
    """What the run's process sees of itself. After a preemption: GPUSPACE_RESUME=1 (resume from
    the checkpoint in /data) and GPUSPACE_RESTARTS, how many times it was started again."""
    env = {"GPUSPACE_RUN": run.id, "GPUSPACE_SWEEP": run.sweep or "", "GPUSPACE_COMMIT": run.commit,
           "GPUSPACE_RESTARTS": str(run.restarts)}
    if run.restarts:
        env["GPUSPACE_RESUME"] = "1"
    env.update({f"GPUSPACE_PARAM_{re.sub(r'[^A-Za-z0-9_]', '_', key).upper()}": value for key, value in run.params.items()})
    return env


def _move(run: Run, to: str) -> None:
    if to not in MOVES[run.state]:
        raise AssertionError(f"run {run.id}: no transition from {run.state} to {to}")
    run.state = to


def start(run: Run, reason: str | None = None, container: str | None = None, gpus: list[str] | None = None,
          data_dir: str | None = None, gpu_indices: list[int] | None = None) -> None:
    """It runs (or, with STARTING, its start is recorded before its container runs)."""
    if run.state != "running":
        run.started = now()
        if run.preempted_at is not None:  # back on a GPU after a preemption: the time off it is lost
            run.lost_s += max(0.0, (run.started - run.preempted_at).total_seconds())
            run.preempted_at = None
    _move(run, "running")
    run.reason = reason
    if container is not None:
        run.container = container
    if gpus is not None:
        run.gpus = list(gpus)
    if gpu_indices is not None:
        run.gpu_indices = list(gpu_indices)
    if data_dir is not None:
        run.data_dir = data_dir


def end(run: Run, exit_code: int | None, reason: str | None = None, failed: bool = False,
        began: _dt.datetime | None = None, at: _dt.datetime | None = None) -> str:
    """Its command ended with `exit_code` (None: it has none: `reason` says why, `interrupted` by
    default); `failed`: whatever the code, what it left is not whole. A run asked to stop is
    `stopped`, unless its command's own exit file says it succeeded first. `began`, `at`: when
    it started and ended, where the engine (or its exit file) knows, not when we looked: a
    dispatcher that comes back after a while records the run's own times. A failed run with
    retries left is queued again. Returns the line that says so."""
    from .results import metrics  # its log: what `runs` shows of a finished run without reading it again

    stopping, pruning = run.reason == STOPPING, run.reason == PRUNING
    moment = now()
    run.exit_code, run.metrics = exit_code, metrics(run.data_dir)
    run.started = min(began, moment) if began else run.started or moment
    run.finished = min(max(at, run.started), moment) if at else moment  # a file's time is the container's to set
    if stopping or pruning:
        _move(run, "pruned" if pruning else "stopped")
        run.reason = None
    elif exit_code is None:
        _move(run, "failed")
        run.reason = reason or "interrupted"
    else:
        _move(run, "failed" if exit_code != 0 or failed else "succeeded")
        run.reason = reason
    line = f"{run.id} {run.state}" + (f" ({run.reason})" if run.reason else f" (exit {run.exit_code})") \
        + f" after {run.duration_s:.1f} s"
    if run.state == "failed" and run.retries > 0:
        run.retries -= 1
        requeue(run)
        line += f"; queued again ({run.retries} retr{'y' if run.retries == 1 else 'ies'} left)"
    return line


def could_not_start(run: Run, why: str) -> str:
    _move(run, "failed")
    run.reason, run.exit_code, run.finished = f"could not start: {why}", None, now()
    run.started = run.container = None
    return f"{run.id} failed: could not start: {why}"


def drop(run: Run, why: str) -> None:
    """A queued run that will not run."""
    _move(run, "stopped")
    run.reason, run.finished = why, now()


def requeue(run: Run) -> None:
    """Queued again, as new: what it did last time stays in its data dir."""
    _move(run, "queued")
    run.reason = run.exit_code = run.started = run.finished = run.container = run.job = run.metrics = None


def preempt(run: Run, why: str) -> str:
    """Its GPU is taken: its command gets SIGTERM and `grace` seconds, then SIGKILL."""
    _move(run, "preempted")
    run.reason, run.preempted_at = why, now()
    return f"{run.id} preempted: {why}; SIGTERM, {run.grace:g} s to checkpoint"


def back_in_line(run: Run) -> str:
    """A preempted run whose container is gone is queued again, to restart where it left off
    (its worktree, commit and data dir; its log appended)."""
    _move(run, "queued")
    run.restarts += 1
    run.reason = run.exit_code = run.started = run.finished = run.container = run.job = run.metrics = None
    return f"{run.id} queued again after its preemption (restart {run.restarts})"
