"""A full data disk is a run's failure, not the dispatcher's (issue #24): the run that fills it
fails with a reason naming the disk, the queue goes on, `interrupted` is kept for a container
killed from outside, and `runs clean --purge` keeps only what it cannot prove is ours. The data
root is a real 16 MB tmpfs; runs go on the real engine."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import unavailable, wait_for

from git_gpuspace import data_dirs
from git_gpuspace.errors import GpuspaceError


def runs(repo):
    return json.loads(repo.ok("runs", "--json").stdout)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs of the test's own, unmounted after (lazily: a container may still hold it)."""
    if os.getuid() != 0:
        unavailable("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Write zeros to `disk` until it takes no more."""
    with open(disk / "fill", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass


def full(disk) -> bool:
    found = os.statvfs(disk)
    return found.f_bavail * found.f_frsize < 1 << 20


def test_a_full_data_disk_fails_the_run_that_filled_it_and_the_queue_goes_on(repo, small_disk):
    """The row as reported: the data root (the repo's setting) on a small disk, and a run that
    fills it. Before: the dispatcher crashed (exit 70) with runs left running and queued, the
    filling run was `interrupted` with exit code 0, and `runs clean --purge` refused every run."""
    repo.ok("config", "set", "data_root", str(small_disk))
    result = repo.gs("sweep", "full", "-p", "n=1,2,3", "--max-parallel", "1", "--gpus", "1", "--", "sh", "-c",
                     # 1 deletes its owner mark (a container can), 2 fills the disk and exits 0
                     "case {n} in 1) rm /data/.gpuspace/owner;; 2) dd if=/dev/zero of=/data/fill bs=1M count=20;; esac;"
                     " echo n={n}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    first, second, third = runs(repo)
    assert (first["state"], first["exit_code"]) == ("succeeded", 0)
    # it ended, but its log was not all kept: failed for the disk, with its command's exit code
    assert (second["state"], second["exit_code"]) == ("failed", 0)
    assert second["reason"] == f"no space left on device in /data ({second['data_dir']})"
    # the next could not even be started: its failure, and nothing of it is left on the disk
    assert third["state"] == "failed" and third["exit_code"] is None and third["data_dir"] is None
    assert third["reason"].startswith(f"could not start: cannot make the data dir {small_disk}/")
    assert third["reason"].endswith(": no space left on device")
    assert sorted(os.listdir(small_disk)) == sorted(os.path.basename(r["data_dir"]) for r in (first, second))
    assert repo.containers() == []

    cleaned = repo.gs("runs", "clean", "--purge")
    assert cleaned.returncode == 0, cleaned.stderr  # kept what is maybe not ours, as git clean skips a nested repo
    assert f"kept {first['data_dir']}: it is not a data dir git-gpuspace made" in cleaned.stderr
    assert "Removed 3 finished runs and their data, but kept 1 data dir" in cleaned.stdout
    assert os.path.isdir(first["data_dir"]) and not os.path.exists(second["data_dir"])
    assert [r["cleaned"] for r in runs(repo)] == [True] * 3  # their records stay


def test_a_run_killed_from_outside_on_a_full_disk_is_interrupted(repo, small_disk):
    """A full disk does not make every ended run the disk's: one whose container was killed
    before its command ended is `interrupted`, with no exit code (not the kill's 137)."""
    repo.ok("config", "set", "data_root", str(small_disk))
    running = subprocess.Popen(["git-gpuspace", "run", "--gpus", "none", "--", "sh", "-c",
                                "dd if=/dev/zero of=/data/fill bs=1M count=20; sleep 60"],
                               cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: full(small_disk), 30)
        [container] = repo.containers()
        container.kill()
        assert running.wait(timeout=60) == 1
    finally:
        running.kill()
    [record] = runs(repo)
    assert (record["state"], record["reason"], record["exit_code"]) == ("failed", "interrupted", None)


def test_a_data_dir_the_disk_does_not_take_is_one_line_and_undone(repo, small_disk, tmp_path):
    fill(small_disk)
    with pytest.raises(GpuspaceError) as refused:
        data_dirs.create_data_dir(small_disk, "gpuspace-x")
    assert str(refused.value) == f"cannot make the data dir {small_disk}/gpuspace-x: no space left on device"
    assert "free some space" in refused.value.hint
    assert os.listdir(small_disk) == ["fill"]  # nothing half-made is left

    # `add` says so in one line and leaves nothing behind
    repo.ok("config", "set", "data_root", str(small_disk))
    added = repo.gs("add", "-b", "x", str(tmp_path / "x"), "--gpus", "none", "--no-start")
    assert added.returncode == 1 and "Traceback" not in added.stderr, added.stderr
    assert f"error: cannot make the data dir {small_disk}/" in added.stderr
    assert os.listdir(small_disk) == ["fill"] and not (tmp_path / "x").exists()

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(GpuspaceError, match=r"cannot make the data dir .*/gpuspace-y: read-only file system$"):
        data_dirs.create_data_dir(small_disk, "gpuspace-y")
