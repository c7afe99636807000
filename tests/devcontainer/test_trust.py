"""Trust in a repository's devcontainer.json: by content, recorded outside the repository.
Untrusted, a hostile file gets a container with the safe subset and runs nothing."""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import TEST_IMAGE, container_env
from helpers import commit_devcontainer, container_of

SECRET = "s3cr3t-token-value"


def hostile(repo, marker, extra=None):
    """What the issue's hostile repo carries: a command that plants a host hook and git config,
    and the host's secret asked for in the container's environment and the build args."""
    hook = repo.common_dir / "hooks" / "post-checkout"
    commit_devcontainer(repo, json.dumps({
        "build": {"dockerfile": "Dockerfile", "args": {"TOKEN": "${localEnv:MY_SECRET_TOKEN}"}},
        "containerEnv": {"TOKEN": "${localEnv:MY_SECRET_TOKEN}", "PLAIN": "${localEnv:NOT_SET:fallback}"},
        "postCreateCommand": f"touch /workspace/.ran; printf '#!/bin/sh\\ntouch {marker}\\n' > {hook}; "
                             f"chmod +x {hook}; printf '[core]\\n\\tfsmonitor = touch {marker}\\n' >> {repo.common_dir}/config",
        **(extra or {}),
    }), extra={".devcontainer/Dockerfile": f"FROM {TEST_IMAGE}\nARG TOKEN\nRUN echo \"$TOKEN\" > /token\n"})


def test_untrusted_file_gets_the_safe_subset_and_runs_nothing(repo, tmp_path, monkeypatch, docker_client):
    monkeypatch.setenv("MY_SECRET_TOKEN", SECRET)
    marker = tmp_path / "PWNED"
    hostile(repo, marker)
    result = repo.ok("add", "-b", "dc", str(tmp_path / "dc"), "--gpus", "none")
    notices = [line for line in result.stderr.splitlines() if "is not trusted" in line]
    assert len(notices) == 1
    for what in ("postCreateCommand", "${localEnv:MY_SECRET_TOKEN}", "${localEnv:NOT_SET:fallback}",
                 f"git gpuspace trust {tmp_path / 'dc'}"):
        assert what in notices[0]
    container = container_of(repo, "dc")
    assert not (tmp_path / "dc" / ".ran").exists()
    env = container_env(container)
    assert env["TOKEN"] == "" and env["PLAIN"] == "fallback"
    assert SECRET not in repo.state_text()
    image = container.attrs["Config"]["Image"]
    assert container.exec_run(["cat", "/token"]).output == b"\n"
    assert SECRET not in json.dumps(docker_client.images.get(image).history())
    repo.git("checkout", "-q", "-b", "after")
    repo.git("status")
    assert not marker.exists()
    docker_client.images.remove(image, force=True)


def test_trust_is_per_content_and_can_be_revoked(repo, tmp_path, monkeypatch, docker_client):
    monkeypatch.setenv("MY_SECRET_TOKEN", SECRET)
    marker = tmp_path / "PWNED"
    hostile(repo, marker)
    repo.ok("add", "-b", "first", str(tmp_path / "first"), "--gpus", "none")
    trusted = repo.ok("trust", str(tmp_path / "first"))
    assert "Trusted" in trusted.stdout and "postCreateCommand" in trusted.stdout
    listed = repo.ok("trust", "--list").stdout
    assert str(tmp_path / "first" / ".devcontainer" / "devcontainer.json") in listed
    assert str(repo.path) not in listed.replace(str(tmp_path / "first"), "")  # recorded outside the repo
    assert not (repo.path / ".git" / "trust.toml").exists()

    # the same content in another worktree of the repo: trusted, so it all applies
    result = repo.gs("add", "-b", "second", str(tmp_path / "second"), "--gpus", "none")
    assert result.returncode == 1, result.stderr  # its command failed (below); the container is kept
    assert "is not trusted" not in result.stderr
    assert (tmp_path / "second" / ".ran").exists()
    assert container_env(container_of(repo, "second"))["TOKEN"] == SECRET
    # ... and even a trusted command cannot reach the host's git through the container
    assert "postCreateCommand exited with" in result.stderr
    repo.git("checkout", "-q", "-b", "after")
    assert not marker.exists() and not (repo.common_dir / "hooks" / "post-checkout").exists()

    # a changed file is untrusted again
    repo.git("checkout", "-q", "main")
    hostile(repo, marker, extra={"containerEnv": {"TOKEN": "${localEnv:MY_SECRET_TOKEN}", "NEW": "1"}})
    changed = repo.ok("add", "-b", "third", str(tmp_path / "third"), "--gpus", "none")
    assert "is not trusted" in changed.stderr and not (tmp_path / "third" / ".ran").exists()

    assert "No longer trusted" in repo.ok("trust", "--revoke", str(tmp_path / "first")).stdout
    again = repo.ok("add", "-b", "fourth", str(tmp_path / "fourth"), "first", "--gpus", "none")
    assert "is not trusted" in again.stderr and not (tmp_path / "fourth" / ".ran").exists()
    images = {c.attrs["Config"]["Image"] for c in repo.containers()}
    for container in repo.containers():
        container.remove(force=True)
    for image in images:
        docker_client.images.remove(image, force=True)


def test_huge_devcontainer_json_is_refused_quickly(repo, tmp_path):
    commit_devcontainer(repo, '{"name": "' + "x" * (2 << 20) + '"}')
    before = repo.snapshot(tmp_path / "wts")
    started = time.monotonic()
    result = repo.gs("add", "-b", "big", str(tmp_path / "wts" / "big"), "--gpus", "none")
    assert result.returncode == 2 and "larger than 1 MiB" in result.stderr, result.stderr
    assert time.monotonic() - started < 10
    assert repo.snapshot(tmp_path / "wts") == before


def test_build_context_hash_never_reads_devices_fifos_or_symlinks(repo, tmp_path, docker_client):
    folder = repo.path / ".devcontainer"
    folder.mkdir()
    (folder / "zero").symlink_to("/dev/zero")
    (folder / "secret").symlink_to("/etc/shadow")
    commit_devcontainer(repo, '{"build": {"dockerfile": "Dockerfile"}}',
                        extra={".devcontainer/Dockerfile": f"FROM {TEST_IMAGE}\nLABEL unique=test-{time.time_ns()}\n"})
    first = subprocess.run(["git-gpuspace", "add", "-b", "b", str(tmp_path / "b"), "--gpus", "none"],
                           cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    # git does not track FIFOs: one made in the worktree is met by the next build's hash walk
    os.mkfifo(tmp_path / "b" / ".devcontainer" / "fifo")
    repo.ok("remove", "--keep-worktree", str(tmp_path / "b"))
    rebind = subprocess.run(["git-gpuspace", "bind", str(tmp_path / "b"), "--gpus", "none"], cwd=repo.path,
                            capture_output=True, text=True, timeout=120)
    assert rebind.returncode == 0, rebind.stderr
    image = container_of(repo, "b").attrs["Config"]["Image"]
    for container in repo.containers():
        container.remove(force=True)
    docker_client.images.remove(image, force=True)


def asks_for_the_hosts_environment(repo):
    """A file whose one untrusted ask is the host's environment: the notice of `add` says whether it is trusted."""
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "containerEnv": {"WHO": "${localEnv:USER}"}}))


def trusted_by_add(repo, worktree) -> bool:
    result = repo.ok("add", "-b", worktree.name, str(worktree), "--gpus", "none", "--no-start")
    return "is not trusted" not in result.stderr


def test_trust_in_one_repository_is_not_trust_in_another(repo, other_repo, tmp_path):
    """The same bytes trusted in repository A are untrusted in repository B."""
    asks_for_the_hosts_environment(repo)
    asks_for_the_hosts_environment(other_repo)
    file = ".devcontainer/devcontainer.json"
    assert (repo.path / file).read_bytes() == (other_repo.path / file).read_bytes()
    assert "Trusted" in repo.ok("trust").stdout
    assert trusted_by_add(repo, tmp_path / "in-a")
    assert not trusted_by_add(other_repo, tmp_path / "in-b")


def test_revoke_withdraws_trust_in_what_the_file_was(repo, tmp_path):
    """Trusted, then changed and revoked: the bytes that were trusted are untrusted again."""
    asks_for_the_hosts_environment(repo)
    repo.ok("trust")
    file = repo.path / ".devcontainer" / "devcontainer.json"
    file.write_text(json.dumps({"image": TEST_IMAGE, "containerEnv": {"WHO": "${localEnv:HOME}"}}))
    assert "No longer trusted" in repo.ok("trust", "--revoke").stdout
    repo.git("checkout", "--", ".devcontainer/devcontainer.json")  # the trusted bytes again
    assert not trusted_by_add(repo, tmp_path / "after")
