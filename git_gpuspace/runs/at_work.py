"""Who is at work on a repo's queue: its dispatcher (one, holding the dispatch lock while it
lives) and its submitters (each holding the submit lock shared while it makes its runs). The
locks live in the user's state dir, outside the git dir: a container cannot hold them. Light on
purpose: `runs` and `status` ask without loading the engine's client."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator

import platformdirs

from ..config import APP_NAME
from ..locking import file_lock, holder_pids
from . import store as run_store
from .model import PREPARING


def lock_path(common_dir: Path) -> Path:
    digest = hashlib.sha256(str(common_dir).encode()).hexdigest()[:16]
    directory = platformdirs.user_state_path(APP_NAME) / "dispatch"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{digest}.lock"


def alive(common_dir: Path) -> bool:
    """Is a dispatcher holding this repo's queue?"""
    with file_lock(lock_path(common_dir), wait=False) as free:
        return not free


def dispatcher_pid(common_dir: Path) -> int | None:
    """The pid of the process dispatching this repo's queue (None: none, or one we cannot see):
    the one to signal, not the `git` that started it."""
    try:
        pids = holder_pids(os.stat(lock_path(common_dir)))
    except OSError:
        return None
    return int(pids[0]) if pids else None


@contextlib.contextmanager
def submitters(common_dir: Path, exclusive: bool) -> Iterator[bool]:
    """Submitters hold this lock shared; `recover` takes it exclusive, without waiting: True
    when no submitter of this repo is alive (the kernel drops a dead one's lock)."""
    fd = os.open(lock_path(common_dir).with_suffix(".submit"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def cut_short(common_dir: Path) -> bool:
    """Are runs `preparing` with no submitter alive to finish them?"""
    if not any(run.reason == PREPARING for run in run_store.load(common_dir, states=("queued",)).runs):
        return False
    with submitters(common_dir, exclusive=True) as alone:
        return alone
