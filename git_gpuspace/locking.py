"""Advisory file locks. The kernel drops them when a process dies, so no lock goes stale."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: Path, mode: int = 0o600, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path`, creating it with `mode` if missing.

    Yields True once held; with `wait=False`, yields False at once if someone else holds it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # another user's file: flock needs no write access
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def host_gpu_lock() -> contextlib.AbstractContextManager[bool]:
    """The lock every repo of every user on this host takes while it claims GPUs.

    It sits in a world-writable directory so that two users' repos serialize on the
    same file; the claim itself is the labelled container created while it is held.
    """
    directory = Path(os.environ.get("GPUSPACE_LOCK_DIR") or tempfile.gettempdir()) / "git-gpuspace"
    if not directory.is_dir():
        directory.mkdir(exist_ok=True)
        with contextlib.suppress(PermissionError):
            os.chmod(directory, 0o1777)  # mkdir's mode is cut by the umask
    path = directory / "gpu-claims.lock"
    if not path.exists():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, 0o666)
        os.close(fd)
    return file_lock(path, 0o666)
