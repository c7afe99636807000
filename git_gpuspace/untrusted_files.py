"""Reading files that code in a container (or a repository) can write: the worktree, the data
dir. A FIFO there blocks open() until someone writes to it, a device reads without end, and a
symlink points anywhere on the host. So a file is opened without following a symlink, without
waiting (O_NONBLOCK: a FIFO opens at once), and read only when fstat says it is a regular file;
anything else is refused with one line that names it."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .errors import NotARegularFile

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_HINT = "something in a container or the repository put it there: look at it (ls -l), then remove it"


def kind(mode: int) -> str:
    """What a file of this mode is, for a message."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def refusal(path: Path | str, mode: int) -> NotARegularFile:
    return NotARegularFile(f"'{path}' is {kind(mode)}, not a regular file: refusing to read it", hint=_HINT)


def read_bytes(path: Path | str, limit: int | None = None, follow_symlinks: bool = False,
               offset: int = 0, tail: bool = False) -> bytes:
    """The file's bytes from `offset`, at most `limit` of them (with `tail`: the last `limit`,
    a log's end). OSErrors such as FileNotFoundError and IsADirectoryError are the caller's;
    anything else but a regular file raises NotARegularFile. `follow_symlinks` for files no
    container writes, where a link is the user's own (a hook): never a FIFO at its end either."""
    try:
        fd = os.open(path, _FLAGS & ~os.O_NOFOLLOW if follow_symlinks else _FLAGS)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # O_NOFOLLOW met a symlink; a socket
            with contextlib.suppress(OSError):
                mode = (os.stat if follow_symlinks else os.lstat)(path).st_mode
                if not stat.S_ISREG(mode):
                    raise refusal(path, mode) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as open() says it
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise refusal(path, mode)
        if tail and limit is not None:
            offset = max(offset, os.fstat(fd).st_size - limit)  # the size now: it may still grow
        if offset:
            handle.seek(offset)
        return handle.read() if limit is None else handle.read(limit)


def read_text(path: Path | str, limit: int | None = None, follow_symlinks: bool = False) -> str:
    return read_bytes(path, limit, follow_symlinks).decode("utf-8", errors="replace")


def require_regular(*paths: Path | str) -> None:
    """Refuse, before a library opens them with a plain open(), files that must be regular when
    present. stat follows a symlink as that open() will: what matters is where it ends."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # absent or unreadable: the library says so as it would
        if not stat.S_ISREG(mode):
            raise refusal(path, mode)


def open_under(top: Path | str, relative: str) -> int | None:
    """An fd of the regular file at `relative` under `top`, every component opened without
    following a link; None for anything else (missing, a link, a FIFO, a device). For folders a
    container fills, where even a directory on the way may be a link."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = relative.split("/")
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open(parts[-1], _FLAGS, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        return None
    return leaf


def read_under(top: Path | str, relative: str, limit: int, offset: int = 0) -> bytes | None:
    """At most `limit` bytes from `offset` of the regular file at `relative` under `top` (see
    open_under); None for anything else."""
    leaf = open_under(top, relative)
    if leaf is None:
        return None
    with os.fdopen(leaf, "rb") as handle:
        if offset:
            handle.seek(offset)
        return handle.read(limit)
