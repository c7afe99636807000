"""Advisory file locks. The kernel drops them when a process dies, so no lock goes stale.

But a live process can hold one forever (a container can flock the repo's state lock), so
every wait is bounded and the timeout names the holder. The host-wide GPU claim is no file
lock: the engine holds it (claim.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import pwd
import time
from pathlib import Path
from typing import Iterator

from .errors import LockTimeout, StateError

TIMEOUT_ENV = "GPUSPACE_LOCK_TIMEOUT"
POLL_S = 0.05


def lock_timeout(default: float | None) -> float | None:
    """`GPUSPACE_LOCK_TIMEOUT` seconds when set to a finite number >= 0, else `default`."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


@contextlib.contextmanager
def file_lock(path: Path, mode: int = 0o600, wait: bool = True, timeout: float | None = 60) -> Iterator[bool]:
    """Hold an exclusive flock on `path`, creating it with `mode` if missing.

    Yields True once held; with `wait=False`, yields False at once if someone else holds it.
    Otherwise waits up to `timeout` seconds (None: forever; `GPUSPACE_LOCK_TIMEOUT` overrides
    it), then raises LockTimeout.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    except OSError as error:
        try:  # another user's file, or a read-only file system: flock needs no write access
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            raise StateError(f"cannot lock {path}: {error.strerror}",
                             hint="git-gpuspace needs to write in the repository's git dir") from None
    try:
        bound = lock_timeout(timeout)
        deadline = None if bound is None else time.monotonic() + bound
        while True:
            try:
                # Never a blocking flock: it cannot be interrupted by a deadline.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"timed out after {bound:g} s waiting for the lock {path}, {_holders(fd)}",
                        hint="wait for the command holding it to finish, or stop it",
                    ) from None
                time.sleep(POLL_S)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _holders(fd: int) -> str:
    """'held by pid N (user: command)' for each process /proc/locks shows on fd's inode."""
    pids = holder_pids(os.fstat(fd))
    if not pids:
        return "holder unknown"
    return "held by " + ", ".join(f"pid {pid}{_describe(pid)}" for pid in pids)


def holder_pids(st: os.stat_result) -> list[str]:
    """The pids /proc/locks shows holding a lock on the file `st` describes (none it cannot see)."""
    # /proc/locks lines: `1: FLOCK  ADVISORY  WRITE 4242 fe:00:16490510 0 EOF`, the device
    # in hex and the inode in decimal; waiters are marked `->` and do not hold it.
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as locks:
            lines = [line.split() for line in locks]
    except OSError:
        lines = []
    pids = [f[-4] for f in lines if len(f) >= 8 and f[-3] == key and f[1] != "->" and f[-4].isdigit()]
    # pid 0: the holder lives in a pid namespace we cannot see.
    return list(dict.fromkeys(pid for pid in pids if pid != "0"))


def _describe(pid: str) -> str:
    """' (user: command)', or '' when /proc hides the process (gone, or hidepid)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    command = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    # Another user controls this text: keep terminal escapes out of our error line.
    command = "".join(c if c.isprintable() else "?" for c in command)
    if len(command) > 60:
        command = command[:57] + "..."
    return f" ({user}: {command})"
