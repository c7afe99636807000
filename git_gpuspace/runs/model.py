"""A run and its sweep: what was asked, where it stands, how it ended. Every backend records
its runs in these terms (see DESIGN.md section 6)."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

STATES = ("queued", "running", "succeeded", "failed", "stopped")
FINISHED = ("succeeded", "failed", "stopped")
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
    container: str | None = None
    data_dir: str | None = None
    check: str | None = None  # a `verify` check: its verdict becomes a git note when it ends
    backend: str = "local"  # or "slurm": then Slurm starts it, and `job` is its job id
    job: str | None = None

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


def params_env(run: Run) -> dict[str, str]:
    """What the run's process sees of itself."""
    env = {"GPUSPACE_RUN": run.id, "GPUSPACE_SWEEP": run.sweep or "", "GPUSPACE_COMMIT": run.commit}
    env.update({f"GPUSPACE_PARAM_{re.sub(r'[^A-Za-z0-9_]', '_', key).upper()}": value for key, value in run.params.items()})
    return env
