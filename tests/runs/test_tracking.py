"""Tracking in MLflow: the tracker (`git-gpuspace _track`) logs runs of the real engine to the
real MLflow (the repo's own SQLite store, and an `mlflow server` started here), read back with
MlflowClient; a tracker killed with SIGKILL mid-way, then another, loses and repeats nothing; the
commands that do not track never import mlflow."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import slurm_cluster, unavailable
from git_gpuspace.runs import tracking

EPOCHS = "echo epoch=1 loss=0.9; echo epoch=2 loss=0.5; echo 'epoch=3 loss=0.3'"


@pytest.fixture
def mlflow_client():
    """MlflowClient for a tracking URI; the extra is required where the engine is."""
    if not tracking.installed():
        unavailable("mlflow is not installed: pip install -e '.[test,mlflow]'")
    return tracking.open_client  # (a SQLite store's tables made under the lock the tracker takes)


def store_uri(repo) -> str:
    return f"sqlite:///{repo.common_dir / tracking.DB_NAME}"


ON = {tracking.URI_ENV: ""}  # tracking as the settings say (conftest turns it off for every other test)


def track(repo, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The tracker in the foreground, once one the dispatcher started has let go (one it started
    may still be on its way to the lock when the first is asked: then again)."""
    deadline = time.monotonic() + 120
    while True:
        assert _wait(lambda: not tracking.tracker_alive(repo.common_dir), 120)
        result = subprocess.run(["git-gpuspace", "_track", *args], cwd=repo.path, capture_output=True, text=True,
                                env={**os.environ, **ON, **(env or {})}, timeout=timeout)
        if "a tracker is already logging" not in result.stderr or time.monotonic() > deadline:
            break
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def runs_by_id(client, experiment: str) -> tuple[dict, dict]:
    """(gpuspace run id -> MLflow run, sweep name -> its parent run)."""
    from mlflow.entities import ViewType

    found = client.get_experiment_by_name(experiment)
    assert found is not None
    every = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    children = {run.data.tags["gpuspace.run"]: run for run in every if "gpuspace.run" in run.data.tags}
    parents = {run.data.tags["gpuspace.sweep"]: run for run in every
               if "gpuspace.sweep" in run.data.tags and "gpuspace.run" not in run.data.tags}
    assert len(children) + len(parents) == len(every), "a run was logged twice"
    return children, parents


def history(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


# --- pure: what a log says ----------------------------------------------------------------


def test_a_line_s_epoch_or_step_is_the_step_of_its_metrics_else_the_next_one():
    counters: dict[str, int] = {}
    points = tracking.parse("epoch=1 loss=0.9\nepoch=2 loss=0.5\nstep=7 acc: 0.25 epoch=3\n", counters)
    assert points == [("epoch", 1.0, 1), ("loss", 0.9, 1), ("epoch", 2.0, 2), ("loss", 0.5, 2),
                      ("acc", 0.25, 7), ("epoch", 3.0, 7)]
    # without a step on the line: one more than the metric's last, from 0; \r ends a line (tqdm)
    points = tracking.parse("lr=0.1\rlr=0.2 acc=0.5\n", counters)
    assert points == [("lr", 0.1, 0), ("lr", 0.2, 1), ("acc", 0.5, 8)]
    # not a number MLflow takes, nor a key: left out
    assert tracking.parse("loss=1e999 a//b=1 ok=2\n", {}) == [("ok", 2.0, 0)]


def test_only_whole_lines_are_read_while_the_run_runs():
    assert tracking.split_complete(b"a=1\nb=", final=False, full=False) == 4
    assert tracking.split_complete(b"a=1\nb=2", final=True, full=False) == 7
    assert tracking.split_complete(b"no end", final=False, full=False) == 0
    assert tracking.split_complete(b"no end", final=False, full=True) == 6  # one line fills a chunk


def test_end_values_are_the_numbers_of_metrics_json():
    assert tracking.end_values(b'{"acc": 0.8, "n": 3, "ok": true, "s": "x", "big": 1e308}') == \
        {"acc": 0.8, "n": 3.0, "big": 1e308}
    assert tracking.end_values(b"[1, 2]") == {} and tracking.end_values(b"not json") == {}


def test_artifacts_are_regular_files_only_and_bounded(tmp_path):
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "run.log").write_text("loss=1\n" * 10)
    art = data / "artifacts"
    (art / "sub").mkdir(parents=True)
    (art / "model.txt").write_text("weights")
    (art / "sub" / "big.bin").write_bytes(b"x" * 5000)
    secret = tmp_path / "secret"
    secret.write_text("host file")
    (art / "link").symlink_to(secret)
    (art / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(art / "fifo")
    into = tmp_path / "into"
    into.mkdir()
    used, skipped = tracking.collect_artifacts(str(data), into, budget=1000)
    assert (into / "gpuspace" / "run.log").read_text() == "loss=1\n" * 10
    assert (into / "model.txt").read_text() == "weights"
    assert not (into / "link").exists() and not (into / "dirlink").exists() and not (into / "fifo").exists()
    assert not (into / "sub" / "big.bin").exists()  # over the budget
    assert used == 70 + 7
    assert any("big.bin" in line for line in skipped) and any("link" in line for line in skipped)


def test_a_link_in_place_of_the_log_is_not_read(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "run.log").write_text("loss=1\n")
    (data / "logs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert tracking.open_under(data, tracking.LOG) is None


# --- cheap where it does not track -----------------------------------------------------------


def test_commands_that_do_not_track_never_import_mlflow(plain_repo):
    for verb in ("runs", "status"):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "git_gpuspace.cli", verb],
                                cwd=plain_repo.path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line]
        assert "git_gpuspace" in " ".join(imported)
        assert not any(name.split(".")[0] == "mlflow" for name in imported), verb
    probe = subprocess.run([sys.executable, "-c", "import sys\nfrom git_gpuspace.git import worktrees\nfrom git_gpuspace.runs import tracking\n"
                            "import os\nos.environ['GPUSPACE_TRACKING_URI'] = 'none'\n"
                            "print(tracking.ensure_tracker(worktrees.discover()), 'mlflow' in sys.modules)"],
                           cwd=plain_repo.path, capture_output=True, text=True)
    assert probe.stdout.split() == ["None", "False"], probe.stderr


def test_ensure_tracker_does_not_import_mlflow(plain_repo, mlflow_client):
    probe = subprocess.run([sys.executable, "-c", "import sys, time\nfrom git_gpuspace.git import worktrees\nfrom git_gpuspace.runs import tracking\n"
                            "log = tracking.ensure_tracker(worktrees.discover())\n"
                            "print(log is not None, 'mlflow' in sys.modules)"],
                           cwd=plain_repo.path, capture_output=True, text=True, env={**os.environ, **ON})
    assert probe.stdout.split() == ["True", "False"], probe.stderr
    # the tracker it started finds nothing to log and goes
    lock = tracking.lock_path(plain_repo.common_dir)
    assert _wait(lambda: not tracking.tracker_alive(plain_repo.common_dir), 120)
    assert lock.exists()


def test_a_bad_tracking_uri_is_one_line(plain_repo, mlflow_client):
    result = subprocess.run(["git-gpuspace", "_track", "--once"], cwd=plain_repo.path, capture_output=True, text=True,
                            env={**os.environ, tracking.URI_ENV: "not a uri"})
    assert result.returncode != 0
    assert result.stderr.startswith("git-gpuspace: error: tracking.uri 'not a uri' is not a tracking URI")
    assert "Traceback" not in result.stderr


def _record(repo, change) -> None:
    """Change the repo's run records as a dispatcher would (no engine: data dirs of our own)."""
    from git_gpuspace.runs import store

    with store.locked(repo.common_dir) as runs:
        change(runs)
        runs.save()


def test_a_retried_run_goes_on_in_its_mlflow_run_and_a_run_never_started_is_not_logged(plain_repo, mlflow_client,
                                                                                       tmp_path):
    from git_gpuspace.runs import model

    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    log = data / "logs" / "run.log"
    log.write_text("loss=1\nloss=2\n")
    commit = plain_repo.git("rev-parse", "HEAD").stdout.strip()

    def submit(runs):
        first = model.Run("r-1", ["python", "train.py"], commit, str(plain_repo.path), params={"lr": "0.1"})
        model.start(first, data_dir=str(data), gpus=["GPU-x"], gpu_indices=[0])
        dropped = model.Run("r-2", ["true"], commit, str(plain_repo.path))
        model.drop(dropped, "not run")
        cleaned = model.Run("r-3", ["true"], commit, str(plain_repo.path))
        model.start(cleaned)
        model.end(cleaned, 0)
        cleaned.metrics, cleaned.cleaned = {"acc": 0.5}, True
        runs.runs += [first, dropped, cleaned]

    _record(plain_repo, submit)
    track(plain_repo, "--once")
    client = mlflow_client(store_uri(plain_repo))
    children, _ = runs_by_id(client, plain_repo.path.name)
    assert set(children) == {"r-1", "r-3"}  # r-2 never ran
    assert children["r-1"].info.status == "RUNNING" and children["r-1"].data.params == {"lr": "0.1"}
    assert children["r-1"].data.tags["gpuspace.gpus"] == "GPU-x"
    assert history(client, children["r-1"], "loss") == [(0, 1.0), (1, 2.0)]
    assert children["r-3"].info.status == "FINISHED" and history(client, children["r-3"], "acc") == [(0, 0.5)]

    with open(log, "a") as output:
        output.write("loss=3\nval=7")  # its last line has no end: read once the run ended
    _record(plain_repo, lambda runs: model.end(runs.find("r-1"), 1))
    track(plain_repo, "--once")
    run = client.get_run(children["r-1"].info.run_id)
    assert run.info.status == "FAILED" and run.data.tags["gpuspace.logged"].startswith("failed:")
    assert history(client, run, "loss") == [(0, 1.0), (1, 2.0), (2, 3.0)] and history(client, run, "val") == [(0, 7.0)]

    def retry(runs):  # `runs retry`: queued again, then started in the same data dir, its log appended
        again = runs.find("r-1")
        model.requeue(again)
        model.start(again, data_dir=str(data))

    _record(plain_repo, retry)
    with open(log, "a") as output:
        output.write("\nloss=4\n")
    track(plain_repo, "--once")
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    _record(plain_repo, lambda runs: model.end(runs.find("r-1"), 0))
    track(plain_repo, "--once")
    children, _ = runs_by_id(client, plain_repo.path.name)
    assert children["r-1"].info.run_id == run.info.run_id and children["r-1"].info.status == "FINISHED"
    assert history(client, run, "loss") == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]


# --- the real engine, the real MLflow ---------------------------------------------------------


def test_a_sweep_is_a_parent_run_with_a_child_per_run(repo, mlflow_client):
    script = (f"{EPOCHS}; mkdir -p /data/artifacts; echo weights > /data/artifacts/model.txt; "
              "echo '{\"loss\": 0.3, \"acc\": 0.8}' > /data/metrics.json; echo lr={lr}")
    repo.ok("sweep", "s", "-p", "lr=0.1,0.2", "--gpus", "none", "--", "sh", "-c", script)
    failed = repo.gs("run", "--gpus", "none", "--", "sh", "-c", "echo loss=2.5; exit 3")
    assert failed.returncode != 0
    track(repo)
    client = mlflow_client(store_uri(repo))
    children, parents = runs_by_id(client, repo.path.name)
    assert set(parents) == {"s"} and len(children) == 3
    parent = parents["s"]
    assert parent.info.status == "FINISHED"
    listed = json.loads(repo.ok("runs", "--json").stdout)
    sweep_runs = [r for r in listed if r["sweep"] == "s"]
    for record in sweep_runs:
        child = children[record["id"]]
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params == record["params"]
        assert tags["mlflow.source.git.commit"] == record["commit"]
        assert tags["mlflow.source.name"].startswith("sh -c ")
        assert tags["gpuspace.run"] == record["id"] and tags["gpuspace.snapshot"] == "false"
        assert tags["gpuspace.backend"] == "local" and tags["gpuspace.host"] == socket.gethostname()
        assert tags["gpuspace.image"] and tags["gpuspace.logged"].startswith("succeeded:")
        assert tags["gpuspace.image_digest"] == repo.client.images.get(tags["gpuspace.image"]).id  # a local image: its id
        assert child.info.status == "FINISHED" and child.info.run_name == record["id"]
        assert history(client, child, "loss") == [(1, 0.9), (2, 0.5), (3, 0.3)]
        assert history(client, child, "acc") == [(0, 0.8)]  # metrics.json, at the end
        assert history(client, child, "lr") == [(0, float(record["params"]["lr"]))]
        names = {item.path for item in client.list_artifacts(child.info.run_id)}
        assert names == {"gpuspace", "model.txt"}
        assert "epoch=3 loss=0.3" in Path(client.download_artifacts(child.info.run_id, "gpuspace/run.log")).read_text()
        assert child.info.artifact_uri.startswith((repo.common_dir / tracking.ARTIFACTS_NAME).as_uri())
    failure = next(children[r["id"]] for r in listed if r["sweep"] is None)
    assert failure.info.status == "FAILED" and failure.data.tags["gpuspace.exit_code"] == "3"
    assert "mlflow.parentRunId" not in failure.data.tags
    assert history(client, failure, "loss") == [(0, 2.5)]
    # a second tracker finds it all logged: nothing twice
    track(repo, "--once")
    again, _ = runs_by_id(client, repo.path.name)
    assert {key: run.info.run_id for key, run in again.items()} == {key: run.info.run_id for key, run in children.items()}
    for run in again.values():
        assert len(client.get_metric_history(run.info.run_id, "loss")) in (1, 3)


def test_a_tracker_killed_mid_way_then_another_loses_and_repeats_nothing(repo, mlflow_client):
    lines = 20000
    repo.ok("run", "--gpus", "none", "--quiet", "--", "sh", "-c",
            f"i=0; while [ $i -lt {lines} ]; do echo \"loss=$i\"; i=$((i+1)); done")
    database = repo.common_dir / tracking.DB_NAME
    kills, partial = 0, []
    for _attempt in range(4):
        process = subprocess.Popen(["git-gpuspace", "_track"], cwd=repo.path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, **ON})
        before = _count(database)
        if _wait(lambda: _count(database) > before or process.poll() is not None, 120) and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        partial.append(_count(database))
        if _count(database) >= lines:
            break
    assert kills >= 1 and any(0 < count < lines for count in partial), partial  # killed mid-way
    track(repo)
    client = mlflow_client(store_uri(repo))
    children, _ = runs_by_id(client, repo.path.name)
    (run,) = children.values()
    steps = history(client, run, "loss")
    assert steps == [(i, float(i)) for i in range(lines)]
    assert run.info.status == "FINISHED"


def test_a_metric_is_in_mlflow_within_seconds_of_its_line(repo, mlflow_client):
    """The tracker started as the dispatcher starts it, while the run runs: each `at=<time>`
    line's metric is logged (its MLflow timestamp) within a few seconds of being printed."""
    repo.ok("run", "--gpus", "none", "--detach", "--", "sh", "-c",
            "i=0; while [ $i -lt 40 ]; do echo at=$EPOCHREALTIME; sleep 0.5; i=$((i+1)); done")
    assert _wait(lambda: json.loads(repo.ok("runs", "--json").stdout)[0]["state"] != "queued", 120)
    started = subprocess.run([sys.executable, "-c", "from git_gpuspace.git import worktrees\nfrom git_gpuspace.runs import tracking\n"
                              "print(tracking.ensure_tracker(worktrees.discover()))"],
                             cwd=repo.path, capture_output=True, text=True, env={**os.environ, **ON})
    assert started.stdout.strip() == str(tracking.log_path(repo.common_dir)), started.stderr
    client = mlflow_client(store_uri(repo))

    def logged() -> bool:
        found = client.get_experiment_by_name(repo.path.name)
        return found is not None and any(run.info.status == "FINISHED" for run in client.search_runs([found.experiment_id]))

    assert _wait(logged, 180), tracking.log_path(repo.common_dir).read_text()
    assert _wait(lambda: not tracking.tracker_alive(repo.common_dir), 60)  # nothing left: it went
    (run,) = runs_by_id(client, repo.path.name)[0].values()
    points = client.get_metric_history(run.info.run_id, "at")
    assert sorted(m.step for m in points) == list(range(40))
    # the lines printed once the tracker was logging (before, it was starting: mlflow's import)
    first = min(m.timestamp for m in points) / 1000
    delays = sorted(m.timestamp / 1000 - m.value for m in points if m.value > first)
    assert len(delays) >= 6, "the tracker started late"
    print(f"line to MLflow ({len(delays)} lines): median {delays[len(delays) // 2]:.2f} s, max {delays[-1]:.2f} s; "
          f"startup: {first - min(m.value for m in points):.2f} s")
    assert delays[-1] < 5, delays


@contextlib.contextmanager
def mlflow_server(tmp_path: Path, host: str = "127.0.0.1"):
    """A real `mlflow server` (SQLite backend) on `host`, a port of its own: its URI, once it answers."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", host, "--port",
                               str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://{host}:{port}"
    try:
        assert _wait(lambda: _get(f"{uri}/health") == 200, 120), "mlflow server did not come up"
        yield uri
    finally:
        server.terminate()
        server.wait(30)


def test_a_team_server_gets_the_runs(repo, mlflow_client, tmp_path):
    with mlflow_server(tmp_path) as uri:
        repo.ok("config", "set", "tracking.uri", uri)
        env = ON  # the setting, not conftest's `none`
        repo.ok("config", "set", "runs.metrics", "loss")  # (unrelated settings stay as they are)
        result = repo.gs("run", "--gpus", "none", "--quiet", "--", "sh", "-c",
                         f"{EPOCHS}; mkdir -p /data/artifacts; echo w > /data/artifacts/w.txt; "
                         "echo id=${MLFLOW_RUN_ID:-none}", env=env)
        assert result.returncode == 0, result.stderr
        # 127.0.0.1 is the container's own loopback: not a server it can reach, so not given
        assert "id=none" in repo.ok("logs", "run-1").stdout
        track(repo, env=env)
        client = mlflow_client(uri)
        children, parents = runs_by_id(client, repo.path.name)
        (run,) = children.values()
        assert not parents and run.info.status == "FINISHED"
        assert run.data.tags["mlflow.source.git.branch"] == "main"  # the worktree it was run from
        assert history(client, run, "loss") == [(1, 0.9), (2, 0.5), (3, 0.3)]
        assert {item.path for item in client.list_artifacts(run.info.run_id)} == {"gpuspace", "w.txt"}
        assert not (repo.common_dir / tracking.DB_NAME).exists()  # not the repo's own store


# a container's own use of MLflow, by its REST API (the test image has no Python): one metric
LOG_FROM_INSIDE = (
    'host=${MLFLOW_TRACKING_URI#http://}; '
    'body="{\\"run_id\\":\\"$MLFLOW_RUN_ID\\",\\"key\\":\\"inner\\",\\"value\\":7,\\"timestamp\\":0,\\"step\\":0}"; '
    '{ printf "POST /api/2.0/mlflow/runs/log-metric HTTP/1.0\\r\\nHost: %s\\r\\nContent-Type: application/json\\r\\n'
    'Content-Length: %d\\r\\n\\r\\n%s" "$host" ${#body} "$body"; sleep 3; } | nc ${host%:*} ${host#*:} | head -1'
)  # (stdin open a while: busybox nc stops reading the answer when it ends)


def test_a_run_s_container_logs_into_its_own_mlflow_run_on_a_server_it_can_reach(repo, mlflow_client, tmp_path,
                                                                                  docker_client):
    # the host, seen from inside: the bridge's gateway (an engine that found its bridge already
    # made records only the subnet, whose first address the gateway is)
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    with mlflow_server(tmp_path, gateway) as uri:
        repo.ok("config", "set", "tracking.uri", uri)
        result = repo.gs("run", "--gpus", "none", "--quiet", "--", "sh", "-c",
                         f"echo uri=$MLFLOW_TRACKING_URI id=$MLFLOW_RUN_ID; {LOG_FROM_INSIDE}; echo loss=0.5", env=ON)
        assert result.returncode == 0, result.stderr
        log = repo.ok("logs", "run-1").stdout
        assert f"uri={uri} id=" in log and " 200 OK" in log, log
        given = log.split(" id=")[1].split()[0]
        track(repo, env=ON)
        client = mlflow_client(uri)
        children, _ = runs_by_id(client, repo.path.name)
        (run,) = children.values()  # one MLflow run: the one the container logged to, and the tracker too
        assert run.info.run_id == given
        assert history(client, run, "inner") == [(0, 7.0)] and history(client, run, "loss") == [(0, 0.5)]
        assert run.info.status == "FINISHED"


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def test_a_slurm_run_is_tracked_from_its_log_on_the_shared_file_system(repo, mlflow_client, cluster):
    result = repo.gs("run", "--backend", "slurm", "--gpus", "none", "--quiet", "--", "sh", "-c", EPOCHS, env=ON)
    assert result.returncode == 0, result.stderr
    track(repo)
    client = mlflow_client(store_uri(repo))
    children, _ = runs_by_id(client, repo.path.name)
    (run,) = children.values()
    [record] = json.loads(repo.ok("runs", "--json").stdout)
    tags = run.data.tags
    assert tags["gpuspace.backend"] == "slurm" and tags["gpuspace.job"] == record["job"] and record["job"]
    assert "gpuspace.host" not in tags  # the node is Slurm's choice
    assert history(client, run, "loss") == [(1, 0.9), (2, 0.5), (3, 0.3)]
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ui_serves_the_repo_s_store_until_interrupted(plain_repo, mlflow_client, stop):
    """Ctrl-C (or SIGTERM) stops the UI and every process its server started."""
    process = subprocess.Popen(["git-gpuspace", "ui"], cwd=plain_repo.path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **ON},
                               # Ctrl-C as a terminal gives it, even where the suite runs with SIGINT
                               # ignored (a background job of a shell without job control)
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert _wait(lambda: _get(url) == 200, 120), "the UI did not answer"
    finally:
        process.send_signal(stop)
        code = process.wait(60)
    assert code == 0, process.stderr.read()
    assert "Traceback" not in process.stderr.read()
    assert _wait(lambda: _get(url) is None, 10), "the UI's server outlived the command"


def test_ui_says_when_tracking_is_off(plain_repo):
    result = subprocess.run(["git-gpuspace", "ui"], cwd=plain_repo.path, capture_output=True, text=True,
                            env={**os.environ, tracking.URI_ENV: "none"})
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "git-gpuspace: error: tracking is off for this repo (tracking.uri none)"


# --- helpers ----------------------------------------------------------------------------------


def _count(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    except sqlite3.Error:
        return 0


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]




def test_the_dispatcher_starts_the_tracker_that_logs_its_runs(repo, mlflow_client):
    """Nothing but `run`: its dispatcher starts the repo's tracker, which logs the run and goes."""
    result = repo.gs("run", "--gpus", "none", "--quiet", "--", "sh", "-c", EPOCHS, env=ON)
    assert result.returncode == 0, result.stderr
    client = mlflow_client(store_uri(repo))

    def logged() -> bool:
        found = client.get_experiment_by_name(repo.path.name)
        return found is not None and any(run.info.status == "FINISHED" for run in client.search_runs([found.experiment_id]))

    assert _wait(logged, 180), tracking.log_path(repo.common_dir).read_text()
    (run,) = runs_by_id(client, repo.path.name)[0].values()
    assert history(client, run, "loss") == [(1, 0.9), (2, 0.5), (3, 0.3)]
    assert _wait(lambda: not tracking.tracker_alive(repo.common_dir), 120)
