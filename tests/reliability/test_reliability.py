"""Reliability: concurrency, crashes at every step, engine faults. The tool must hold."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import fake_gpu_uuids, wait_for


def run_all(commands, cwd):
    """Start every command at once; wait for all; (returncode, stdout, stderr) each."""
    processes = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    return [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in processes]


def state_of(repo):
    import tomllib

    return tomllib.loads(repo.state_text() or "schema = 1")


def assert_converged(repo, client=None):
    """No container without a binding, no binding without its container and worktree,
    no GPU held twice."""
    bindings = {b["container"]: b for b in state_of(repo).get("bindings", [])}
    containers = (client or repo.client).containers.list(ignore_removed=True, all=True, filters={"label": f"gpuspace.repo={repo.common_dir}"})
    assert {c.name for c in containers} == {name for name, b in bindings.items() if not b.get("pending")}
    listed = repo.git("worktree", "list", "--porcelain").stdout
    for binding in bindings.values():
        assert f"worktree {binding['path']}\n" in listed and os.path.isdir(binding["path"])
    held = [uuid for c in containers for uuid in c.labels["gpuspace.gpus"].split(",") if uuid]
    assert len(held) == len(set(held))


def test_eight_concurrent_adds_on_four_gpus(repo, tmp_path):
    results = run_all([["git-gpuspace", "add", "-b", f"c{i}", str(tmp_path / "wts" / f"c{i}"), "--gpus", "1"]
                       for i in range(8)], repo.path)
    assert sorted(code for code, _, _ in results) == [0] * 4 + [1] * 4
    assert all("Traceback" not in err for _, _, err in results)
    held = sorted(c.labels["gpuspace.gpus"] for c in repo.containers())
    assert held == sorted(fake_gpu_uuids())
    assert len(state_of(repo)["bindings"]) == 4
    assert len(os.listdir(tmp_path / "wts")) == 4 and len(repo.branches()) == 2 + 4
    assert_converged(repo)


def test_four_and_four_concurrent_adds_from_two_repos_on_four_gpus(repo, other_repo, tmp_path):
    commands = [(r, ["git-gpuspace", "add", "-b", f"{name}{i}", str(tmp_path / name / str(i)), "--gpus", "1"])
                for i in range(4) for r, name in ((repo, "a"), (other_repo, "b"))]
    processes = [subprocess.Popen(c, cwd=r.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r, c in commands]
    codes = [p.wait(timeout=300) for p in processes]
    assert sorted(codes) == [0] * 4 + [1] * 4
    held = sorted(c.labels["gpuspace.gpus"] for c in repo.containers() + other_repo.containers())
    assert held == sorted(fake_gpu_uuids())
    assert_converged(repo)
    assert_converged(other_repo)


def test_concurrent_add_remove_status_and_hooks_lose_no_update(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "5")  # enough for every add whenever `remove r1` lands
    repo.ok("init", "--gpus", "1")
    for name in ("r1", "r2"):
        repo.ok("add", "-b", name, str(tmp_path / name))
    commands = [
        ["git-gpuspace", "add", "-b", "a1", str(tmp_path / "a1")],
        ["git-gpuspace", "add", "-b", "a2", str(tmp_path / "a2")],
        ["git-gpuspace", "remove", "r1"],
        ["git", "worktree", "add", "-q", str(tmp_path / "h1"), "-b", "h1"],  # bound by the hook
        *[["git-gpuspace", "status", "--json"] for _ in range(3)],
        *[["git-gpuspace", "_hook", "converge"] for _ in range(2)],
        ["git", "checkout", "-q", "-b", "side"],
    ]
    results = run_all(commands, repo.path)
    assert [code for code, _, _ in results] == [0] * len(commands), [err for _, _, err in results]
    paths = sorted(b["path"] for b in state_of(repo)["bindings"])
    assert paths == sorted(str(tmp_path / n) for n in ("a1", "a2", "h1", "r2"))
    assert_converged(repo)


ADD_POINTS = ["after-worktree-add", "after-container-create", "after-container-start", "before-state-rename"]


@pytest.mark.parametrize("point", ADD_POINTS)
def test_kill_during_add_then_next_command_converges(repo, tmp_path, point):
    (repo.path / "precious.txt").write_text("user data\n")
    env = {"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "kill"}
    killed = repo.gs("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "2", env=env)
    assert killed.returncode == -9
    result = repo.gs("prune")  # the lock the dead process held is free: this does not wait
    assert result.returncode == 0, result.stderr
    assert_converged(repo)
    records = {r["path"]: r for r in repo.status()}
    assert all(r["state"] in ("none", "running") for r in records.values())
    assert (repo.path / "precious.txt").read_text() == "user data\n"
    # every GPU is free again, or held by a recorded binding
    repo.ok("add", "-b", "after", str(tmp_path / "after"), "--gpus", "2")


@pytest.mark.parametrize("point", ["after-unbind-save", "after-unbind"])
def test_kill_during_remove_then_next_command_converges(repo, tmp_path, point):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "4")
    (wt / "notes.txt").write_text("mine\n")
    repo.git("add", "notes.txt", cwd=wt)
    repo.git("commit", "-q", "-m", "notes", cwd=wt)
    killed = repo.gs("remove", "exp", env={"GPUSPACE_FAULT_POINT": point})
    assert killed.returncode == -9
    repo.ok("status")  # converges: the container no binding claims is removed
    assert_converged(repo)
    assert repo.containers() == []
    assert (wt / "notes.txt").read_text() == "mine\n"  # the worktree is untouched
    repo.ok("add", "-b", "next", str(tmp_path / "next"), "--gpus", "4")  # GPUs released


def test_engine_stopped_between_and_during_commands(repo, tmp_path, private_engine):
    env = {"DOCKER_HOST": private_engine.host}
    ok = repo.gs("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "1", env=env)
    assert ok.returncode == 0, ok.stderr

    private_engine.stop()
    down = repo.gs("status", "--json", env=env)
    assert down.returncode == 0 and "cannot reach the Docker engine" in down.stderr
    assert {r["branch"]: r["state"] for r in json.loads(down.stdout)}["exp"] == "unknown"
    refused = repo.gs("add", "-b", "two", str(tmp_path / "two"), "--gpus", "1", env=env)
    assert refused.returncode == 1 and "cannot reach the Docker engine" in refused.stderr
    assert not (tmp_path / "two").exists() and "two" not in repo.branches()

    private_engine.start()  # the container comes back by its restart policy
    assert wait_for(lambda: {r["branch"]: r["state"] for r in json.loads(repo.gs("status", "--json", env=env).stdout)}.get("exp") == "running")

    pid = (private_engine.base / "dockerd.pid").read_text().strip()
    socket_file = private_engine.base / "docker.sock"
    stop_engine = f"run:kill {pid}; for i in $(seq 100); do [ -S {socket_file} ] || break; sleep 0.1; done"
    during = repo.gs("add", "-b", "mid", str(tmp_path / "mid"), "--gpus", "1",
                     env={**env, "GPUSPACE_FAULT_POINT": "after-worktree-add", "GPUSPACE_FAULT_ACTION": stop_engine})
    assert during.returncode == 1 and "cannot reach the Docker engine" in during.stderr
    assert "Traceback" not in during.stderr
    assert not (tmp_path / "mid").exists() and "mid" not in repo.branches()
    private_engine.stop()  # reaps it
    private_engine.start()
    assert_converged(repo, private_engine.client())


def test_container_stopped_or_image_deleted_behind_our_back(repo, tmp_path, private_engine, docker_client):
    from conftest import TEST_IMAGE

    env = {"DOCKER_HOST": private_engine.host}
    client = private_engine.client()
    client.images.get(TEST_IMAGE).tag("gpuspace-test", "doomed")
    assert repo.gs("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "1", "--image", "gpuspace-test:doomed",
                   env=env).returncode == 0
    [container] = client.containers.list(ignore_removed=True, filters={"label": f"gpuspace.repo={repo.common_dir}"})
    container.stop(timeout=1)
    assert {r["branch"]: r["state"] for r in json.loads(repo.gs("status", "--json", env=env).stdout)}["exp"] == "exited"
    assert repo.gs("start", "exp", env=env).returncode == 0
    container.reload()
    assert container.status == "running"

    container.remove(force=True)
    client.images.remove("gpuspace-test:doomed")
    assert {r["branch"]: r["state"] for r in json.loads(repo.gs("status", "--json", env=env).stdout)}["exp"] == "missing"
    failed = repo.gs("start", "exp", env=env)
    assert failed.returncode == 1 and "cannot pull image 'gpuspace-test:doomed'" in failed.stderr
    assert "Traceback" not in failed.stderr
    client.images.get(TEST_IMAGE).tag("gpuspace-test", "doomed")
    assert repo.gs("start", "exp", env=env).returncode == 0  # repaired once the image is back
    assert_converged(repo, client)



def test_bound_containers_come_back_after_the_engine_is_killed(repo, tmp_path, private_engine):
    """SIGKILL of dockerd, then dockerd again: what should run runs; what was stopped, or never
    started, stays so."""
    import os
    import signal
    import time

    env = {"DOCKER_HOST": private_engine.host}
    for name, extra in (("up", []), ("down", []), ("never", ["--no-start"])):
        assert repo.gs("add", "-b", name, str(tmp_path / name), "--gpus", "none", *extra, env=env).returncode == 0
    assert repo.gs("stop", "down", env=env).returncode == 0
    os.kill(private_engine.process.pid, signal.SIGKILL)
    private_engine.process.wait()
    private_engine.process = None
    time.sleep(4)  # its containerd notices and goes, as after a crash
    private_engine.start()

    def states():
        return {r["branch"]: r["state"] for r in json.loads(repo.gs("status", "--json", env=env).stdout)
                if r["branch"] in ("up", "down", "never")}

    assert wait_for(lambda: states() == {"up": "running", "down": "exited", "never": "created"}), states()
    assert repo.gs("start", "down", env=env).returncode == 0
    assert states()["down"] == "running"
