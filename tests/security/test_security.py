"""The guarantees docs/SECURITY.md makes, checked on real containers and files."""

from __future__ import annotations

import os
import stat


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_container_has_no_extra_power(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "1", "--jupyter", "--port", "web=8000")
    [container] = repo.containers()
    host = container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert not host.get("CapAdd")
    assert host["NetworkMode"] in ("default", "bridge")
    assert host["IpcMode"] != "host" and host["PidMode"] != "host"
    assert not host.get("Devices")
    sources = {m["Source"] for m in container.attrs["Mounts"]}
    assert not any(source.endswith("docker.sock") for source in sources)
    assert all(b["HostIp"] == "127.0.0.1" for bindings in host["PortBindings"].values() for b in bindings)


def test_private_files_are_private(repo, tmp_path):
    repo.ok("init", "--gpus", "none")
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--jupyter")
    record = next(r for r in repo.status() if r["branch"] == "exp")
    assert mode(repo.common_dir / "gpuspace.toml") == 0o600
    assert mode(repo.common_dir / "gpuspace.lock") == 0o600
    assert mode(record["data_dir"]) == 0o700
    assert mode(os.path.join(record["data_dir"], ".gpuspace")) == 0o700
    assert mode(os.path.join(record["data_dir"], ".gpuspace", "jupyter-token")) == 0o600
    # the hook's background log is the user's alone too
    repo.git("worktree", "remove", "--force", str(tmp_path / "wt"))
    repo.git("checkout", "-q", "-b", "poke")
    log = repo.common_dir / "gpuspace-hook.log"
    import time

    for _ in range(100):
        if log.exists() and repo.containers() == []:
            break
        time.sleep(0.1)
    assert mode(log) == 0o600


def test_hook_arguments_and_branch_names_are_never_evaluated(repo, tmp_path):
    repo.ok("init", "--gpus", "none")
    branch = "x$(touch${IFS}HOOKPWNED)`touch${IFS}HOOKPWNED2`"
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", branch)
    repo.git("checkout", "-q", branch, cwd=tmp_path / "wt")
    for where in (repo.path, tmp_path / "wt", tmp_path):
        assert not (where / "HOOKPWNED").exists() and not (where / "HOOKPWNED2").exists()
    assert [r["state"] for r in repo.status() if r["branch"] == branch] == ["running"]
