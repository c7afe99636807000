"""Runs and sweeps on the test Slurm cluster (scripts/slurm-up: one node, GRES gpu:2 on stand-in
devices), each run's container on this machine's engine with the GPU Slurm gave its job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import SLURM_CONF, overlap, slurm_cluster, wait_for



@pytest.fixture(autouse=True)
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def test_a_2x2_sweep_on_two_slurm_gpus(repo):
    result = repo.gs("sweep", "grid", "-p", "lr=1,2", "-p", "bs=a,b", "--gpus", "1", "--backend", "slurm", "--",
                     "sh", "-c", "echo ran {lr}{bs} on $NVIDIA_VISIBLE_DEVICES; sleep 2; echo loss={lr}")
    assert result.returncode == 0, result.stderr
    assert "Submitted to Slurm as job" in result.stderr
    records = runs(repo, "--sweep", "grid")
    assert [r["state"] for r in records] == ["succeeded"] * 4
    assert all(r["backend"] == "slurm" and "_" in r["job"] for r in records)
    assert len({r["job"].split("_")[0] for r in records}) == 1  # one job array
    assert overlap(records) <= 2
    for record in records:
        [gpu] = record["gpus"]
        log = repo.ok("logs", record["id"]).stdout
        assert log.count("ran ") == 1 and f"on {gpu}" in log
    assert sorted(r["metrics"]["loss"] for r in records) == [1, 1, 2, 2]
    assert "JOB" in repo.ok("runs", "--sweep", "grid").stdout
    assert repo.containers() == []


def test_a_failing_run_and_its_exit_code(repo):
    result = repo.gs("run", "--gpus", "none", "--backend", "slurm", "--", "sh", "-c", "exit 7")
    assert result.returncode == 1
    [record] = runs(repo)
    assert (record["state"], record["exit_code"]) == ("failed", 7)


def test_pending_for_resources_then_stopped(repo):
    repo.ok("run", "--gpus", "2", "--backend", "slurm", "--detach", "--", "sleep", "60")
    repo.ok("run", "--gpus", "1", "--backend", "slurm", "--detach", "--", "sleep", "60")
    assert wait_for(lambda: [r["state"] for r in runs(repo)] == ["running", "queued"], 30), runs(repo)
    # Slurm's reason as squeue gives it: Resources, or Priority after some scheduler passes
    assert wait_for(lambda: re.search(r"queued +PENDING \((Resources|Priority)\)", repo.ok("runs").stdout), 30), \
        repo.ok("runs").stdout
    stopped = repo.ok("runs", "stop", runs(repo)[0]["id"])
    assert "Cancelled 1 Slurm job" in stopped.stdout
    assert wait_for(lambda: runs(repo)[0]["state"] == "stopped", 30)
    assert wait_for(lambda: runs(repo)[1]["state"] == "running", 30)  # its GPU freed
    repo.ok("runs", "stop", runs(repo)[1]["id"])
    assert wait_for(lambda: runs(repo)[1]["state"] == "stopped", 30)
    assert wait_for(lambda: repo.containers() == [], 30)


@pytest.mark.parametrize("moment", ["after-sbatch", "while following"])
def test_resume_after_the_submitter_is_killed_submits_nothing_twice(repo, moment):
    env = {**os.environ, **({"GPUSPACE_FAULT_POINT": "after-sbatch"} if moment == "after-sbatch" else {})}
    submitter = subprocess.Popen(["git-gpuspace", "sweep", "k", "-p", "n=1,2,3", "--gpus", "1", "--backend", "slurm",
                                  "--", "sh", "-c", "echo run {n}; sleep 2"], cwd=repo.path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if moment == "while following":
        assert wait_for(lambda: any(r["job"] for r in runs(repo)), 30)
        submitter.send_signal(signal.SIGKILL)
    assert submitter.wait(timeout=60) == -signal.SIGKILL
    resumed = repo.gs("runs", "resume")
    assert resumed.returncode == 0, resumed.stderr
    records = runs(repo, "--sweep", "k")
    assert [r["state"] for r in records] == ["succeeded"] * 3
    assert len({r["job"].split("_")[0] for r in records}) == 1  # the one array, found again by its comment
    for record in records:
        assert repo.ok("logs", record["id"]).stdout.count("run ") == 1
    time.sleep(0.5)


def test_verify_on_slurm_writes_the_same_notes(repo):
    repo.ok("verify", "add", "tests", "--gpus", "1", "--", "sh", "-c", "test ! -e broken")
    (repo.path / "broken").write_text("x\n")
    repo.git("add", "broken")
    repo.git("commit", "-q", "-m", "broken")
    result = repo.gs("verify", "HEAD~1..HEAD", "--name", "tests", "--backend", "slurm")
    assert result.returncode == 1 and " fail broken" in result.stdout, result.stdout + result.stderr
    shown = repo.git("log", "--notes=gpuspace/tests", "-1").stdout
    assert "Notes (gpuspace/tests):\n    fail" in shown and "GPU-" in shown


def test_a_job_cancelled_behind_our_back_says_so_and_logs_follow_the_file(repo):
    repo.ok("run", "--gpus", "none", "--backend", "slurm", "--detach", "--", "sh", "-c", "echo begun; sleep 300")
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 30)
    follower = subprocess.Popen(["git-gpuspace", "logs", "-f", runs(repo)[0]["id"]], cwd=repo.path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    subprocess.run(["scancel", runs(repo)[0]["job"]], check=True)  # not `runs stop`: someone else's scancel
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0 and "begun" in out, err
    [record] = runs(repo)
    assert record["state"] == "failed" and record["reason"].startswith("CANCELLED"), record


def test_another_users_job_with_our_comment_is_neither_adopted_nor_cancelled(repo, tmp_path):
    """Anyone can give a job the comment `gpuspace:<repo>:<run>`; only our own jobs are ours."""
    from users import make_user, user_dir

    other = make_user("gpuspace-other", docker=True)
    repo.ok("config", "set", "slurm.extra", "--", "--hold")  # our jobs stay pending: stopped at once, no container
    killed = repo.gs("run", "--gpus", "none", "--backend", "slurm", "--detach", "--", "sleep", "300",
                     env={"GPUSPACE_FAULT_POINT": "after-sbatch"})  # submitted, its job id not written down
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [record] = runs(repo)
    prefix = f"gpuspace:{repo.common_dir}:"
    [ours] = [line.split("|")[0] for line in subprocess.run(["squeue", "--me", "-h", "-o", "%i|%k"], capture_output=True,
                                                             text=True, check=True).stdout.splitlines()
              if line.split("|", 1)[1].startswith(prefix)]
    subprocess.run(["scancel", ours], check=True)  # so that the only job with its comment is the other user's
    assert wait_for(lambda: ours not in squeue("%i"), 30)
    theirs = other.run("sbatch", "--parsable", f"--comment={prefix}{record['id']}", "--output=/dev/null", "--wrap",
                       "sleep 300", cwd=user_dir(other, tmp_path), env={"SLURM_CONF": str(SLURM_CONF)})
    assert theirs.returncode == 0, theirs.stderr
    theirs = theirs.stdout.strip().split(";")[0]
    try:
        resume = subprocess.Popen(["git-gpuspace", "runs", "resume"], cwd=repo.path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: runs(repo)[0]["job"], 30), runs(repo)
        assert runs(repo)[0]["job"] != theirs  # submitted anew, not adopted
        stopped = repo.ok("runs", "stop", record["id"])
        assert theirs not in stopped.stdout
        assert resume.wait(timeout=60) is not None
        assert wait_for(lambda: runs(repo)[0]["state"] == "stopped", 30), runs(repo)
        assert theirs in squeue("%i")  # their job goes on
    finally:
        subprocess.run(["scancel", theirs], capture_output=True)


def squeue(fmt: str) -> list[str]:
    """Every user's jobs, one field each."""
    return subprocess.run(["squeue", "-h", "-o", fmt], capture_output=True, text=True, check=True).stdout.split()


def test_stop_cancels_no_job_of_another_user_even_one_the_queue_names(repo, tmp_path):
    """A queue file that names another user's job (adopted by a version that did not look at the
    user) makes `runs stop` end our record of it, not their job."""
    from git_gpuspace.runs import store
    from users import make_user, user_dir

    other = make_user("gpuspace-other", docker=True)
    repo.ok("config", "set", "slurm.extra", "--", "--hold")  # our own job stays pending: no task of it writes the queue
    repo.ok("run", "--gpus", "none", "--backend", "slurm", "--detach", "--", "sleep", "300")
    [record] = runs(repo)
    theirs = other.run("sbatch", "--parsable", f"--comment=gpuspace:{repo.common_dir}:{record['id']}", "--output=/dev/null",
                       "--wrap", "sleep 300", cwd=user_dir(other, tmp_path), env={"SLURM_CONF": str(SLURM_CONF)})
    assert theirs.returncode == 0, theirs.stderr
    theirs = theirs.stdout.strip().split(";")[0]
    try:
        with store.locked(repo.common_dir) as queue:
            queue.find(record["id"]).job = theirs
            queue.save()
        repo.ok("runs", "stop", record["id"])
        assert wait_for(lambda: runs(repo)[0]["state"] == "stopped", 30), runs(repo)
        assert theirs in squeue("%i")
    finally:
        subprocess.run(["scancel", theirs, record["job"]], capture_output=True)


def test_a_run_submitted_again_since_another_commands_look_at_squeue_is_not_ended_by_it(repo):
    """Two commands of one repo watch its Slurm runs: one resubmits a run (a retry) after the other
    has listed squeue, which cannot know the new job. The older look leaves that run alone."""
    twice = "if [ -e /data/tried ]; then sleep 3; echo second try; exit 0; fi; touch /data/tried; sleep 2; exit 1"
    repo.ok("run", "--gpus", "none", "--backend", "slurm", "--retries", "1", "--detach", "--", "sh", "-c", twice)
    [record] = runs(repo)
    first_job = record["job"]
    # between its squeue and its look at the store, another command ends the first try and submits the second
    resubmitted = (f"env -u GPUSPACE_FAULT_POINT git-gpuspace runs --json | {sys.executable} -c "
                   f"'import json, sys; sys.exit(json.load(sys.stdin)[0][\"job\"] in (None, \"{first_job}\"))'")
    looker = repo.gs("runs", env={"GPUSPACE_FAULT_POINT": "slurm-listed", "GPUSPACE_FAULT_ACTION":
                                  f"run:for i in $(seq 300); do {resubmitted} && break; sleep 0.2; done"})
    assert looker.returncode == 0, looker.stderr
    [record] = runs(repo)
    assert record["job"] != first_job and record["state"] in ("queued", "running"), record
    assert wait_for(lambda: runs(repo)[0]["state"] != "queued" and runs(repo)[0]["state"] != "running", 60)
    [record] = runs(repo)
    assert (record["state"], record["exit_code"]) == ("succeeded", 0), record
    assert repo.ok("logs", record["id"]).stdout.endswith("second try\n")
