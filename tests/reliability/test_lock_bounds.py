"""A lock held by someone else fails after a bound, naming the holder, instead of hanging.

The GPU claim is no file lock: its bound is tested in test_claim.py."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from git_gpuspace.errors import LockTimeout
from git_gpuspace.locking import file_lock, lock_timeout


@contextlib.contextmanager
def held_by_flock(path: Path):
    """Hold `path` from a `flock` process (as any local user could); kill it at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Its own session, so killing the group also ends the `sleep` that inherits the lock.
    holder = subprocess.Popen(["flock", str(path), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it really holds the lock
            with file_lock(path, wait=False) as free:
                if not free:
                    break
            assert time.monotonic() < deadline and holder.poll() is None, "flock never took the lock"
            time.sleep(0.02)
        yield holder
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the `sleep` holds the lock until the kernel reaps it
            with file_lock(path, wait=False) as free:
                if free:
                    break
            time.sleep(0.02)


def test_timeout_names_the_path_and_the_holder(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUSPACE_LOCK_TIMEOUT", raising=False)
    path = tmp_path / "some.lock"
    with held_by_flock(path) as holder:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            with file_lock(path, timeout=0.5):
                pytest.fail("took a lock someone else holds")
        assert 0.5 <= time.monotonic() - started < 3
    message = str(caught.value)
    assert "\n" not in message
    assert f"timed out after 0.5 s waiting for the lock {path}" in message
    user = pwd.getpwuid(os.getuid()).pw_name
    assert f"held by pid {holder.pid} ({user}: flock {str(path)[:20]}" in message  # command shortened
    assert message.endswith("...)") and len(message) < len(str(path)) * 2 + 80
    assert caught.value.exit_code == 1 and caught.value.hint


def test_no_wait_still_answers_at_once(tmp_path):
    path = tmp_path / "some.lock"
    with held_by_flock(path):
        started = time.monotonic()
        with file_lock(path, wait=False, timeout=5) as held:
            assert held is False
        assert time.monotonic() - started < 0.5
    with file_lock(path, wait=False) as held:
        assert held is True


def test_lock_is_taken_once_released(tmp_path):
    path = tmp_path / "some.lock"
    with held_by_flock(path) as holder:
        os.killpg(holder.pid, signal.SIGKILL)
        with file_lock(path, timeout=5) as held:
            assert held is True
            fd = os.open(path, os.O_RDONLY)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)


@pytest.mark.parametrize("value,expected", [("2", 2.0), ("0.25", 0.25), ("0", 0.0), ("", 30), ("soon", 30), ("-1", 30), ("nan", 30), ("inf", 30)])
def test_env_overrides_the_bound_and_bad_values_fall_back(monkeypatch, value, expected):
    monkeypatch.setenv("GPUSPACE_LOCK_TIMEOUT", value)
    assert lock_timeout(30) == expected

