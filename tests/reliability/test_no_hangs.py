"""No silent hangs: what a repository controls (a build, a pull, a lifecycle command) never
runs while the repo lock is held, so other commands on the repo go on."""

from __future__ import annotations

import subprocess
import time

from conftest import TEST_IMAGE, wait_for
from helpers import commit_devcontainer


def test_repo_lock_is_free_while_a_repository_build_runs(repo, tmp_path, docker_client):
    repo.ok("add", "-b", "other", str(tmp_path / "other"), "--gpus", "none")
    commit_devcontainer(repo, '{"build": {"dockerfile": "Dockerfile"}}',
                        extra={".devcontainer/Dockerfile": f"FROM {TEST_IMAGE}\nLABEL unique={time.time_ns()}\nRUN sleep 12\n"})
    slow = subprocess.Popen(["git-gpuspace", "add", "-b", "slow", str(tmp_path / "slow"), "--gpus", "none"],
                            cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "slow" / ".devcontainer" / "Dockerfile").exists(), 30)
        time.sleep(2)  # well into the build
        assert slow.poll() is None
        started = time.monotonic()
        for command in (("prune",), ("stop", "other"), ("config", "set", "--repo", "memory", "2g")):
            result = repo.gs(*command, env={"GPUSPACE_LOCK_TIMEOUT": "5"})
            assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 10
        assert slow.poll() is None, "the build should still be running"
        assert slow.wait(timeout=120) == 0, slow.stderr.read()
    finally:
        slow.kill()
    image = next(c for c in repo.containers() if c.labels["gpuspace.branch"] == "slow").attrs["Config"]["Image"]
    for container in repo.containers():
        container.remove(force=True)
    docker_client.images.remove(image, force=True)
