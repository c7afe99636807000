"""Folders on the host, as a build or a trust decision sees them: whether a path lies inside
one, and what a folder holds, hashed (never following a link, never reading a FIFO)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def inside(path: Path, *roots: Path) -> bool:
    return any(path == root.resolve() or root.resolve() in path.parents for root in roots)


def hash_tree(digest: Any, folder: Path, skip: str | None = None) -> int:
    """Feed `digest` each entry's path and content_of, in an order the file system does not
    choose, and return how many entries it fed; `skip`: a name left out, folder or file (git's
    own: a linked worktree's `.git` file names its admin dir, which differs in each worktree of
    the same commit). A symlinked folder is fed as a link (its target's text, so a changed target
    is a change) and never descended."""
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != skip)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in sorted(name for name in [*files, *links] if name != skip):
            path = Path(root) / name
            digest.update(f"{path.relative_to(folder)}\0".encode())
            digest.update(content_of(path))
            count += 1
    return count


def content_of(path: Path) -> bytes:
    """What the build would take of an entry: a link's target text, a regular file's bytes; a
    device or FIFO only by its kind (reading /dev/zero or a FIFO would never end)."""
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return b"link\0" + os.readlink(path).encode()
        if not stat.S_ISREG(info.st_mode):
            return f"special {stat.S_IFMT(info.st_mode)}".encode()
        digest = hashlib.sha256()
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW | os.O_NONBLOCK)) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.digest()
    except OSError:
        return b"unreadable"


def provably_absent(path: str) -> bool:
    """lstat says ENOENT, and the nearest ancestor that exists is a directory we can read and
    search: then the name is really not there. lexists alone is also false when a folder on the
    way cannot be searched (EACCES), loops (ELOOP) or fails (EIO): those count as present, as
    does an ancestor that is a dangling symlink (a mount point not mounted now, say)."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    ancestor = os.path.dirname(os.path.normpath(path))
    while True:
        try:
            os.lstat(ancestor)
            break
        except FileNotFoundError:
            ancestor = os.path.dirname(ancestor)
        except OSError:
            return False
    try:
        found = os.stat(ancestor)  # followed: /home -> /data/home is a folder, a dangling link is not
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and os.access(ancestor, os.R_OK | os.X_OK)
