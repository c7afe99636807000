"""A run starts at most once per queue entry and its GPUs have one holder, whatever is killed
when: the dispatcher records a run's start before its container can run, and the next one adopts
that container instead of making it anew. A submission cut short is finished by `resume`."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from kills import COMMAND, campaign  # noqa: E402


def _runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def _starts(record: dict) -> list[str]:
    path = Path(record["data_dir"]) / "starts"
    return path.read_text().splitlines() if path.exists() else []


def test_ten_random_kills_of_the_dispatcher_start_nothing_twice(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    result = campaign(repo.path, kills=10, runs=6, seconds=1.0)
    assert result.clean, result.summary()
    assert result.samples > 20 and sorted(result.starts.values()) == [1] * 6, result.summary()


def test_random_kills_with_time_slices_start_each_run_once_per_turn(repo, monkeypatch):
    """Preemption on: runs yield their GPU every second and are queued again; kill -9 at random
    moments still starts no run more than once per turn it was given, and no GPU has two."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    result = campaign(repo.path, kills=6, runs=4, seconds=3.0, time_slice=1.0)
    assert result.clean, result.summary()
    assert sorted(result.starts.values()) == [1] * 4, result.summary()
    assert sum(record["restarts"] for record in _runs(repo)) >= 2, _runs(repo)  # they did take turns


def _sweep_killed_at(repo, point: str, count: int = 2):
    command = COMMAND.replace("SECONDS", "1")
    killed = repo.gs("sweep", "dup", "-p", "i=" + ",".join(str(i) for i in range(1, count + 1)), "--gpus", "1",
                     "--", "sh", "-c", command,
                     env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "kill"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr


def test_a_start_recorded_then_killed_is_adopted_not_started_again(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    _sweep_killed_at(repo, "after-run-recorded")
    [first, second] = _runs(repo, "--sweep", "dup")
    assert (first["state"], first["reason"], second["state"]) == ("running", "starting", "queued")
    [container] = repo.containers()
    assert container.status == "created"  # in the ledger before it can run: its GPU is held
    resumed = repo.gs("runs", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "dup-1 adopted" in resumed.stderr
    records = _runs(repo, "--sweep", "dup")
    assert [r["state"] for r in records] == ["succeeded", "succeeded"]
    assert [len(_starts(r)) for r in records] == [1, 1]


def test_a_run_killed_before_its_start_was_recorded_is_queued_and_starts_once(repo, monkeypatch):
    """Its container, left made and never started, gives way to a new one of the same name: that
    one holds the GPU (the next run waits), though the old one's GPUs counted as free."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    _sweep_killed_at(repo, "after-run-container")
    assert [r["state"] for r in _runs(repo, "--sweep", "dup")] == ["queued", "queued"]
    resumed = repo.gs("runs", "resume")
    assert resumed.returncode == 0, resumed.stderr
    records = _runs(repo, "--sweep", "dup")
    assert [r["state"] for r in records] == ["succeeded", "succeeded"]
    assert [len(_starts(r)) for r in records] == [1, 1]
    first, second = sorted(_spans(r) for r in records)
    assert first[1] <= second[0], (first, second)  # one after the other on the one GPU


def _spans(record: dict) -> tuple[float, float]:
    """When the run's command started and ended (the host's uptime, as it wrote them)."""
    [start] = _starts(record)
    [end] = (Path(record["data_dir"]) / "ends").read_text().split()
    return float(start.split()[0]), float(end)


def test_a_submission_cut_short_is_finished_by_sweep_resume(repo):
    _sweep_killed_at(repo, "after-run-worktree", count=3)  # the first worktree made, two to go
    lock = repo.common_dir / "refs" / "gpuspace" / "runs" / "dup-1.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")  # as a submitter killed while it wrote the first run's ref leaves it
    listed = repo.gs("runs")
    assert "submission was cut short" in listed.stderr and "runs resume" in listed.stderr
    assert [r["reason"] for r in _runs(repo)] == ["preparing"] * 3
    resumed = repo.gs("sweep", "resume", "dup")
    assert resumed.returncode == 0, resumed.stderr
    assert "sweep dup: its submission was cut short" in resumed.stderr
    records = _runs(repo, "--sweep", "dup")
    assert [r["state"] for r in records] == ["succeeded"] * 3
    assert [len(_starts(r)) for r in records] == [1, 1, 1]
    listed = repo.git("worktree", "list", "--porcelain").stdout
    assert all(record["worktree"] in listed for record in records)
    for record in records:  # each worktree whole, as git sees it
        assert repo.git("status", "--porcelain", cwd=Path(record["worktree"])).stdout == ""


def test_a_submission_killed_mid_checkout_is_made_anew(repo):
    _sweep_killed_at(repo, "after-checkout", count=1)  # its admin dir still locked "initializing"
    [record] = _runs(repo, "--sweep", "dup")
    assert record["reason"] == "preparing" and Path(record["worktree"]).is_dir()
    resumed = repo.gs("sweep", "resume", "dup")
    assert resumed.returncode == 0, resumed.stderr
    [record] = _runs(repo, "--sweep", "dup")
    assert record["state"] == "succeeded" and len(_starts(record)) == 1
    listed = repo.git("worktree", "list", "--porcelain").stdout
    assert listed.count(record["worktree"]) == 1 and "locked" not in listed
