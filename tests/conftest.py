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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import git

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "engine"
TEST_IMAGE = os.environ.get("GPUSPACE_TEST_IMAGE", "gpuspace-test:latest")
ENGINE_REQUIRED = os.environ.get("GPUSPACE_TEST_ENGINE") == "required"
LABEL_REPO = "gpuspace.repo"


def unavailable(message: str):
    """A part of the test setup is missing: a failure where the engine is required (CI), so that
    a test that cannot run never passes as skipped; a skip elsewhere."""
    if ENGINE_REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


# The files that take longest (seconds of test time in a whole run, from `--junitxml`), run first,
# then the others by their number of tests: xdist hands out whole files in collection order
# (scripts/test turns its own order, by number of tests, off), and a long file handed out last
# keeps one worker busy after the others have finished.
LONGEST_FILES = {
    "runs/test_tracking.py": 130, "runs/test_runs.py": 105, "runs/test_scheduler.py": 85, "runs/test_search.py": 85,
    "cli/test_benchmarks_smoke.py": 80, "cli/test_refusals.py": 60, "runs/test_backend_contract.py": 60,
    "devcontainer/test_devcontainer_compose.py": 55, "runs/test_slurm.py": 55,
    "devcontainer/test_devcontainer_fixtures.py": 50, "reliability/test_dispatch_kills.py": 50,
    "reliability/test_reliability.py": 50,
}


def pytest_collection_modifyitems(items):
    """Every test that uses the engine (through docker_client, which all engine fixtures use)
    carries the `engine` marker: `pytest -m "not engine"` runs the rest in seconds. The longest
    files go first, then the files of more tests (a stable sort: a file's tests keep their order)."""
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.engine)
    tests_in = Counter(item.path for item in items)
    items.sort(key=lambda item: (-LONGEST_FILES.get(_in_tests(item.path), 0), -tests_in[item.path], str(item.path)))


def _in_tests(path: Path) -> str:
    """A test file's path under tests/, as LONGEST_FILES names it ("" for any other)."""
    try:
        return path.relative_to(Path(__file__).parent).as_posix()
    except ValueError:
        return ""


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Keep tests out of the real HOME and config; fake GPUs unique to this test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_SEED", secrets.token_hex(4))
    monkeypatch.setenv("FAKE_GPU_COUNT", "4")
    # the stand-in nvidia-smi, chosen outright: on a host with real GPUs NVML would answer first
    monkeypatch.setenv("GPUSPACE_GPU_SOURCE", "nvidia-smi")
    # no MLflow tracker behind every test's runs: tests/runs/test_tracking.py turns it on where it looks
    monkeypatch.setenv("GPUSPACE_TRACKING_URI", "none")
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
        unavailable(f"Docker engine or test image {TEST_IMAGE} unavailable ({error}); run scripts/test")
    return client


def fake_gpu_uuids() -> list[str]:
    seed = os.environ["FAKE_GPU_SEED"]
    return [f"GPU-{seed}-0000-4000-8000-{i:012d}" for i in range(int(os.environ["FAKE_GPU_COUNT"]))]


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

    def commit(self, files: dict[str, str], message: str) -> None:
        """Write `files` (paths relative to the repository; an `install.sh` executable) and commit them."""
        for name, text in files.items():
            path = self.path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if name.endswith("install.sh"):
                path.chmod(0o755)
        self.git("add", ".")
        self.git("commit", "-q", "-m", message)

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
        # ignore_removed: a run's container its dispatcher removes between the list and its inspect
        return self.client.containers.list(all=True, filters={"label": f"{LABEL_REPO}={self.common_dir}"},
                                           ignore_removed=True)

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
    import docker.errors

    for container in repo.containers():
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # a run's container, removed by its dispatcher in between
        except docker.errors.APIError as error:
            if "already in progress" not in str(error):  # ... or being removed by it right now
                raise


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
    """The first process's environment: where the engine's NVIDIA driver puts its variables.
    Read once that process runs: just after a start, PID 1 may still be runc's own init, whose
    environment is not the container's (its configured variables are not there yet)."""
    import time

    container.reload()
    wanted = {item.split("=", 1)[0] for item in container.attrs["Config"].get("Env") or []}
    deadline = time.monotonic() + 15
    while True:
        result = container.exec_run(["cat", "/proc/1/environ"])
        assert result.exit_code == 0, result.output
        found = dict(item.split("=", 1) for item in result.output.decode().split("\0") if "=" in item)
        if wanted <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


class PrivateEngine:
    """A real dockerd of the tests' own (own socket, data root and network namespace), which
    tests may stop and start at will without disturbing the shared engine."""

    SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def __init__(self, with_nvidia_hook: bool, image_source) -> None:
        import shutil

        self.dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.base = Path("/tmp") / f"gpuspace-engine-{secrets.token_hex(3)}"  # short: socket paths are limited
        self.base.mkdir()
        self.host = f"unix://{self.base}/docker.sock"
        self.path = f"{FAKES}{os.pathsep}{self.SYSTEM_PATH}" if with_nvidia_hook else self._path_without_nvidia()
        (self.base / "daemon.json").write_text("{}")  # not the host's: it may name an NVIDIA runtime
        self.process = None
        self.start()
        self.client().images.load(b"".join(image_source.images.get(TEST_IMAGE).save(named=TEST_IMAGE)))

    def _path_without_nvidia(self) -> str:
        """The system's programs without NVIDIA's (a real host has its hook on PATH): links to
        every other one, in one directory of the engine's own."""
        shadow = self.base / "bin"
        shadow.mkdir()
        for folder in reversed(self.SYSTEM_PATH.split(os.pathsep)):  # earlier PATH entries win
            for entry in Path(folder).iterdir() if Path(folder).is_dir() else []:
                if not entry.name.startswith("nvidia-"):
                    (shadow / entry.name).unlink(missing_ok=True)
                    (shadow / entry.name).symlink_to(entry)
        return str(shadow)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host)

    def start(self) -> None:
        import time

        log = open(self.base / "dockerd.log", "ab")
        # Its own network namespace: two daemons in one namespace fight over bridges and iptables.
        self.process = subprocess.Popen(
            ["unshare", "--net", self.dockerd, "--host", self.host, "--config-file", str(self.base / "daemon.json"),
             "--data-root", str(self.base / "data"),
             "--exec-root", str(self.base / "exec"), "--pidfile", str(self.base / "dockerd.pid"),
             "--bridge", "none", "--iptables=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, env={"PATH": self.path}, start_new_session=True,
        )
        log.close()
        for _ in range(120):
            try:
                self.client().ping()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.25)
        pytest.fail(f"private dockerd did not start: {(self.base / 'dockerd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def ensure_running(self) -> None:
        """Started again where a test stopped or killed it (and reaped, if it was killed)."""
        if self.process is not None and self.process.poll() is not None:
            self.process = None
        if self.process is None:
            self.start()

    def clear(self) -> None:
        """Nothing of a test's left on it: its containers (restart policy or not) removed."""
        for container in self.client().containers.list(ignore_removed=True, all=True):
            container.remove(force=True)

    def close(self) -> None:
        self.stop()
        subprocess.run(["rm", "-rf", str(self.base)], check=False)


def _private_engine(docker_client, with_nvidia_hook: bool):
    import shutil

    if os.getuid() != 0 or not shutil.which("dockerd"):
        unavailable("a private dockerd needs root and dockerd")
    return PrivateEngine(with_nvidia_hook, docker_client)


@pytest.fixture(scope="session")
def no_nvidia_engine(docker_client):
    """A second, real dockerd started without the NVIDIA hook on its PATH; yields its DOCKER_HOST."""
    engine = _private_engine(docker_client, with_nvidia_hook=False)
    yield engine.host
    engine.close()


@pytest.fixture(scope="session")
def _stoppable_engine(docker_client):
    engine = _private_engine(docker_client, with_nvidia_hook=True)
    yield engine
    engine.close()


@pytest.fixture
def private_engine(_stoppable_engine):
    """A real dockerd with the stand-in NVIDIA hook, for tests that stop, kill and start the
    engine: one per test session (a start and the image's load take seconds), running and
    empty when each test starts."""
    engine = _stoppable_engine
    engine.ensure_running()
    engine.clear()
    yield engine
    engine.ensure_running()
    engine.clear()


def overlap(records) -> int:
    """The most runs that were running at one moment."""
    import datetime as dt

    events = sorted([(dt.datetime.fromisoformat(r["started"]), 1) for r in records]
                    + [(dt.datetime.fromisoformat(r["finished"]), -1) for r in records])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll `condition` (for what the hooks do in the background) until true or timed out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = time.monotonic()
        if condition():
            return True
        # a condition that runs a command (`runs --json`) is asked at most a third of the time:
        # the polling of three test files at once would otherwise take a core of its own
        time.sleep(max(0.2, 2 * (time.monotonic() - asked)))
    return condition()


OTHER_ARCH = {"amd64": "arm64", "arm64": "amd64"}


@pytest.fixture
def local_registry(docker_client):
    """A minimal registry (the v2 pull API over HTTP on 127.0.0.1) serving the test image as
    `<host>/pulltest:v1`, so the engine really pulls it, and as `<host>/pulltest:multi`, a
    manifest list of it for this machine's platform and for another (the same layers, its config
    naming the other architecture: it runs here without an emulator). Yields the `v1` reference."""
    import gzip
    import hashlib
    import http.server
    import io
    import tarfile
    import threading

    saved = io.BytesIO(b"".join(docker_client.images.get(TEST_IMAGE).save(named=TEST_IMAGE)))
    blobs: dict[str, bytes] = {}

    def add_blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    with tarfile.open(fileobj=saved) as archive:
        [entry] = json.loads(archive.extractfile("manifest.json").read())
        config = archive.extractfile(entry["Config"]).read()
        layers = [gzip.compress(archive.extractfile(name).read(), mtime=0) for name in entry["Layers"]]
    def manifest_of(config: bytes) -> bytes:
        return json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                       "digest": add_blob(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                        "digest": add_blob(layer)} for layer in layers],
        }).encode()

    manifest = manifest_of(config)
    here = json.loads(config)["architecture"]
    elsewhere = manifest_of(json.dumps({**json.loads(config), "architecture": OTHER_ARCH[here]}).encode())
    by_digest = {"sha256:" + hashlib.sha256(body).hexdigest(): body for body in (manifest, elsewhere)}
    manifest_list = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": len(body),
                       "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                       "platform": {"architecture": architecture, "os": "linux"}}
                      for body, architecture in ((manifest, here), (elsewhere, OTHER_ARCH[here]))],
    }).encode()
    by_digest["sha256:" + hashlib.sha256(manifest_list).hexdigest()] = manifest_list

    class Registry(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _answer(self, body: bytes | None, media_type: str = "application/octet-stream"):
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path in ("/v2/", "/v2"):
                return self._answer(b"{}", "application/json")
            if path.startswith("/v2/pulltest/manifests/"):
                reference = path.rsplit("/", 1)[1]
                body = {"v1": manifest, "multi": manifest_list}.get(reference) or by_digest.get(reference)
                listing = body is manifest_list
                return self._answer(body, "application/vnd.docker.distribution.manifest.list.v2+json" if listing else
                                    "application/vnd.docker.distribution.manifest.v2+json")
            if path.startswith("/v2/pulltest/blobs/"):
                return self._answer(blobs.get(path.rsplit("/", 1)[1]))
            return self._answer(None)

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reference = f"127.0.0.1:{server.server_address[1]}/pulltest:v1"
    try:
        yield reference
    finally:
        server.shutdown()
        for tag in (reference, reference.replace(":v1", ":multi")):
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:  # noqa: BLE001 - not pulled, or already gone
                pass


class FeatureRegistry:
    """An OCI registry on 127.0.0.1 serving Dev Container Features as the spec publishes them:
    a manifest whose config is `application/vnd.devcontainers` and whose layers are tars of the
    feature's folder."""

    LAYER_TYPE = "application/vnd.devcontainers.layer.v1+tar"

    def __init__(self) -> None:
        import http.server
        import threading

        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                body, media = None, "application/octet-stream"
                if path.rstrip("/") == "/v2":
                    body, media = b"{}", "application/json"
                elif path in registry.manifests:
                    body, media = registry.manifests[path], "application/vnd.oci.image.manifest.v1+json"
                elif "/blobs/" in path:
                    body = registry.blobs.get(path.rsplit("/", 1)[1])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                if body and self.command == "GET":
                    self.wfile.write(body)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def serve(self, name: str, tag: str, layers: list[bytes], media_type: str = LAYER_TYPE,
              digest: object = None) -> str:
        """Publish `<host>/<name>:<tag>` and return that reference. `digest`: what the manifest says
        the (one) layer's digest is, the layer being served under it."""
        import hashlib

        def sha256(blob: bytes) -> str:
            return "sha256:" + hashlib.sha256(blob).hexdigest()

        config = b"{}"
        self.blobs.update({sha256(blob): blob for blob in (config, *layers)})
        if isinstance(digest, str):
            self.blobs[digest] = layers[0]
        self.manifests[f"/v2/{name}/manifests/{tag}"] = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.devcontainers", "size": len(config), "digest": sha256(config)},
            "layers": [{"mediaType": media_type, "size": len(layer), "digest": digest or sha256(layer),
                        "annotations": {"org.opencontainers.image.title": f"devcontainer-feature-{number}.tgz"}}
                       for number, layer in enumerate(layers)],
        }).encode()
        return f"{self.host}/{name}:{tag}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feature_registry():
    registry = FeatureRegistry()
    yield registry
    registry.close()


class TarballServer:
    """An https server on this host (a certificate made for 127.0.0.1, trusted through
    REQUESTS_CA_BUNDLE) serving feature tarballs: `files` maps a path to its bytes, to a
    `Location` to redirect to (a str), to ENDLESS (bytes that never end) or to STALL (an
    answer that never comes)."""

    ENDLESS, STALL = object(), object()

    def __init__(self, folder: Path):
        import http.server
        import ssl
        import threading

        self.files: dict[str, object] = {}
        self.closing = threading.Event()
        self.certificate, key = folder / "server.crt", folder / "server.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                        "-out", str(self.certificate)], check=True, capture_output=True)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                found = server.files.get(self.path)
                if found is server.STALL:
                    server.closing.wait(60)
                    return
                if found is server.ENDLESS:  # no length: the body ends when the connection does
                    self.send_response(200)
                    self.end_headers()
                    while not server.closing.is_set():
                        try:
                            self.wfile.write(b"\0" * 65536)
                        except OSError:
                            return
                    return
                if isinstance(found, str):
                    self.send_response(302)
                    self.send_header("Location", found)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Length", str(len(found or b"")))
                self.end_headers()
                self.wfile.write(found or b"")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tarball_server(tmp_path_factory, monkeypatch):
    """A TarballServer, trusted by this process and the commands it runs."""
    server = TarballServer(tmp_path_factory.mktemp("https"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.certificate))
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.close()


SLURM_CONF = Path(os.environ.get("GPUSPACE_TEST_DIR", "/var/lib/gpuspace-test")) / "slurm" / "slurm.conf"


def slurm_cluster(monkeypatch, tmp_path):
    """The test Slurm cluster (scripts/slurm-up), or a failure (a skip unless the engine is
    required); afterwards this test's own jobs (their comment names its repository, under
    tmp_path) are cancelled: other suites may share the cluster. Fixtures `yield from` it."""
    if not SLURM_CONF.exists() or subprocess.run(["sinfo"], capture_output=True,
                                                 env={**os.environ, "SLURM_CONF": str(SLURM_CONF)}).returncode != 0:
        unavailable("no test Slurm cluster (scripts/slurm-up brings it up)")
    monkeypatch.setenv("SLURM_CONF", str(SLURM_CONF))
    yield
    ours = slurm_jobs_of(tmp_path)
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True)


def slurm_jobs_of(tmp_path: Path) -> list[str]:
    """This test's jobs in squeue (array tasks one by one), whatever their state."""
    listed = subprocess.run(["squeue", "--noheader", "--array", "--user", str(os.getuid()), "--format=%i|%k"],
                            capture_output=True, text=True, check=True).stdout
    return [job for job, _, comment in (line.partition("|") for line in listed.splitlines()) if str(tmp_path) in comment]


@pytest.fixture
def no_proxy(monkeypatch):
    """No proxy variables: a feature registry on this host is reached directly."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
