"""The run backends' contract: `local` (this machine's engine) and `slurm` (the test cluster of
scripts/slurm-up: one node, GRES gpu:2) go through the same cases, driven through the CLI alone
and judged by what `runs --json`, `logs` and the runs' own data files say. Then the cases that
only Slurm has: a login node without GPUs, options Slurm cannot honour, priority as Slurm's nice
value, verify's stop-on-failure, and the on-commit check following the repo's backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import slurm_cluster, slurm_jobs_of, wait_for

CLI_TIMEOUT = 180  # seconds: a command of these cases that has not ended by then hangs (one took 90 on a loaded 2-core machine)
ERROR = "git-gpuspace: error:"
# A run's command that waits (at most 30 s) until the test drops `go` in its data dir
WAIT_FOR_GO = "i=0; while [ ! -e /data/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "


BACKGROUND: list[subprocess.Popen] = []  # this test's commands in the background, killed after it


@pytest.fixture(autouse=True)
def no_command_outlives_its_test():
    yield
    while BACKGROUND:
        process = BACKGROUND.pop()
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(params=["local", "slurm"])
def backend(request, monkeypatch, tmp_path, repo):
    """Where this case's runs go, passed as `--backend`. (After `repo`: its jobs are cancelled
    before the repo's containers are removed.)"""
    if request.param == "local":
        yield "local"
        return
    for _ in slurm_cluster(monkeypatch, tmp_path):
        yield "slurm"


@pytest.fixture
def cluster(monkeypatch, tmp_path, repo):
    yield from slurm_cluster(monkeypatch, tmp_path)


def in_squeue(job: str) -> bool:
    listed = subprocess.run(["squeue", "--noheader", "--array", "--user", str(os.getuid()), "--format=%i"],
                            capture_output=True, text=True).stdout.split()
    return job in listed


def cli(repo, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """`git gpuspace ARGS` in the repo, as conftest's `repo.gs`, but never waited for past `timeout`."""
    try:
        return subprocess.run(["git-gpuspace", *args], cwd=repo.path, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"git gpuspace {' '.join(args)} still running after {timeout}s:\n"
                    f"{_text(expired.stdout)}\n{_text(expired.stderr)}")


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def ok(repo, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    result = cli(repo, *args, env=env, timeout=timeout)
    assert result.returncode == 0, f"git gpuspace {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def fails(repo, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """A command that must exit non-zero, as an error of ours (never a Python traceback)."""
    result = cli(repo, *args, env=env, timeout=timeout)
    assert result.returncode != 0, f"git gpuspace {' '.join(args)} succeeded:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def submitted(repo, run_id: str, *args: str) -> subprocess.Popen:
    """`git gpuspace ARGS` in the background, once its run `run_id` is queued (so that the next
    submission's id is the next one)."""
    process = subprocess.Popen(["git-gpuspace", *args], cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    BACKGROUND.append(process)
    if not wait_for(lambda: any(r["id"] == run_id for r in runs(repo)) or process.poll() is not None, 30) \
            or not any(r["id"] == run_id for r in runs(repo)):
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"git gpuspace {' '.join(args)} queued no {run_id}:\n{out}\n{err}")
    return process


def runs(repo, *args: str) -> list[dict]:
    return json.loads(ok(repo, "runs", "--json", *args).stdout)


def brief(record: dict) -> str:
    """What an assertion message needs of a record (pytest cuts a whole one short)."""
    return ", ".join(f"{key}={record[key]!r}" for key in ("id", "state", "reason", "exit_code", "backend", "job"))


def one(repo, run_id: str) -> dict:
    [found] = [r for r in runs(repo) if r["id"] == run_id]
    return found


def head(repo) -> str:
    return repo.git("rev-parse", "HEAD").stdout.strip()


def log_of(repo, run_id: str) -> str:
    return ok(repo, "logs", run_id).stdout


def ended(repo, run_id: str, timeout: float = 60) -> dict:
    """The run's record once it has ended (whatever state it ended in)."""
    assert wait_for(lambda: one(repo, run_id)["state"] not in ("queued", "running"), timeout), brief(one(repo, run_id))
    return one(repo, run_id)


def lines_in(data_dir: str, name: str) -> list[str]:
    path = Path(data_dir) / name
    return path.read_text().splitlines() if path.exists() else []


# --- the same cases on both backends -------------------------------------------------------------


def test_a_run_sees_the_commit_it_was_submitted_at(repo, backend):
    repo.commit({"pinned.txt": "as submitted\n"}, "pinned")
    submitted_at = head(repo)
    submitter = submitted(repo, "run-1", "run", "--backend", backend, "--gpus", "none", "--",
                          "sh", "-c", WAIT_FOR_GO + "cat pinned.txt")
    assert wait_for(lambda: [(r["state"], bool(r["data_dir"])) for r in runs(repo)] == [("running", True)], 60), \
        [brief(r) for r in runs(repo)]
    repo.commit({"pinned.txt": "committed after the submission\n"}, "moved on")
    [record] = runs(repo)
    (Path(record["data_dir"]) / "go").write_text("")  # the command reads its file only now
    _, err = submitter.communicate(timeout=CLI_TIMEOUT)
    assert submitter.returncode == 0, err
    [record] = runs(repo)
    assert (record["state"], record["exit_code"], record["backend"]) == ("succeeded", 0, backend), brief(record)
    assert record["commit"] == submitted_at != head(repo)
    assert log_of(repo, record["id"]) == "as submitted\n"


def test_the_commands_exit_code_is_the_runs(repo, backend):
    passing = submitted(repo, "run-1", "run", "--backend", backend, "--gpus", "none", "--", "true")
    failed = fails(repo, "run", "--backend", backend, "--gpus", "none", "--", "sh", "-c", "exit 3")  # meanwhile
    record = one(repo, "run-2")
    assert (record["state"], record["exit_code"]) == ("failed", 3), (brief(record), failed.stderr)
    _, err = passing.communicate(timeout=CLI_TIMEOUT)
    assert passing.returncode == 0, err
    record = one(repo, "run-1")
    assert (record["state"], record["exit_code"]) == ("succeeded", 0), brief(record)


def test_stop_ends_a_running_run_and_nothing_of_it_runs_on(repo, backend):
    ok(repo, "run", "--backend", backend, "--gpus", "none", "--detach", "--", "sleep", "300")
    [record] = runs(repo)
    assert wait_for(lambda: one(repo, record["id"])["state"] == "running", 60), brief(one(repo, record["id"]))
    ok(repo, "runs", "stop", record["id"])
    assert wait_for(lambda: one(repo, record["id"])["state"] == "stopped", 30), brief(one(repo, record["id"]))

    def containers_running() -> list:
        return repo.client.containers.list(ignore_removed=True, filters={"label": [f"gpuspace.repo={repo.common_dir}",
                                                              f"gpuspace.run={record['id']}"]})
    # a Slurm job's container runs on its node's engine: here, this machine's
    assert wait_for(lambda: containers_running() == [], 30), [c.name for c in containers_running()]
    if backend == "slurm":
        job = one(repo, record["id"])["job"]
        assert job and wait_for(lambda: not in_squeue(job), 30), f"job {job} still in squeue"


def test_retries_and_retry_run_a_failed_run_again(repo, backend):
    # fails the first time, succeeds the second: the marker in /data outlives the container
    twice = "if [ -e /data/tried ]; then echo second try; exit 0; fi; touch /data/tried; echo first try; exit 1"
    flaky = submitted(repo, "run-1", "run", "--backend", backend, "--gpus", "none", "--retries", "1", "--",
                      "sh", "-c", twice)
    # meanwhile, one that fails, to be run again by `runs retry`
    fails(repo, "run", "--backend", backend, "--gpus", "none", "--", "sh", "-c",
          "echo try >> /data/tries; [ $(wc -l < /data/tries) -ge 2 ]")
    _, err = flaky.communicate(timeout=CLI_TIMEOUT)
    record = one(repo, "run-1")
    assert (record["state"], record["exit_code"]) == ("succeeded", 0), (brief(record), err)
    assert flaky.returncode == 0, err
    assert log_of(repo, "run-1").endswith("second try\n")

    failed = one(repo, "run-2")
    assert (failed["state"], failed["exit_code"]) == ("failed", 1), brief(failed)
    ok(repo, "runs", "retry", "run-2")
    again = ended(repo, "run-2")
    assert (again["state"], again["exit_code"]) == ("succeeded", 0), brief(again)
    assert lines_in(again["data_dir"], "tries") == ["try", "try"]


@pytest.mark.parametrize("moment", ["submitting", "started"])
def test_resume_after_the_submitter_died_ends_every_run_once(repo, backend, moment, tmp_path):
    point = {"submitting": "after-runs-reserved",  # runs recorded `preparing`, no worktree yet
             "started": {"local": "after-run-recorded", "slurm": "after-sbatch"}[backend]}[moment]
    killed = cli(repo, "sweep", "die", "-p", "n=1,2", "--backend", backend, "--gpus", "none", "--",
                 "sh", "-c", "echo once >> /data/ran; echo n={n}",
                 env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "kill"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if backend == "slurm" and moment == "started":  # its jobs ran, and left the queue, before anyone resumed
        assert wait_for(lambda: not slurm_jobs_of(tmp_path), 120)
    ok(repo, "runs", "resume")
    records = runs(repo, "--sweep", "die")
    assert [(r["state"], r["exit_code"]) for r in records] == [("succeeded", 0)] * 2, [brief(r) for r in records]
    for record in records:
        assert lines_in(record["data_dir"], "ran") == ["once"], brief(record)
        assert log_of(repo, record["id"]) == f"n={record['params']['n']}\n"


def test_logs_print_the_runs_output_and_a_header_on_stderr(repo, backend):
    ok(repo, "run", "--backend", backend, "--gpus", "none", "--", "sh", "-c", "echo first line; echo second line")
    [record] = runs(repo)
    shown = ok(repo, "logs", record["id"])
    assert shown.stdout == "first line\nsecond line\n"
    assert shown.stderr.startswith(f"==> run {record['id']} ") and "succeeded" in shown.stderr, shown.stderr


def test_metrics_come_from_the_output(repo, backend):
    ok(repo, "run", "--backend", backend, "--gpus", "none", "--", "sh", "-c", "echo loss=0.25")
    [record] = runs(repo)
    assert record["metrics"] == {"loss": 0.25}


def test_the_repos_devcontainer_settings_apply_on_both_sides(repo, backend):
    repo.commit({".devcontainer/devcontainer.json": json.dumps({"containerEnv": {"GPUSPACE_CONTRACT": "yes"}})},
                "devcontainer")
    ok(repo, "run", "--backend", backend, "--gpus", "none", "--", "sh", "-c", 'echo "contract=$GPUSPACE_CONTRACT"')
    [record] = runs(repo)
    assert log_of(repo, record["id"]) == "contract=yes\n"


# --- Slurm only ----------------------------------------------------------------------------------


def cluster_name() -> str:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return next(line.split("=", 1)[1].strip() for line in shown.splitlines() if line.startswith("ClusterName"))


def test_a_login_node_without_gpus_submits_gpu_runs(repo, cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_DRIVER", "job-only")  # nvidia-smi fails here, answers inside a job
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")  # the node's GRES gpu:2
    assert subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 9
    ok(repo, "sweep", "login", "--backend", "slurm", "--gpus", "1", "-p", "x=1,2", "--",
       "sh", "-c", "nvidia-smi -L; echo x={x}")
    records = runs(repo, "--sweep", "login")
    assert [r["state"] for r in records] == ["succeeded"] * 2, [brief(r) for r in records]
    for record in records:
        [gpu] = record["gpus"]
        assert log_of(repo, record["id"]) == f"GPU 0: Fake H200 (UUID: {gpu})\nx={record['params']['x']}\n"

    refused = fails(repo, "sweep", "big", "--backend", "slurm", "--gpus", "3", "-p", "x=1,2", "--",
                    "sh", "-c", "echo {x}")
    errors = [line for line in refused.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and cluster_name() in errors[0], refused.stderr
    assert [r["sweep"] for r in runs(repo)] == ["login", "login"]
    assert slurm_jobs_of(tmp_path) == []


def test_runs_per_gpu_is_refused_on_slurm(repo, cluster, tmp_path):
    refused = fails(repo, "sweep", "packed", "--backend", "slurm", "--runs-per-gpu", "2", "--gpus", "1",
                    "-p", "n=1,2", "--", "sh", "-c", "echo {n}")
    errors = [line for line in refused.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "--runs-per-gpu" in errors[0], refused.stderr
    assert runs(repo) == []
    assert slurm_jobs_of(tmp_path) == []


def test_priority_is_the_jobs_nice_value(repo, cluster):
    ok(repo, "run", "--backend", "slurm", "--priority", "-5", "--gpus", "none", "--detach", "--", "sleep", "60")
    [record] = runs(repo)
    assert record["job"], brief(record)
    nice = subprocess.run(["squeue", "--noheader", "-o", "%y", "-j", record["job"]], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert nice == "5"
    ok(repo, "runs", "stop", record["id"])


def test_verify_stops_at_the_first_failure_on_slurm(repo, cluster):
    repo.commit({"broken": "x\n"}, "breaks it")
    repo.git("rm", "-q", "broken")
    repo.git("commit", "-q", "-m", "mends it")
    repo.commit({"more.txt": "more\n"}, "more")
    commits = repo.git("rev-list", "--reverse", "HEAD~3..HEAD").stdout.split()
    result = cli(repo, "verify", "HEAD~3..HEAD", "--backend", "slurm", "--", "sh", "-c", "test ! -e broken")
    assert result.returncode == 1, result.stdout + result.stderr
    said = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert said[commits[0][:7]].split()[1] == "fail", result.stdout
    assert [said[commit[:7]].split()[1:3] for commit in commits[1:]] == [["not", "run"]] * 2, result.stdout
    by_commit = {r["commit"]: r for r in runs(repo)}
    assert by_commit[commits[0]]["state"] == "failed", brief(by_commit[commits[0]])
    later = [by_commit[commit] for commit in commits[1:]]
    assert [r["state"] for r in later] == ["stopped"] * 2, [brief(r) for r in later]
    for record in later:
        if record["data_dir"]:  # never ran: nothing in its log
            assert lines_in(record["data_dir"], "logs/run.log") == [], brief(record)
        if record["job"]:
            assert wait_for(lambda: not in_squeue(record["job"]), 30), f"job {record['job']} still in squeue"


def test_an_on_commit_check_runs_on_the_repos_backend(repo, cluster):
    ok(repo, "config", "set", "backend", "slurm")
    ok(repo, "verify", "add", "oncommit", "--", "true")
    ok(repo, "verify", "on-commit", "oncommit")
    repo.commit({"checked.txt": "checked\n"}, "to be checked")
    commit = head(repo)
    assert wait_for(lambda: any(r["commit"] == commit for r in runs(repo)), 30), [brief(r) for r in runs(repo)]
    [record] = [r for r in runs(repo) if r["commit"] == commit]
    assert record["backend"] == "slurm", brief(record)
    assert wait_for(lambda: one(repo, record["id"])["job"], 30), brief(one(repo, record["id"]))
