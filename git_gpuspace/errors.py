"""Expected failures: each carries the one line a user reads, plus an optional hint.

Anything that is not a GpuspaceError reaching the CLI is a bug and gets a log file.
"""

from __future__ import annotations


class GpuspaceError(Exception):
    """A failure the user can act on. `str()` is the one-line message."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(GpuspaceError):
    """Bad command-line input (same exit code as argparse's own errors)."""

    exit_code = 2


class NotARepository(GpuspaceError):
    pass


class StateError(GpuspaceError):
    """`.git/gpuspace.toml` cannot be read or trusted."""


class EngineUnavailable(GpuspaceError):
    """The Docker engine cannot be reached."""


class ImageUnavailable(GpuspaceError):
    pass


class NoNvidiaRuntime(GpuspaceError):
    """The engine has no NVIDIA device driver, so GPU device requests fail."""


class GpusUnavailable(GpuspaceError):
    """Too few GPUs are free, or a requested GPU does not exist."""

    held: dict[int, str] = {}  # GPU index -> who holds it, when they are taken


class WorktreeError(GpuspaceError):
    pass


class GitRefusal(WorktreeError):
    """What `git worktree` itself refuses, with git's wording and git's exit code (128: git's
    die()), so that a script sees the same from either."""

    exit_code = 128

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 128) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class PortTaken(GpuspaceError):
    """A host port asked for is in use."""


class LockTimeout(GpuspaceError):
    """A lock stayed held past its bound (a container can flock the repo's lock; a GPU claim's holder lives on)."""


class ClaimBusy(LockTimeout):
    """The GPU claim stayed held by a live (or not provably dead) holder past the bound."""

    def __init__(self, message: str, hint: str | None = None, holder: str = "") -> None:
        super().__init__(message, hint=hint)
        self.holder = holder  # who holds it, without the time: the same holder reads the same


class NotARegularFile(GpuspaceError):
    """A file git-gpuspace reads where a container or a repository writes is a FIFO, device,
    socket or symlink: reading it could block forever or reach outside."""
