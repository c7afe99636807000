"""Promises of the README and docs/SECURITY.md, each tested where a small bug would break it:
by what proves the claim (inodes, ids, exit codes, what is left on disk and on the engine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import container_env


def by_branch(repo, branch: str) -> dict:
    return next(r for r in repo.status() if r["branch"] == branch)


def test_a_plain_remove_keeps_the_data_dir(repo, tmp_path):
    repo.ok("add", "-b", "keep", str(tmp_path / "keep"), "--gpus", "none")
    data_dir = Path(by_branch(repo, "keep")["data_dir"])
    (data_dir / "checkpoints" / "model.pt").write_text("weights")
    inode = (data_dir / "checkpoints" / "model.pt").stat().st_ino
    repo.ok("remove", "keep")
    assert (data_dir / "checkpoints" / "model.pt").stat().st_ino == inode
    repo.ok("add", "-b", "purged", str(tmp_path / "purged"), "--gpus", "none")
    purged = Path(by_branch(repo, "purged")["data_dir"])
    repo.ok("remove", "--purge", "purged")
    assert not purged.exists()


def test_the_state_file_is_replaced_whole_never_written_in_place(repo, tmp_path):
    repo.ok("add", "-b", "one", str(tmp_path / "one"), "--gpus", "none")
    path = repo.common_dir / "gpuspace.toml"
    before = path.stat().st_ino
    repo.ok("add", "-b", "two", str(tmp_path / "two"), "--gpus", "none")
    assert path.stat().st_ino != before  # a new file renamed over the old: readers see one or the other
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_restart_starts_the_container_again(repo, tmp_path):
    repo.ok("add", "-b", "r", str(tmp_path / "r"), "--gpus", "none")
    [container] = repo.containers()
    started = container.attrs["State"]["StartedAt"]
    repo.ok("restart", "r")
    container.reload()
    assert container.attrs["State"]["StartedAt"] != started and container.status == "running"


def test_the_hook_passes_on_the_chained_hooks_exit_status(repo):
    hooks = repo.common_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "post-checkout").write_text("#!/bin/sh\nexit 3\n")
    (hooks / "post-checkout").chmod(0o755)
    alone = repo.git("checkout", "-q", "-b", "first", check=False).returncode  # what git makes of it
    assert alone != 0
    repo.ok("hooks", "install")
    switched = repo.git("checkout", "-q", "-b", "other", check=False)
    assert switched.returncode == alone  # ours passes the chained hook's failure on
    (hooks / "post-checkout.gpuspace-chained").write_text("#!/bin/sh\nexit 0\n")
    assert repo.git("checkout", "-q", "-b", "third", check=False).returncode == 0


@pytest.mark.parametrize("change", ["modified", "staged", "untracked", "deleted"])
def test_remove_refuses_every_kind_of_change(repo, tmp_path, change):
    where = tmp_path / "wt"
    repo.ok("add", "-b", "dirty", str(where), "--gpus", "none")
    target = where / "file0.txt"
    if change == "modified":
        target.write_text("changed\n")
    elif change == "staged":
        target.write_text("staged\n")
        subprocess.run(["git", "add", "file0.txt"], cwd=where, check=True)
    elif change == "untracked":
        (where / "new.txt").write_text("new\n")
    else:
        target.unlink()
    refused = repo.gs("remove", "dirty")
    assert refused.returncode != 0 and "contains modified or untracked files" in refused.stderr
    assert where.exists() and len(repo.containers()) == 1


DEVCONTAINER_REFUSALS = [
    ('"runArgs": ["--ipc", "host"]', "runArgs --ipc host"),
    ('"runArgs": ["--pid", "host"]', "runArgs --pid host"),
    ('"runArgs": ["--device", "/dev/fuse"]', "runArgs --device /dev/fuse"),
    ('"runArgs": ["--security-opt", "seccomp=unconfined"]', "runArgs --security-opt seccomp=unconfined"),
    ('"runArgs": ["-v", "/etc:/host-etc"]', "runArgs -v /etc:/host-etc"),
    ('"runArgs": ["--privileged"]', "runArgs --privileged"),
    ('"runArgs": ["--cap-add", "SYS_ADMIN"]', "runArgs --cap-add SYS_ADMIN"),
    ('"runArgs": ["--network", "host"]', "runArgs --network host"),
    ('"mounts": ["source=${localWorkspaceFolder}/../../../..,target=/host,type=bind"]', "mount of /"),
    ('"mounts": ["source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"]', "mount of /var/run/docker.sock"),
    ('"runArgs": ["--net=host"]', "runArgs --net host"),
    # the git dir, or a root holding a .git, mounted a second time (writable, past the boundary)
    ('"mounts": ["source=${localWorkspaceFolder}/.git,target=/host,type=bind"]', "/.git"),
    ('"mounts": ["source=${localWorkspaceFolder},target=/host,type=bind"]', "mount of /"),
    ('"mounts": ["source=${localWorkspaceFolder}/../project/.git,target=/host,type=bind"]', "project/.git"),
    # the top-level fields: one rule with their runArgs forms
    ('"privileged": true', "privileged"),
    ('"capAdd": ["SYS_ADMIN"]', "capAdd SYS_ADMIN"),
    ('"securityOpt": ["seccomp=unconfined"]', "securityOpt seccomp=unconfined"),
    # the host's environment, and commands
    ('"containerEnv": {"T": "${localEnv:HOME}"}', "${localEnv:HOME}"),
    ('"containerEnv": {"T": "${env:HOME}"}', "${env:HOME}"),
    ('"onCreateCommand": "touch /tmp/ran"', "onCreateCommand"),
    ('"updateContentCommand": "touch /tmp/ran"', "updateContentCommand"),
    ('"postCreateCommand": "touch /tmp/ran"', "postCreateCommand"),
    ('"postStartCommand": "touch /tmp/ran"', "postStartCommand"),
]


@pytest.mark.parametrize("field, named", DEVCONTAINER_REFUSALS, ids=[named for _, named in DEVCONTAINER_REFUSALS])
def test_each_widening_devcontainer_request_needs_trust(repo, tmp_path, field, named):
    folder = repo.path / ".devcontainer"
    folder.mkdir()
    (folder / "devcontainer.json").write_text('{"image": "gpuspace-test:latest", ' + field + "}")
    repo.git("add", ".")
    repo.git("commit", "-q", "-m", "devcontainer")
    added = repo.gs("add", "-b", "dc", str(tmp_path / "dc"), "--gpus", "none")
    assert added.returncode == 0, added.stderr
    assert "is not trusted, so it was made without" in added.stderr and named in added.stderr
    [container] = repo.containers()
    host = container.attrs["HostConfig"]
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert host["IpcMode"] != "host" and host["PidMode"] != "host" and not host.get("Devices")
    assert not host.get("SecurityOpt") and not host["Privileged"] and not host.get("CapAdd")
    assert host["NetworkMode"] != "host" and "/host" not in mounts and "/host-etc" not in mounts
    assert "/var/run/docker.sock" not in mounts
    assert container.exec_run(["ls", "/tmp/ran"]).exit_code != 0  # no command ran
    assert "T" not in container_env(container) or container_env(container)["T"] == ""


@pytest.mark.parametrize("point", ["after-branch-create", "after-worktree-add", "after-data-dir",
                                   "after-container-create", "after-container-start"])
def test_a_failed_add_leaves_nothing_it_made(repo, tmp_path, point):
    before = repo.snapshot(tmp_path / "wts")
    data_root = Path(os.environ["XDG_DATA_HOME"]) / "git-gpuspace" / "workspaces"
    data_before = sorted(data_root.iterdir()) if data_root.exists() else []
    failed = repo.gs("add", "-b", "doomed", str(tmp_path / "wts" / "doomed"), "--gpus", "1",
                     env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "fail"})
    assert failed.returncode == 1 and f"injected failure at {point}" in failed.stderr
    assert repo.snapshot(tmp_path / "wts") == before  # state, branches, worktrees, containers
    assert not (tmp_path / "wts" / "doomed").exists() and "doomed" not in repo.branches()
    assert (sorted(data_root.iterdir()) if data_root.exists() else []) == data_before
    assert not (repo.common_dir / "logs" / "refs" / "heads" / "doomed").exists()


@pytest.mark.parametrize("point", ["after-data-dir", "after-container-create", "after-container-start"])
def test_a_failed_bind_leaves_nothing_it_made(repo, tmp_path, point):
    repo.git("worktree", "add", "-q", "-b", "plain", str(tmp_path / "plain"))
    before = repo.snapshot(tmp_path)
    failed = repo.gs("bind", str(tmp_path / "plain"), "--gpus", "1",
                     env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "fail"})
    assert failed.returncode == 1 and f"injected failure at {point}" in failed.stderr
    assert repo.snapshot(tmp_path) == before and (tmp_path / "plain" / "src").exists()


@pytest.mark.parametrize("point", ["after-run-worktree", "after-run-ref"])
def test_a_failed_run_submission_leaves_nothing_it_made(repo, tmp_path, point):
    before = (repo.git("for-each-ref").stdout, repo.git("worktree", "list", "--porcelain").stdout)
    failed = repo.gs("run", "--gpus", "none", "--", "true",
                     env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "fail"})
    assert failed.returncode == 1 and f"injected failure at {point}" in failed.stderr
    assert (repo.git("for-each-ref").stdout, repo.git("worktree", "list", "--porcelain").stdout) == before
    assert json.loads(repo.ok("runs", "--json").stdout) == []
    assert not (repo.path.parent / "worktrees" / "runs" / repo.path.name / "run-1").exists()
