"""The Slurm backend on the test cluster (scripts/slurm-up: one node, 2 CPUs, GRES gpu:2), driven
through the CLI: an image the nodes could not pull refused before anything is made, a watcher
killed between a failed run queued again and its new job, `runs retry`, and `runs stop` of a
sweep that is partly pending. Other suites may share the cluster: only this test's own jobs
(their comment names its repository, under tmp_path) are looked at and cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import slurm_cluster, slurm_jobs_of, wait_for

CLI_TIMEOUT = 120  # seconds: a command here that has not ended by then hangs
ERROR = "git-gpuspace: error:"


@pytest.fixture(autouse=True)
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def cli(repo, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git-gpuspace", *args], cwd=repo.path, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"git gpuspace {' '.join(args)} still running after {timeout}s:\n{expired.stdout}\n{expired.stderr}")


def ok(repo, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = cli(repo, *args, env=env)
    assert result.returncode == 0, f"git gpuspace {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def runs(repo, *args: str) -> list[dict]:
    return json.loads(ok(repo, "runs", "--json", *args).stdout)


def brief(record: dict) -> str:
    return ", ".join(f"{key}={record[key]!r}" for key in ("id", "state", "reason", "exit_code", "job", "retries")
                     if key in record)


def lines_in(data_dir: str, name: str) -> list[str]:
    path = Path(data_dir) / name
    return path.read_text().splitlines() if path.exists() else []


def test_an_image_the_nodes_could_not_pull_is_refused_before_submission(repo, tmp_path):
    image = "gpuspace-nosuch/image:1"
    refused = cli(repo, "run", "--backend", "slurm", "--image", image, "--", "true")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and f"'{image}'" in errors[0], refused.stderr
    assert runs(repo) == []
    assert slurm_jobs_of(tmp_path) == []
    made = repo.path.parent / "worktrees" / "runs"
    assert not made.exists() or list(made.iterdir()) == [], list(made.iterdir())
    assert repo.git("worktree", "list", "--porcelain").stdout.count("worktree ") == 1


def test_a_watcher_killed_between_a_retry_queued_and_its_job_runs_nothing_twice(repo, tmp_path):
    once_then_fine = "echo attempt >> /data/attempts; [ $(wc -l < /data/attempts) -ge 2 ]"
    killed = cli(repo, "run", "--backend", "slurm", "--gpus", "none", "--retries", "1", "--", "sh", "-c", once_then_fine,
                 env={"GPUSPACE_FAULT_POINT": "after-slurm-requeue", "GPUSPACE_FAULT_ACTION": "kill"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    [record] = runs(repo)
    # queued again, its retry spent, no job yet: the watcher died before submitting one
    assert (record["state"], record["job"]) == ("queued", None), brief(record)
    assert lines_in(record["data_dir"], "attempts") == ["attempt"]
    assert slurm_jobs_of(tmp_path) == []
    resumed = cli(repo, "runs", "resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    [record] = runs(repo)
    assert (record["state"], record["exit_code"]) == ("succeeded", 0), brief(record)
    assert lines_in(record["data_dir"], "attempts") == ["attempt", "attempt"]
    assert slurm_jobs_of(tmp_path) == []


def test_retry_of_a_failed_slurm_run_submits_a_new_job(repo):
    twice = "echo try >> /data/tries; [ $(wc -l < /data/tries) -ge 2 ]"
    failed = cli(repo, "run", "--backend", "slurm", "--gpus", "none", "--", "sh", "-c", twice)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [first] = runs(repo)
    assert (first["state"], first["exit_code"]) == ("failed", 1) and first["job"], brief(first)
    retried = ok(repo, "runs", "retry", first["id"])
    assert "Submitted to Slurm as job" in retried.stderr, retried.stderr
    [again] = runs(repo)
    assert (again["state"], again["exit_code"]) == ("succeeded", 0), brief(again)
    assert again["job"] and again["job"] != first["job"], (brief(first), brief(again))
    assert lines_in(again["data_dir"], "tries") == ["try", "try"]


def test_stop_of_a_slurm_sweep_with_all_stops_running_and_pending(repo, tmp_path):
    ok(repo, "sweep", "slow", "--backend", "slurm", "--gpus", "none", "--max-parallel", "1", "--detach",
       "-p", "x=1,2,3", "--", "sh", "-c", "echo x={x}; sleep 300")  # an axis must be used
    records = runs(repo, "--sweep", "slow")
    assert len(records) == 3 and all(r["job"] for r in records), [brief(r) for r in records]
    assert len({r["job"].split("_")[0] for r in records}) == 1  # one array
    assert wait_for(lambda: [r["state"] for r in runs(repo, "--sweep", "slow")].count("running") == 1, 60), \
        [brief(r) for r in runs(repo, "--sweep", "slow")]
    pending = [r["id"] for r in runs(repo, "--sweep", "slow") if r["state"] == "queued"]
    assert len(pending) == 2
    stopped = ok(repo, "runs", "stop", "--sweep", "slow", "--all")
    assert "Cancelled 3 Slurm jobs" in stopped.stdout, stopped.stdout
    assert wait_for(lambda: [r["state"] for r in runs(repo, "--sweep", "slow")] == ["stopped"] * 3, 60), \
        [brief(r) for r in runs(repo, "--sweep", "slow")]
    assert wait_for(lambda: slurm_jobs_of(tmp_path) == [], 30), slurm_jobs_of(tmp_path)
    for record in runs(repo, "--sweep", "slow"):
        ran = lines_in(record["data_dir"], "logs/run.log")
        assert ran == ([] if record["id"] in pending else [f"x={record['params']['x']}"]), (brief(record), ran)
    assert wait_for(lambda: repo.containers() == [], 30), [c.name for c in repo.containers()]


def test_a_job_sbatch_refuses_leaves_no_run_waiting(repo, tmp_path):
    """sbatch says no (an option it does not know): one line, and the run is dropped with why,
    not left queued for a job that never comes."""
    ok(repo, "config", "set", "slurm.extra", "--", "--no-such-sbatch-option")
    refused = cli(repo, "run", "--backend", "slurm", "--gpus", "none", "--", "true")
    assert refused.returncode == 1 and "sbatch refused the job" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.count("git-gpuspace: error:") == 1
    [record] = runs(repo)
    assert record["state"] == "stopped" and record["reason"].startswith("not submitted: sbatch refused the job")
    assert slurm_jobs_of(tmp_path) == []


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def running_preemptible(repo, command: str, grace: int, said: str) -> dict:
    """A preemptible run on Slurm, once its command said `said`."""
    ok(repo, "run", "--backend", "slurm", "--gpus", "none", "--preemptible", "--grace", str(grace), "--detach", "--",
       "sh", "-c", command)
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 60), brief(runs(repo)[0])
    [record] = runs(repo)
    assert wait_for(lambda: said in ok(repo, "logs", record["id"]).stdout, 60)
    return record


def test_a_preemptible_run_that_slurm_requeues_goes_on_in_its_data_dir(repo):
    attempt = ('echo "attempt restarts=$GPUSPACE_RESTARTS resume=${GPUSPACE_RESUME:-0}"; '
               'if [ -n "${GPUSPACE_RESUME:-}" ]; then echo resumed; exit 0; fi; sleep 300')
    first = running_preemptible(repo, attempt, 5, "attempt restarts=0 resume=0")
    job = first["job"]
    assert "Requeue=1" in scontrol("show", "job", job)
    scontrol("requeue", job)  # as Slurm does when it preempts a job with PreemptMode=REQUEUE
    assert wait_for(lambda: (runs(repo)[0]["state"], runs(repo)[0]["restarts"]) == ("queued", 1), 60), \
        brief(runs(repo)[0])
    [requeued] = runs(repo)
    assert requeued["job"] == job and requeued["data_dir"] == first["data_dir"], brief(requeued)
    assert requeued["exit_code"] is None and requeued["reason"].startswith("PENDING"), brief(requeued)
    listed = cli(repo, "runs").stdout
    assert "RESTARTS" in listed and "1 (" in listed, listed
    scontrol("update", f"JobId={job}", "StartTime=now")  # Slurm holds a requeued job back for a while
    assert wait_for(lambda: runs(repo)[0]["state"] == "succeeded", 90), brief(runs(repo)[0])
    [done] = runs(repo)
    assert (done["restarts"], done["exit_code"], done["job"]) == (1, 0, job), brief(done)
    assert done["lost_s"] > 0
    log = ok(repo, "logs", done["id"]).stdout  # appended: both attempts
    assert log.index("attempt restarts=0 resume=0") < log.index("attempt restarts=1 resume=1") < log.index("resumed")


def test_sigterm_to_the_job_reaches_the_command_which_checkpoints_to_data(repo):
    checkpoint = ("trap 'echo saved > /data/ckpt; exit 0' TERM; echo started; "
                  "i=0; while [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done; exit 9")
    record = running_preemptible(repo, checkpoint, 10, "started")
    # what --signal=B:TERM@grace sends before the job's time is up, and Slurm's requeue before its SIGKILL
    subprocess.run(["scancel", "--signal=TERM", "--batch", record["job"]], check=True)
    assert wait_for(lambda: runs(repo)[0]["state"] not in ("queued", "running"), 60), brief(runs(repo)[0])
    [ended] = runs(repo)
    assert lines_in(ended["data_dir"], "ckpt") == ["saved"]
    assert (ended["state"], ended["exit_code"]) == ("succeeded", 0), brief(ended)
