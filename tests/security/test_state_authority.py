"""The state file is data, not authority: a planted `.git/gpuspace.toml` (as a container could
once write it) cannot make the host delete, widen or touch what is not the binding's own."""

from __future__ import annotations

import secrets
import shutil

from conftest import TEST_IMAGE
from helpers import commit_devcontainer, plant, tomllib


def refused(result, key):
    assert result.returncode == 1, result.stderr
    assert f"bindings[0].{key}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_purge_deletes_only_a_data_dir_we_made(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    data_dir = tomllib.loads(repo.state_text())["bindings"][0]["data_dir"]
    victim = tmp_path / "victim"
    (victim / ".gpuspace").mkdir(parents=True)
    (victim / "precious.txt").write_text("keep")
    shutil.copy(f"{data_dir}/.gpuspace/owner", victim / ".gpuspace" / "owner")  # a copied mark proves nothing
    (tmp_path / "link").symlink_to(victim)
    for planted in (f"{data_dir}/../../../..", str(victim), str(tmp_path / "link"), "relative/dir"):
        plant(repo, data_dir=planted)
        before = repo.state_text()
        refused(repo.gs("remove", "--purge", "--keep-worktree", str(tmp_path / "wt")), "data_dir")
        assert (victim / "precious.txt").read_text() == "keep"
        assert repo.state_text() == before and len(repo.containers()) == 1
    plant(repo, data_dir=data_dir)
    repo.ok("remove", "--purge", "--keep-worktree", str(tmp_path / "wt"))
    assert not (tmp_path / "wt").parent.joinpath(data_dir).exists()


def test_state_cannot_name_a_container_that_is_not_ours(repo, tmp_path, docker_client):
    victim = docker_client.containers.run(TEST_IMAGE, ["sleep", "300"], detach=True, name=f"victim-db-{secrets.token_hex(4)}")
    try:
        repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
        [ours] = repo.containers()
        real = ours.name
        plant(repo, container=victim.name)
        for command in (("remove", str(tmp_path / "wt")), ("prune",), ("stop", str(tmp_path / "wt"))):
            refused(repo.gs(*command), "container")
        victim.reload()
        assert victim.status == "running"

        # the right name, but the container there now is someone else's (no labels of ours)
        plant(repo, container=real)
        ours.remove(force=True)
        impostor = docker_client.containers.run(TEST_IMAGE, ["sleep", "300"], detach=True, name=real)
        result = repo.gs("remove", str(tmp_path / "wt"))
        assert result.returncode == 1 and "does not belong to" in result.stderr, result.stderr
        impostor.reload()
        assert impostor.status == "running" and real in repo.state_text()
        impostor.remove(force=True)
    finally:
        victim.remove(force=True)


def test_state_cannot_widen_a_container(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    original = repo.state_text()
    for key, value in (("mounts", ["/:/host"]),
                       ("host_options", {"privileged": True}),
                       ("host_options", {"network_mode": "host", "pid_mode": "host"}),
                       ("host_options", {"cap_add": ["SYS_ADMIN"]})):
        (repo.common_dir / "gpuspace.toml").write_text(original)
        plant(repo, **{key: value})
        for container in repo.containers():
            container.remove(force=True)  # `start` makes it again from the state file
        result = repo.gs("start", str(tmp_path / "wt"))
        refused(result, key)
        assert repo.containers() == []
    (repo.common_dir / "gpuspace.toml").write_text(original)
    repo.ok("start", str(tmp_path / "wt"))
    host = repo.containers()[0].attrs["HostConfig"]
    assert host["Privileged"] is False and host["NetworkMode"] != "host"


def test_mount_source_swapped_for_a_symlink_is_refused_at_recreate(repo, tmp_path):
    commit_devcontainer(repo, '{"mounts": ["source=${localWorkspaceFolder}/datasets,target=/datasets,type=bind"]}',
                        extra={"datasets/README": "data\n"})
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    swapped = container.exec_run(["sh", "-c", "rm -rf /workspace/datasets && ln -s / /workspace/datasets"])
    assert swapped.exit_code == 0, swapped.output
    container.remove(force=True)
    result = repo.gs("start", str(tmp_path / "wt"))
    refused(result, "mounts")
    assert "resolves to /," in result.stderr
    assert repo.containers() == []


def test_host_never_writes_through_symlinks_in_the_data_dir(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none", "--jupyter")
    [container] = repo.containers()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for name in ("context.env", "jupyter-token"):
        planted = container.exec_run(["sh", "-c", f"ln -sf {victim} /data/.gpuspace/{name}"])
        assert planted.exit_code == 0, planted.output
    container.remove(force=True)
    repo.ok("start", str(tmp_path / "wt"))  # made again: writes context.env and reads the token
    assert victim.read_text() == "keep"
    status = repo.status()[-1]
    assert "keep" not in str(status.get("urls"))

    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    [container] = repo.containers()
    container.exec_run(["sh", "-c", f"rm -rf /data/.gpuspace && ln -s {victim_dir} /data/.gpuspace"])
    container.remove(force=True)
    result = repo.gs("start", str(tmp_path / "wt"))
    assert result.returncode == 1 and "is not a directory (a symlink?)" in result.stderr, result.stderr
    assert list(victim_dir.iterdir()) == []
