"""add / status / gpus / remove end to end: real git, real engine, fake GPU inventory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import container_env, fake_gpu_uuids, gpuspace


def test_round_trip_through_git(repo, tmp_path):
    wt = tmp_path / "worktrees" / "vit"
    # `git gpuspace` finds our console script on PATH, as an installed git extension
    result = repo.git("gpuspace", "add", "-b", "feature/vit", str(wt), "--gpus", "1", "--memory", "1g", "--cpus", "1")
    assert "Container gpuspace-project-vit-" in result.stdout

    [container] = repo.containers()
    assert container.status == "running"
    labels = container.labels
    assert labels["gpuspace.repo"] == str(repo.common_dir)
    assert labels["gpuspace.worktree"] == str(wt)
    assert labels["gpuspace.branch"] == "feature/vit"
    assert labels["gpuspace.gpus"] == fake_gpu_uuids()[0]

    host = container.attrs["HostConfig"]
    assert host["Init"] is True
    assert host["RestartPolicy"]["Name"] == "always"
    assert host["Memory"] == 1 << 30
    assert host["NanoCpus"] == 1_000_000_000
    assert host["ShmSize"] == 8 << 30  # ML-sane default, not Docker's 64 MB
    assert host["DeviceRequests"][0]["DeviceIDs"] == [fake_gpu_uuids()[0]]
    assert container.attrs["Config"]["WorkingDir"] == "/workspace"
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert mounts["/workspace"] == str(wt)
    assert mounts[str(repo.common_dir)] == str(repo.common_dir)

    env = container_env(container)
    assert env["NVIDIA_VISIBLE_DEVICES"] == fake_gpu_uuids()[0]
    assert "CUDA_VISIBLE_DEVICES" not in env

    # the worktree is live at /workspace, read-write, and files made inside are the user's
    assert container.exec_run(["cat", "src/train.py"]).output == b"print('training')\n"
    assert container.exec_run(["sh", "-c", "echo from-container > made-inside.txt"]).exit_code == 0
    made = wt / "made-inside.txt"
    assert made.read_text() == "from-container\n"
    assert made.stat().st_uid == os.getuid()
    made.unlink()

    [main, bound] = sorted(repo.status(), key=lambda r: not r["main"])
    assert main["state"] == "none" and main["container"] is None
    assert bound["path"] == str(wt)
    assert bound["branch"] == "feature/vit"
    assert bound["state"] == "running"
    assert bound["dirty"] is False
    assert len(bound["head"]) == 40
    assert bound["gpus"] == [
        {"index": 0, "uuid": fake_gpu_uuids()[0], "name": "Fake H200", "memory_used_mib": 0,
         "memory_total_mib": 143771, "utilization_pct": 0}
    ]
    table = repo.ok("status").stdout
    assert "feature/vit" in table and "running" in table and "0 Fake H200" in table

    repo.git("gpuspace", "remove", str(wt))
    assert repo.containers() == []
    assert not wt.exists()
    assert "feature/vit" in repo.branches()  # the branch stays
    assert str(wt) not in repo.git("worktree", "list").stdout
    assert "bindings = []" in repo.state_text()


def test_two_worktrees_get_different_gpus_inside_containers(repo, tmp_path):
    repo.ok("add", "-b", "a", str(tmp_path / "a"), "--gpus", "1")
    repo.ok("add", "-b", "b", str(tmp_path / "b"), "--gpus", "2")
    seen = {}
    for container in repo.containers():
        seen[container.labels["gpuspace.branch"]] = container_env(container)["NVIDIA_VISIBLE_DEVICES"].split(",")
    uuids = fake_gpu_uuids()
    assert seen["a"] == [uuids[0]]
    assert seen["b"] == [uuids[1], uuids[2]]


def test_explicit_ids_all_none_and_share(repo, tmp_path):
    uuids = fake_gpu_uuids()
    repo.ok("add", "-b", "by-index", str(tmp_path / "i"), "--gpus", "2,3")
    repo.ok("add", "-b", "by-uuid", str(tmp_path / "u"), "--gpus", uuids[0])
    repo.ok("add", "-b", "cpu", str(tmp_path / "c"), "--gpus", "none")
    by_branch = {r["branch"]: r for r in repo.status()}
    assert [g["index"] for g in by_branch["by-index"]["gpus"]] == [2, 3]
    assert [g["uuid"] for g in by_branch["by-uuid"]["gpus"]] == [uuids[0]]
    assert by_branch["cpu"]["gpus"] == []
    cpu = next(c for c in repo.containers() if c.labels["gpuspace.branch"] == "cpu")
    assert not cpu.attrs["HostConfig"].get("DeviceRequests")
    assert "NVIDIA_VISIBLE_DEVICES" not in container_env(cpu)

    # GPU 1 is free; 0 is held exclusively, so --share cannot take it
    refused = repo.gs("add", "-b", "s", str(tmp_path / "s"), "--gpus", "0,", "--share")
    assert refused.returncode == 1 and "GPU 0 is held by" in refused.stderr
    repo.ok("add", "-b", "s1", str(tmp_path / "s1"), "--gpus", "1,", "--share")
    repo.ok("add", "-b", "s2", str(tmp_path / "s2"), "--gpus", "1,", "--share")
    holders = {g["index"]: g["holders"] for g in json.loads(repo.ok("gpus", "--json").stdout)}
    assert sorted(h["branch"] for h in holders[1]) == ["s1", "s2"]
    assert all(h["share"] for h in holders[1])
    refused = repo.gs("add", "-b", "x", str(tmp_path / "x"), "--gpus", "1,")
    assert refused.returncode == 1 and "held by" in refused.stderr


def test_gpus_lists_inventory_and_holders_of_any_repo(repo, other_repo, tmp_path):
    repo.ok("add", "-b", "mine", str(tmp_path / "mine"), "--gpus", "1")
    other_repo.ok("add", "-b", "theirs", str(tmp_path / "theirs"), "--gpus", "1")
    records = json.loads(repo.ok("gpus", "--json").stdout)
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert records[0]["holders"][0]["worktree"] == str(tmp_path / "mine")
    assert records[1]["holders"][0]["worktree"] == str(tmp_path / "theirs")
    assert records[1]["holders"][0]["repo"] == str(other_repo.common_dir)
    assert records[2]["holders"] == []
    table = repo.ok("gpus").stdout
    assert "free" in table and str(tmp_path / "theirs") in table and "inventory from nvidia-smi" in table


def test_exclusive_across_repos(repo, other_repo, tmp_path):
    repo.ok("add", "-b", "mine", str(tmp_path / "mine"), "--gpus", "0,")
    refused = other_repo.gs("add", "-b", "theirs", str(tmp_path / "theirs"), "--gpus", "0,")
    assert refused.returncode == 1
    assert f"GPU 0 is held by {tmp_path / 'mine'} (mine)" in refused.stderr
    assert not (tmp_path / "theirs").exists()
    assert other_repo.containers() == []


def test_no_start_records_binding_and_holds_gpus(repo, tmp_path):
    repo.ok("add", "-b", "later", str(tmp_path / "later"), "--gpus", "4", "--no-start")
    [container] = repo.containers()
    assert container.status == "created"
    [bound] = [r for r in repo.status() if r["branch"] == "later"]
    assert bound["state"] == "created" and len(bound["gpus"]) == 4
    refused = repo.gs("add", "-b", "more", str(tmp_path / "more"), "--gpus", "1")
    assert refused.returncode == 1 and "0 free" in refused.stderr


def test_status_from_linked_worktree_and_subdirectory(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "none")
    from_main = repo.status()
    assert repo.status() == json.loads(repo.ok("status", "--json", cwd=wt / "src").stdout) == from_main
    (wt / "src" / "train.py").write_text("changed\n")
    [bound] = [r for r in json.loads(repo.ok("status", "--json", cwd=wt).stdout) if r["branch"] == "exp"]
    assert bound["dirty"] is True


def test_status_reports_missing_container_and_engine_down(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    container.stop(timeout=1)
    assert {r["branch"]: r["state"] for r in repo.status()}["exp"] == "exited"
    container.remove(force=True)
    assert {r["branch"]: r["state"] for r in repo.status()}["exp"] == "missing"
    down = repo.gs("status", "--json", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert down.returncode == 0
    assert "cannot reach the Docker engine" in down.stderr
    assert {r["branch"]: r["state"] for r in json.loads(down.stdout)}["exp"] == "unknown"


def test_remove_refuses_dirty_worktree_unless_forced(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "1")
    (wt / "notes.txt").write_text("untracked work\n")
    refused = repo.gs("remove", str(wt))
    assert refused.returncode == 128  # as git's
    assert "contains modified or untracked files" in refused.stderr
    assert (wt / "notes.txt").exists()
    assert [c.status for c in repo.containers()] == ["running"]  # nothing changed
    repo.ok("remove", "--force", "exp")  # by branch name
    assert not wt.exists() and repo.containers() == []


def test_remove_keep_worktree_frees_gpus(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "4")
    repo.ok("remove", "--keep-worktree", "wt")
    assert wt.exists() and repo.containers() == []
    repo.ok("add", "-b", "next", str(tmp_path / "next"), "--gpus", "4")


def test_remove_after_plain_git_worktree_remove(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "1")
    repo.git("worktree", "remove", str(wt))
    down = repo.gs("status", "--json", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert {r["path"]: r["state"] for r in json.loads(down.stdout)}[str(wt)] == "orphaned"
    result = repo.ok("remove", str(wt))
    assert "already gone" in result.stdout
    assert repo.containers() == []


def test_status_cleans_up_after_plain_git(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "1")
    repo.git("worktree", "remove", str(wt))
    result = repo.ok("status", "--json")
    assert f"worktree {wt} is gone" in result.stderr
    assert str(wt) not in [r["path"] for r in json.loads(result.stdout)]
    assert repo.containers() == []

def test_prune_removes_containers_of_vanished_worktrees(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "1")
    repo.git("worktree", "remove", str(wt))
    result = repo.ok("prune")
    assert "worktree" in result.stdout and "is gone" in result.stdout
    assert repo.containers() == []
    assert repo.ok("prune").stdout.strip() == "Nothing to prune."


def test_interrupted_add_leftover_container_is_replaced(repo, tmp_path, docker_client):
    """A container of ours without a binding (a crash between create and save) is not reused."""
    wt = tmp_path / "wt"
    repo.git("worktree", "add", "-q", str(wt), "-b", "exp")
    repo.ok("bind", str(wt), "--gpus", "1")
    state = repo.common_dir / "gpuspace.toml"
    state.write_text("schema = 1\nbindings = []\n")  # as if the command died before saving
    repo.ok("bind", str(wt), "--gpus", "1")
    assert len(repo.containers()) == 1


def test_default_path_is_beside_the_main_worktree(repo):
    result = repo.ok("add", "-b", "feature/auto", "--gpus", "none")
    expected = repo.path.parent / "worktrees" / "feature-auto"
    assert str(expected) in result.stdout
    assert (expected / "src" / "train.py").exists()
    assert repo.git("status", "--porcelain", cwd=expected).stdout == ""


def test_engine_free_commands_show_worktrees(plain_repo):
    result = gpuspace("status", cwd=plain_repo.path, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 0
    assert "main" in result.stdout and "none" in result.stdout


def test_runs_as_the_invoking_user_with_a_writable_home(docker_client, tmp_path_factory):
    """A non-root user in the docker group: the container runs as their uid:gid."""
    import grp
    import pwd
    import shutil
    import subprocess
    import sys

    from conftest import ENGINE_REQUIRED, LABEL_REPO, TEST_IMAGE

    if os.getuid() != 0 or shutil.which("useradd") is None:
        if ENGINE_REQUIRED and os.getuid() == 0:
            raise AssertionError("useradd is needed to test a non-root user")
        import pytest

        pytest.skip("needs root to create a test user")
    user = "gpuspace-tester"
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-G", "docker", user], check=True)
    entry = pwd.getpwnam(user)
    assert user in grp.getgrnam("docker").gr_mem
    base = Path(f"/tmp/gpuspace-nonroot-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    env = {
        "HOME": entry.pw_dir, "USER": user, "PATH": os.environ["PATH"], "FAKE_GPU_SEED": os.environ["FAKE_GPU_SEED"],
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }

    def as_user(*args, cwd=base):
        return subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", *args],
                              cwd=cwd, env=env, capture_output=True, text=True)

    try:
        for step in (["git", "init", "-q", "-b", "main", "repo"], ["sh", "-c", "cd repo && echo a > a && git add a && git commit -qm a"]):
            assert as_user(*step).returncode == 0
        result = as_user(sys.executable, "-m", "git_gpuspace.cli", "add", "-b", "exp", str(base / "wt"),
                         "--gpus", "1", "--image", TEST_IMAGE, cwd=base / "repo")
        assert result.returncode == 0, result.stderr
        [container] = docker_client.containers.list(ignore_removed=True, filters={"label": f"{LABEL_REPO}={base / 'repo' / '.git'}"})
        assert container.attrs["Config"]["User"] == f"{entry.pw_uid}:{entry.pw_gid}"
        made = container.exec_run(["sh", "-c", "touch /workspace/mine && echo ok > $HOME/probe && cat $HOME/probe"],
                                  user=f"{entry.pw_uid}:{entry.pw_gid}")
        assert made.exit_code == 0 and made.output == b"ok\n"
        assert (base / "wt" / "mine").stat().st_uid == entry.pw_uid
        assert container.exec_run(["id", "-u"]).output.strip() == str(entry.pw_uid).encode()
        assert (base / "repo" / ".git" / "gpuspace.toml").stat().st_uid == entry.pw_uid
    finally:
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL_REPO}={base / 'repo' / '.git'}"}):
            container.remove(force=True)
        shutil.rmtree(base, ignore_errors=True)


def test_missing_image_is_pulled_with_progress(repo, tmp_path, local_registry, docker_client):
    import docker.errors

    try:
        docker_client.images.get(local_registry)
        raise AssertionError("the image should not be here yet")
    except docker.errors.ImageNotFound:
        pass
    result = repo.ok("add", "-b", "pulled", str(tmp_path / "wt"), "--gpus", "none", "--image", local_registry)
    assert f"Pulling {local_registry} ..." in result.stderr
    assert f"Status: Downloaded newer image for {local_registry}" in result.stderr
    assert [r["state"] for r in repo.status() if r["branch"] == "pulled"] == ["running"]
    assert docker_client.images.get(local_registry)


def test_a_bound_main_worktree_keeps_its_gpu_when_another_worktree_is_added(repo, tmp_path):
    """A live binding's GPU is never released: the main worktree's container outlives the next `add`."""
    repo.ok("bind", str(repo.path), "--gpus", "1")
    [main] = repo.containers()
    repo.ok("add", "-b", "next", str(tmp_path / "next"), "--gpus", "1")
    by_worktree = {c.labels["gpuspace.worktree"]: c for c in repo.containers()}
    assert set(by_worktree) == {str(repo.path), str(tmp_path / "next")}
    assert by_worktree[str(repo.path)].id == main.id and by_worktree[str(repo.path)].status == "running"
    held = [container_env(by_worktree[str(path)])["NVIDIA_VISIBLE_DEVICES"] for path in (repo.path, tmp_path / "next")]
    assert held == fake_gpu_uuids()[:2]  # two GPUs, one each
