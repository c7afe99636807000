"""Fixtures: isolated user dirs, real git repos, the real Docker engine, a fake GPU inventory.

GPUs are the one thing faked: `tests/engine/nvidia-smi` on PATH answers the inventory query,
and each test gets its own set of GPU UUIDs (FAKE_GPU_SEED) so leases held by anything else
on the engine never meet ours.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "engine"
TEST_IMAGE = os.environ.get("GPUSPACE_TEST_IMAGE", "gpuspace-test:latest")
ENGINE_REQUIRED = os.environ.get("GPUSPACE_TEST_ENGINE") == "required"
LABEL_REPO = "gpuspace.repo"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Keep tests out of the real HOME and config; fake GPUs unique to this test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.setenv("GPUSPACE_LOCK_DIR", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_SEED", secrets.token_hex(4))
    monkeypatch.setenv("FAKE_GPU_COUNT", "4")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")
    config = home / "config" / "git-gpuspace"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(f'[defaults]\nimage = "{TEST_IMAGE}"\n')
    yield home


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
        client.images.get(TEST_IMAGE)
    except Exception as error:  # noqa: BLE001 - any failure means no usable engine
        message = f"Docker engine or test image {TEST_IMAGE} unavailable ({error}); run scripts/test"
        if ENGINE_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return client


def fake_gpu_uuids() -> list[str]:
    seed = os.environ["FAKE_GPU_SEED"]
    return [f"GPU-{seed}-0000-4000-8000-{i:012d}" for i in range(int(os.environ["FAKE_GPU_COUNT"]))]


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


def gpuspace(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as `git gpuspace` would."""
    return subprocess.run(
        ["git-gpuspace", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@dataclass
class Repo:
    path: Path
    client: object | None = None

    @property
    def common_dir(self) -> Path:
        return (self.path / ".git").resolve()

    def git(self, *args: str, check: bool = True, cwd: Path | None = None):
        return git(*args, cwd=cwd or self.path, check=check)

    def gs(self, *args: str, cwd: Path | None = None, env: dict | None = None):
        return gpuspace(*args, cwd=cwd or self.path, env=env)

    def ok(self, *args: str, cwd: Path | None = None):
        result = self.gs(*args, cwd=cwd)
        assert result.returncode == 0, f"git gpuspace {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def status(self) -> list[dict]:
        return json.loads(self.ok("status", "--json").stdout)

    def state_text(self) -> str:
        path = self.common_dir / "gpuspace.toml"
        return path.read_text() if path.exists() else ""

    def branches(self) -> set[str]:
        out = self.git("for-each-ref", "--format=%(refname:short)", "refs/heads/").stdout
        return set(out.split())

    def containers(self) -> list:
        assert self.client is not None
        return self.client.containers.list(all=True, filters={"label": f"{LABEL_REPO}={self.common_dir}"})

    def snapshot(self, worktrees_dir: Path) -> tuple:
        """Everything a refused command must leave unchanged."""
        return (
            self.state_text(),
            self.branches(),
            self.git("worktree", "list", "--porcelain").stdout,
            sorted(c.name for c in self.containers()),
            sorted(p.name for p in worktrees_dir.iterdir()) if worktrees_dir.exists() else [],
        )


def make_repo(path: Path, client=None, files: int = 3) -> Repo:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for i in range(files):
        (path / f"file{i}.txt").write_text(f"content {i}\n")
    (path / "src").mkdir()
    (path / "src" / "train.py").write_text("print('training')\n")
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    git("branch", "feature/resnet50", cwd=path)
    return Repo(path=path, client=client)


def _remove_containers(client, repo: Repo) -> None:
    for container in repo.containers():
        container.remove(force=True)


@pytest.fixture
def repo(tmp_path, docker_client):
    """A repo with a commit and a spare branch, on the real engine; its containers go after."""
    made = make_repo(tmp_path / "project", docker_client)
    yield made
    _remove_containers(docker_client, made)


@pytest.fixture
def other_repo(tmp_path, docker_client):
    made = make_repo(tmp_path / "other" / "project", docker_client)
    yield made
    _remove_containers(docker_client, made)


@pytest.fixture
def plain_repo(tmp_path):
    """A repo for tests that need no engine."""
    return make_repo(tmp_path / "project")


def container_env(container) -> dict[str, str]:
    """The first process's environment: where the engine's NVIDIA driver puts its variables."""
    result = container.exec_run(["cat", "/proc/1/environ"])
    assert result.exit_code == 0, result.output
    pairs = [item.split("=", 1) for item in result.output.decode().split("\0") if "=" in item]
    return dict(pairs)


@pytest.fixture(scope="session")
def no_nvidia_engine(docker_client, tmp_path_factory):
    """A second, real dockerd started without the NVIDIA hook on its PATH; yields its DOCKER_HOST."""
    import shutil
    import time

    import docker

    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    clean_path = os.pathsep.join(p for p in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"))
    if os.getuid() != 0 or not os.path.exists(dockerd) or shutil.which("nvidia-container-runtime-hook", path=clean_path):
        message = "a second dockerd without NVIDIA hook needs root, dockerd, and no real hook installed"
        if ENGINE_REQUIRED and os.getuid() == 0:
            pytest.fail(message)
        pytest.skip(message)
    base = Path("/tmp") / f"gpuspace-nonv-{secrets.token_hex(3)}"  # short: unix socket paths are limited
    base.mkdir()
    host = f"unix://{base}/docker.sock"
    log = open(base / "dockerd.log", "wb")
    # Its own network namespace: two daemons in one namespace fight over bridges and iptables.
    process = subprocess.Popen(
        ["unshare", "--net", dockerd, "--host", host, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "dockerd.pid"), "--bridge", "none", "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=subprocess.STDOUT, env={"PATH": clean_path}, start_new_session=True,
    )
    try:
        client = None
        for _ in range(60):
            try:
                client = docker.DockerClient(base_url=host)
                client.ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                client = None
                time.sleep(0.5)
        if client is None:
            pytest.fail(f"second dockerd did not start: {(base / 'dockerd.log').read_text()[-2000:]}")
        # Saved by its name, so the tar carries that tag (named=True takes whichever tag comes first).
        client.images.load(b"".join(docker_client.api.get_image(TEST_IMAGE)))
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
