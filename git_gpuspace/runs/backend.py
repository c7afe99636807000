"""Where runs run: a backend takes queued runs from the store and records in it, through the
state machine of model.py, what became of them. Two exist, `local` (this machine's engine,
local.py) and `slurm` (slurm.py); the commands speak to this interface only.

A backend for Kubernetes would be one more file (see DESIGN.md section 6): the export already
writes a run or a sweep as an Indexed Job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..config import effective
from ..errors import UsageError
from .model import ACTIVE, Run

if TYPE_CHECKING:
    from ..git import worktrees
    from ..settings import Settings
    from .output_stream import OutputStream
    from .submit import Submission

NAMES = ("local", "slurm")


class Backend(Protocol):
    name: str

    def preflight(self, info: worktrees.RepoInfo, asked: Submission, settings: Settings) -> None:
        """Refuse, in one line, what cannot run there, before anything is queued or made."""

    def launch(self, info: worktrees.RepoInfo, ids: list[str], max_parallel: int | None, detach: bool,
               stop_on_failure: bool = False) -> list[str]:
        """Hand these queued runs over (a job array; the dispatcher, in the background when
        `detach`). `stop_on_failure`: one at a time, none after one failed, where the backend can
        promise it (the dispatcher decides that when it waits). Returns what to tell the user."""

    def poll(self, info: worktrees.RepoInfo) -> list[str]:
        """Bring the store up to what the backend says of its runs. A line per change."""

    def wait(self, info: worktrees.RepoInfo, wanted: set[str] | None, stop_on_failure: bool = False,
             stream: OutputStream | None = None) -> list[Run]:
        """Until none of `wanted` (None: none of this backend's runs) is queued or running; the
        runs as they ended. `stop_on_failure`: once one of `wanted` failed, the rest are dropped.
        `stream`: one run's output as it is written, all of it before the line of its end."""

    def cancel(self, info: worktrees.RepoInfo, runs: list[Run]) -> list[str]:
        """Stop these runs (marked `stopping` in the store) and record them stopped."""

    def recover(self, info: worktrees.RepoInfo) -> list[str]:
        """After a submitter died: hand over what it queued but did not, never anything twice."""

    def follow_log(self, info: worktrees.RepoInfo, run: Run, tail: int | None) -> None:
        """The run's output on stdout as it is written, until it ends."""


def named(name: str) -> Backend:
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend()
    raise UsageError(f"unknown backend '{name}'", hint=" or ".join(NAMES))


def choose(flag: str | None, repo_defaults: dict) -> Backend:
    """The one place a backend is chosen: --backend, else the repo's `backend` setting, else
    the user's, else `local`."""
    return named(chosen(flag, repo_defaults))


def chosen(flag: str | None, repo_defaults: dict) -> str:
    """The name `choose` goes by, checked, without loading the backend (a command that may need
    none, as `verify` when every verdict is cached, stays light)."""
    name = flag or str(effective(repo_defaults, {})["backend"])
    if name not in NAMES:
        raise UsageError(f"unknown backend '{name}'", hint=" or ".join(NAMES))
    return name


def of(run: Run) -> Backend:
    return named(run.backend)


def every() -> list[Backend]:
    return [named(name) for name in NAMES]


def with_active(runs: list[Run]) -> list[Backend]:
    """The backends that have some of these runs queued or running, local last (it dispatches
    in the foreground: the others' runs are on their way meanwhile)."""
    names = {run.backend for run in runs if run.state in ACTIVE}
    return [named(name) for name in sorted(names, key=lambda name: (name == "local", name))]
