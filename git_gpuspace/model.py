"""Plain data: what a binding is, what a GPU is, what a user asked for."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    """One physical GPU. The UUID is its identity; the index is for people."""

    index: int
    uuid: str
    name: str = ""
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: int | None = None


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None
    shm_bytes: int | None = None


@dataclass(frozen=True)
class GpuRequest:
    """Parsed `--gpus`: a count, explicit ids (index or UUID), all, or none."""

    count: int | None = None
    ids: tuple[str, ...] = ()
    all: bool = False

    @property
    def none(self) -> bool:
        return not self.all and not self.ids and not self.count


@dataclass(frozen=True)
class Holder:
    """Who holds a GPU, as read from a container's labels (any repo on the engine)."""

    repo: str
    worktree: str
    branch: str | None
    container: str
    share: bool


@dataclass
class Binding:
    """Desired state of one worktree, as kept in `.git/gpuspace.toml`."""

    path: str
    container: str
    image: str
    branch: str | None = None
    gpus: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    share: bool = False
    worktree_id: str | None = None  # git's admin dir name: finds the worktree after `git worktree move`
    gpu_request: str | None = None  # the --gpus spec asked for; claimed again when pending
    pending: str | None = None  # why the container could not be made yet (engine down, no GPU free...)
    created: _dt.datetime = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    )
