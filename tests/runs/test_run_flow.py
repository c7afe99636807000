"""A run as an ML engineer meets it: where its worktree goes, why it waits, its output in the
foreground, its times after a resume, and a stop that comes as it ends. Real git, real engine;
GPUs from the stand-in nvidia-smi."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from conftest import _remove_containers, make_repo, wait_for


def runs(repo, *args):
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def dispatcher_pid(repo) -> int | None:
    from git_gpuspace.runs.at_work import dispatcher_pid as pid_of

    return pid_of(repo.common_dir)


def test_two_repos_side_by_side_both_run(tmp_path, docker_client):
    """~/x/ml and ~/x/bench each have a run-1: their worktrees never meet."""
    ml = make_repo(tmp_path / "x" / "ml", docker_client)
    bench = make_repo(tmp_path / "x" / "bench", docker_client)
    try:
        ml.ok("run", "--gpus", "none", "--", "true")
        second = bench.gs("run", "--gpus", "none", "--", "true")
        assert second.returncode == 0, second.stderr
        [first_record], [second_record] = runs(ml), runs(bench)
        assert first_record["id"] == second_record["id"] == "run-1"
        assert first_record["worktree"] != second_record["worktree"]
        assert Path(second_record["worktree"]).is_relative_to(tmp_path / "x" / "worktrees")
        # each an ordinary worktree of its own repo
        assert second_record["worktree"] in bench.git("worktree", "list").stdout
        assert second_record["worktree"] not in ml.git("worktree", "list").stdout
    finally:
        _remove_containers(docker_client, ml)
        _remove_containers(docker_client, bench)


def test_a_path_taken_by_hand_is_passed_over(repo):
    taken = repo.path.parent / "worktrees" / "runs" / repo.path.name / "run-1"
    taken.mkdir(parents=True)
    (taken / "mine.txt").write_text("a user's file\n")
    repo.ok("run", "--gpus", "none", "--", "true")
    [record] = runs(repo)
    assert record["id"] == "run-2" and record["state"] == "succeeded"
    assert (taken / "mine.txt").read_text() == "a user's file\n"


def test_a_waiting_run_says_what_it_waits_for(repo):
    """Like Slurm's PENDING (Resources): who holds the GPUs, on stderr and in the run's record."""
    repo.ok("add", "--no-start", "--gpus", "4", "-b", "hold", "../bw/hold")
    waiting = subprocess.Popen(["git-gpuspace", "run", "--gpus", "1", "--", "echo", "ran"], cwd=repo.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (runs(repo) or [{}])[0].get("reason", "") or "" != "", 30)
        [record] = runs(repo)
        hold = (repo.path.parent / "bw" / "hold").resolve()
        assert record["state"] == "queued"
        assert record["reason"] == f"waiting for 1 GPU: GPUs 0-3 held by {hold} (hold)"
        repo.ok("remove", "--force", "../bw/hold")
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert f"run-1 waiting for 1 GPU: GPUs 0-3 held by {hold} (hold)" in err
    [record] = runs(repo)
    assert record["state"] == "succeeded" and record["reason"] is None


def test_runs_behind_a_waiting_one_and_over_the_limit_say_so(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    repo.ok("add", "--no-start", "--gpus", "1", "-b", "hold", "../bw/hold")
    repo.ok("sweep", "wait", "-p", "n=1,2,3", "--gpus", "1", "--detach", "--", "true")
    assert wait_for(lambda: all(r["reason"] for r in runs(repo)), 30)
    reasons = {r["id"]: r["reason"] for r in runs(repo)}
    assert reasons["wait-1"].startswith("waiting for 1 GPU: GPU 0 held by ")
    assert reasons["wait-2"] == reasons["wait-3"] == "waiting: behind an earlier run"
    repo.ok("runs", "stop", "--sweep", "wait", "--all")
    assert wait_for(lambda: dispatcher_pid(repo) is None, 30)


def test_a_foreground_run_streams_its_output(repo):
    result = subprocess.run(["git-gpuspace", "run", "--gpus", "none", "--", "sh", "-c",
                             "echo first line; sleep 0.5; echo second line; echo to stderr >&2"],
                            cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "first line" in lines and "second line" in lines and "to stderr" in lines
    # all of its output before the line that says how it ended
    ended = next(i for i, line in enumerate(lines) if line.startswith("run-1 succeeded"))
    assert max(lines.index("first line"), lines.index("second line"), lines.index("to stderr")) < ended
    split = repo.gs("run", "--gpus", "none", "--", "echo", "on stdout")
    assert split.stdout == "on stdout\n"  # its output on stdout, ours on stderr
    assert "run-2 started" in split.stderr and "on stdout" not in split.stderr.splitlines()
    quiet = repo.gs("run", "--gpus", "none", "--quiet", "--", "echo", "not shown")
    assert quiet.returncode == 0 and quiet.stdout == "" and "run-3 succeeded" in quiet.stderr


def test_a_foreground_sweep_shows_one_line_per_run_and_how_to_follow_one(repo):
    result = repo.gs("sweep", "s", "-p", "n=1,2", "--gpus", "none", "--", "echo", "out {n}")
    assert result.returncode == 0, result.stderr
    assert "out 1" not in result.stdout and "out 2" not in result.stdout
    assert "`git gpuspace logs -f s-1` follows a run's output" in result.stderr
    assert "s-1 started" in result.stderr and "s-2 succeeded" in result.stderr


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_times_after_a_resume_are_the_runs_own(repo):
    """A dispatcher killed mid-run, resumed later: the run's times are the engine's, not when
    the next dispatcher looked."""
    # it goes on for 2 s once the test says so (a file in its data dir), after its dispatcher is gone
    repo.ok("run", "--detach", "--gpus", "none", "--", "sh", "-c", "while [ ! -e /data/go ]; do sleep 0.05; done; sleep 2")
    assert wait_for(lambda: runs(repo)[0]["state"] == "running" and dispatcher_pid(repo) is not None, 30)
    os.kill(dispatcher_pid(repo), signal.SIGKILL)
    assert wait_for(lambda: dispatcher_pid(repo) is None, 10)
    (Path(runs(repo)[0]["data_dir"]) / "go").touch()
    told = time.time()
    time.sleep(5)  # the run ends meanwhile; nobody records it
    assert runs(repo)[0]["state"] == "running"
    resumed = time.time()
    repo.ok("runs", "resume")
    [record] = runs(repo)
    assert record["state"] == "succeeded"
    finished = datetime.fromisoformat(record["finished"]).timestamp()
    assert told + 1.9 <= finished < min(told + 3.5, resumed), record
    [container_times] = [(_moment(record["started"]), _moment(record["finished"]))]
    assert container_times[1] < datetime.now(container_times[1].tzinfo)


def test_a_stop_that_comes_as_the_run_succeeds_records_success(repo):
    """`runs stop` of a run whose command already ended with 0 (nobody recorded it yet)."""
    # it ends when the test says so (a file in its data dir): after its dispatcher is gone
    repo.ok("run", "--detach", "--gpus", "none", "--", "sh", "-c", "while [ ! -e /data/go ]; do sleep 0.1; done")
    assert wait_for(lambda: runs(repo)[0]["state"] == "running" and dispatcher_pid(repo) is not None, 30)
    os.kill(dispatcher_pid(repo), signal.SIGKILL)
    data_dir = Path(runs(repo)[0]["data_dir"])
    (data_dir / "go").touch()
    assert wait_for(lambda: (data_dir / ".gpuspace" / "exit").read_text().strip() == "0", 30)
    stopped = repo.ok("runs", "stop", "run-1")
    [record] = runs(repo)
    assert record["state"] == "succeeded" and record["exit_code"] == 0, (stopped.stdout, record)


def test_a_run_stopped_while_its_command_runs_is_stopped(repo):
    repo.ok("run", "--detach", "--gpus", "none", "--", "sleep", "60")
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 30)
    repo.ok("runs", "stop", "run-1")
    [record] = runs(repo)
    assert record["state"] == "stopped"


def test_the_log_of_a_purged_run_says_where_it_went(repo):
    repo.ok("run", "--gpus", "none", "--", "echo", "hello")
    repo.ok("runs", "clean", "--purge")
    gone = repo.gs("logs", "run-1")
    assert gone.returncode == 2 and "run run-1 has no log: its data dir was deleted by `runs clean --purge`" in gone.stderr


def test_status_summarizes_live_runs_not_cleaned_ones(repo):
    repo.ok("sweep", "done", "-p", "n=1,2", "--gpus", "none", "--", "true")
    assert "sweep done: 2 succeeded" in repo.ok("status").stdout
    repo.ok("runs", "clean")
    assert "sweep done" not in repo.ok("status").stdout
    assert [r["cleaned"] for r in runs(repo)] == [True, True]
