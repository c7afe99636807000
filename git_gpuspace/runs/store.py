"""The runs of a repo, queued and finished: `.git/gpuspace-runs.toml`, beside the state file and
under the same lock. "Queued" lives only here; what ran is the engine's (the container's
labels and exit code), so a dispatcher that dies loses nothing."""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import tomli_w

from .. import state, untrusted_files
from ..errors import StateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILE_NAME = "gpuspace-runs.toml"
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


@dataclass
class Runs:
    path: Path
    runs: list[Run] = field(default_factory=list)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    issued: dict[str, int] = field(default_factory=dict)  # last number per id prefix: ids are never reused

    def find(self, run_id: str) -> Run | None:
        return next((run for run in self.runs if run.id == run_id), None)

    def next_id(self, prefix: str) -> str:
        """`<prefix>-<n>`, never one given before (a cleaned run's data dir and ref stay apart)."""
        taken = {run.id for run in self.runs}
        number = self.issued.get(prefix, 0) + 1
        while f"{prefix}-{number}" in taken:
            number += 1
        self.issued[prefix] = number
        return f"{prefix}-{number}"

    def save(self) -> None:
        document = {
            "schema": 1,
            "issued": dict(self.issued),
            "sweeps": [{key: value for key, value in asdict(s).items() if value is not None} for s in self.sweeps.values()],
            "runs": [{key: value for key, value in asdict(r).items() if value is not None} for r in self.runs],
        }
        state.atomic_write(self.path, tomli_w.dumps(document).encode())


def load(common_dir: Path) -> Runs:
    path = common_dir / FILE_NAME
    try:
        # in the common dir, no container's to write; still never a FIFO or a symlink's target
        document = tomllib.loads(untrusted_files.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        return Runs(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}", hint="fix or move the file by hand") from None
    try:
        runs = [Run(**entry) for entry in document.get("runs", [])]
        sweeps = {entry["name"]: Sweep(**entry) for entry in document.get("sweeps", [])}
    except (TypeError, KeyError) as error:
        raise StateError(f"{path}: a run or sweep entry is malformed ({error})", hint="fix or move the file by hand") from None
    for index, run in enumerate(runs):
        if not ID.match(run.id) or run.state not in STATES:
            raise StateError(f"{path}: runs[{index}] has a bad id or state", hint="fix or move the file by hand")
    issued = {str(k): int(v) for k, v in (document.get("issued") or {}).items() if isinstance(v, int)}
    return Runs(path, runs, sweeps, issued)


@contextlib.contextmanager
def locked(common_dir: Path) -> Iterator[Runs]:
    """The repo's lock (the one the state file uses), and the runs as they are now."""
    with state.locked(common_dir):
        yield load(common_dir)


def params_env(run: Run) -> dict[str, str]:
    """What the run's process sees of itself."""
    env = {"GPUSPACE_RUN": run.id, "GPUSPACE_SWEEP": run.sweep or "", "GPUSPACE_COMMIT": run.commit}
    env.update({f"GPUSPACE_PARAM_{re.sub(r'[^A-Za-z0-9_]', '_', key).upper()}": value for key, value in run.params.items()})
    return env
