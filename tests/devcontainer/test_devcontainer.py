"""devcontainer.json: the fields ML repos use are honoured; commands and unsafe asks need trust."""

from __future__ import annotations

import json
import secrets

import pytest

from conftest import TEST_IMAGE, container_env
from helpers import commit_devcontainer, container_of


def test_fields_taken_and_unsafe_ones_refused(repo, tmp_path, docker_client):
    docker_client.images.get(TEST_IMAGE).tag("gpuspace-test", "devcontainer")
    outside = tmp_path / "outside"
    outside.mkdir()
    commit_devcontainer(repo, f"""{{
      // PyTorch's own devcontainer asks for all GPUs; that never overrides the allocation
      "image": "gpuspace-test:devcontainer",
      "containerEnv": {{"WANDB_MODE": "offline", "WHERE": "${{containerWorkspaceFolder}}"}},
      "forwardPorts": [6006],
      "mounts": ["source=${{localWorkspaceFolder}}/datasets,target=/datasets,type=bind",
                 "source={outside},target=/outside,type=bind",
                 "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"],
      "runArgs": ["--gpus", "all", "--shm-size=2g", "--privileged", "--cap-add=SYS_ADMIN", "--network=host", "-e", "FROM_RUNARGS=1"],
      "postCreateCommand": "echo created > /workspace/.post-create",
      "hostRequirements": {{"gpu": true}},
      "features": {{"http://example.com/features/python.tgz": {{}}}},
      "customizations": {{"vscode": {{}}}},
    }}""", extra={"datasets/README": "data\n"})

    result = repo.ok("add", "-b", "dc", str(tmp_path / "dc"))
    assert ("not supported, ignored: customizations, runArgs --gpus all (GPUs come from the exclusive allocation), "
            "feature http://example.com/features/python.tgz (only a local folder, an OCI reference or an https:// tarball)") in result.stderr
    refused = next(line for line in result.stderr.splitlines() if "is not trusted, so it was made without" in line)
    for what in (f"mount of {outside}", "mount of /var/run/docker.sock", "runArgs --privileged",
                 "runArgs --cap-add SYS_ADMIN", "runArgs --network host", "postCreateCommand"):
        assert what in refused
    assert f"git gpuspace trust {tmp_path / 'dc'}" in refused

    container = container_of(repo, "dc")
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["Image"] == "gpuspace-test:devcontainer"
    assert host["Privileged"] is False and not host.get("CapAdd") and host["NetworkMode"] != "host"
    assert host["ShmSize"] == 2 << 30
    assert len(host["DeviceRequests"][0]["DeviceIDs"]) == 1  # the default 1, not "all"
    env = container_env(container)
    assert env["WANDB_MODE"] == "offline" and env["WHERE"] == "/workspace" and env["FROM_RUNARGS"] == "1"
    targets = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert targets["/datasets"] == str(tmp_path / "dc" / "datasets")
    assert "/outside" not in targets and "/var/run/docker.sock" not in targets
    assert [p["container_port"] for p in next(r for r in repo.status() if r["branch"] == "dc")["ports"]] == [6006]
    assert not (tmp_path / "dc" / ".post-create").exists()  # an untrusted file runs no command


def test_trust_allows_what_was_refused(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    commit_devcontainer(repo, json.dumps({
        "runArgs": ["--privileged", "--cap-add=SYS_PTRACE"],
        "mounts": [f"source={outside},target=/outside,type=bind"],
    }))
    # created, not started: this sandbox may not grant privileged containers
    result = repo.ok("add", "-b", "t", str(tmp_path / "t"), "--gpus", "none", "--trust", "--no-start")
    assert "refused" not in result.stderr
    host = container_of(repo, "t").attrs["HostConfig"]
    assert host["Privileged"] is True and host["CapAdd"] == ["SYS_PTRACE"]
    assert "/outside" in {m["Destination"] for m in container_of(repo, "t").attrs["Mounts"]}


def test_named_config_and_gpu_requirements(repo, tmp_path, monkeypatch):
    commit_devcontainer(repo, '{"hostRequirements": {"gpu": "optional"}}', name="cpu-ok")
    commit_devcontainer(repo, '{"hostRequirements": {"gpu": 2}}', name="two")
    repo.ok("add", "-b", "two", str(tmp_path / "two"), "--devcontainer", "two")
    assert len(next(r for r in repo.status() if r["branch"] == "two")["gpus"]) == 2
    monkeypatch.setenv("FAKE_GPU_COUNT", "0")
    repo.ok("add", "-b", "opt", str(tmp_path / "opt"), "--devcontainer", "cpu-ok")
    assert next(r for r in repo.status() if r["branch"] == "opt")["gpus"] == []
    missing = repo.gs("add", "-b", "x", str(tmp_path / "x"), "--devcontainer", "nope")
    assert missing.returncode == 2 and "no devcontainer 'nope'" in missing.stderr and "cpu-ok, two" in missing.stderr
    assert not (tmp_path / "x").exists() and "x" not in repo.branches()


def test_build_is_made_once_and_reused(repo, tmp_path, docker_client):
    unique = secrets.token_hex(4)  # a fresh image for this run: the tag is content-addressed
    commit_devcontainer(repo, '{"build": {"dockerfile": "Dockerfile", "args": {"FLAVOUR": "cuda"}}}',
                        extra={".devcontainer/Dockerfile": f"FROM {TEST_IMAGE}\n# {unique}\nARG FLAVOUR\nRUN echo $FLAVOUR > /flavour\n"})
    first = repo.ok("add", "-b", "b1", str(tmp_path / "b1"), "--gpus", "none")
    assert "Building gpuspace-build/devcontainer:" in first.stderr
    second = repo.ok("add", "-b", "b2", str(tmp_path / "b2"), "--gpus", "none")
    assert "Building" not in second.stderr  # same inputs, same image
    [image] = {r["image"] for r in repo.status() if r["image"]}
    assert image.startswith("gpuspace-build/devcontainer:")
    assert container_of(repo, "b2").exec_run(["cat", "/flavour"]).output == b"cuda\n"
    for branch in ("b1", "b2"):
        repo.ok("remove", "--force", branch)
    docker_client.images.remove(image)


def test_broken_devcontainer_is_a_clear_error_and_rolls_back(repo, tmp_path):
    commit_devcontainer(repo, '{"image": ')
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "bad", str(tmp_path / "wts" / "bad"), "--gpus", "none")
    assert result.returncode == 2 and "is not valid JSON with comments" in result.stderr
    assert repo.snapshot(tmp_path / "wts") == before


def test_a_mount_inside_the_worktree_follows_git_worktree_move(repo, tmp_path):
    commit_devcontainer(repo, """{
      "image": "gpuspace-test:latest",
      "mounts": ["source=${localWorkspaceFolder}/datasets,target=/datasets,type=bind"]
    }""", extra={"datasets/README": "data\n"})
    old, new = tmp_path / "old", tmp_path / "moved" / "new"
    new.parent.mkdir()
    repo.ok("add", "-b", "dc", str(old), "--gpus", "none")
    repo.git("worktree", "move", str(old), str(new))
    result = repo.ok("prune")
    assert "follows it to" in result.stdout, result.stdout
    [container] = repo.containers()
    assert container.status == "running"
    assert {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}["/datasets"] == str(new / "datasets")
    [record] = [r for r in repo.status() if r["branch"] == "dc"]
    assert record["state"] == "running" and record["path"] == str(new)


@pytest.mark.parametrize("how", ["flag", "devcontainer.json"])
def test_an_image_reference_the_engine_refuses_is_one_line_and_nothing_is_made(repo, tmp_path, how):
    extra = []
    if how == "flag":
        extra = ["--image", "ubuntu:${X}"]
    else:
        commit_devcontainer(repo, '{"image": "ubuntu:bad reference"}')
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "img", str(tmp_path / "wts" / "img"), "--gpus", "none", *extra)
    assert result.returncode == 2, result.stderr
    assert "is not a valid image reference" in result.stderr and "internal error" not in result.stderr
    assert repo.snapshot(tmp_path / "wts") == before and not (tmp_path / "wts" / "img").exists()


def test_a_mount_that_is_not_applied_is_named_as_the_file_writes_it(repo, tmp_path):
    commit_devcontainer(repo, '{"image": "gpuspace-test:latest", '
                              '"mounts": [{"type": "volume", "target": "/cache2", "volume-opt": "o=bind"}]}')
    added = repo.gs("add", "-b", "vol", str(tmp_path / "vol"), "--gpus", "none")
    assert added.returncode == 0, added.stderr
    assert "mount type=volume,target=/cache2,volume-opt=o=bind (volume-opt)" in added.stderr and "{'" not in added.stderr


def test_host_network_and_published_ports_are_refused_in_one_line(repo, tmp_path):
    commit_devcontainer(repo, '{"image": "gpuspace-test:latest", "runArgs": ["--network=host"], "forwardPorts": [8888]}')
    before = repo.snapshot(tmp_path / "wts")
    result = repo.gs("add", "-b", "net", str(tmp_path / "wts" / "net"), "--gpus", "none", "--trust")
    assert result.returncode == 2, result.stderr
    assert "cannot be published with runArgs --network host" in result.stderr and "internal error" not in result.stderr
    assert repo.snapshot(tmp_path / "wts") == before


def test_a_failed_build_leaves_no_container_behind(repo, tmp_path, docker_client):
    folder = repo.path / ".devcontainer"
    folder.mkdir()
    token = secrets.token_hex(4)  # names the failing step's container: other tests' come and go meanwhile
    (folder / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN echo {token} && false\n")
    (folder / "devcontainer.json").write_text('{"build": {"dockerfile": "Dockerfile"}}')
    repo.git("add", ".")
    repo.git("commit", "-q", "-m", "a build that fails")
    result = repo.gs("add", "-b", "b", str(tmp_path / "b"), "--gpus", "none", "--trust")
    assert result.returncode != 0 and "failed" in result.stderr
    assert repo.containers() == []
    steps = [c for c in docker_client.containers.list(all=True, ignore_removed=True)
             if token in " ".join(c.attrs["Config"].get("Cmd") or [])]
    assert steps == []  # not even the step's


def test_nothing_of_a_devcontainer_is_dropped_silently(repo, tmp_path):
    commit_devcontainer(repo, '{"image": "gpuspace-test:latest", "hostRequirements": {"cpus": 8, "memory": "32gb"}}')
    added = repo.gs("add", "-b", "req", str(tmp_path / "req"), "--gpus", "none")
    assert "hostRequirements.cpus" in added.stderr and "hostRequirements.memory" in added.stderr, added.stderr
    repo.git("rm", "-q", "-r", ".devcontainer")
    repo.git("commit", "-q", "-m", "only named ones")
    commit_devcontainer(repo, '{"image": "gpuspace-test:latest"}', name="gpu")
    named = repo.gs("add", "-b", "named", str(tmp_path / "named"), "--gpus", "none")
    assert named.returncode == 0, named.stderr
    assert "configurations gpu and no default one" in named.stderr and "--devcontainer gpu" in named.stderr
