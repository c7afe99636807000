"""Dev Container Features: a folder with `devcontainer-feature.json` and `install.sh`, from the
repository (`"./my-feature"`) or an OCI registry (`ghcr.io/devcontainers/features/python:1`),
installed into an image derived from the configuration's own.

install.sh runs as root in a build step, as a Dockerfile's RUN would: on the engine, not on the
host. The derived image's tag hashes every input (the base image's id, each feature's files and
options, the order), so an image is reused exactly while nothing it is made of changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import json5

from .errors import UsageError

# Metadata a feature may carry that we do not apply: named in the notice.
CONTRIBUTES_UNSUPPORTED = ("entrypoint", "customizations", "dependsOn", "onCreateCommand", "updateContentCommand",
                           "postCreateCommand", "postStartCommand", "postAttachCommand")
_OCI_REFERENCE = re.compile(r"[a-z0-9.-]+(?::\d+)?/[a-z0-9._/-]+(?::[\w.-]+|@sha256:[0-9a-f]{64})")
_LOCAL_REGISTRIES = ("localhost", "127.0.0.1", "[::1]")  # plain HTTP, as Docker allows for loopback
LAYER_TYPE = "application/vnd.devcontainers.layer.v1+tar"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_METADATA_BYTES = 1 << 20


@dataclass
class Feature:
    key: str  # as the devcontainer.json names it
    folder: Path
    options: dict[str, Any] | str = field(default_factory=dict)  # a string: the version, where there is one
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The folder's name, or the reference's last path part without tag (as the reference)."""
        return Path(self.key.split("@")[0]).name.split(":")[0]

    def environment(self) -> dict[str, str]:
        """Options as install.sh gets them: the defaults of devcontainer-feature.json, then the
        given ones, named as the reference names them (`version` -> VERSION, `ppa-x` -> PPA_X)."""
        declared = self.metadata.get("options") or {}
        values = {name: spec.get("default") for name, spec in declared.items()
                  if isinstance(spec, dict) and "default" in spec}
        if isinstance(self.options, dict):
            values.update(self.options)
        elif "version" in declared:
            values["version"] = self.options
        return {_safe_id(name): _text(value) for name, value in values.items()}

    def container_env(self) -> dict[str, str]:
        """Its containerEnv, for ENV lines: names are checked when the feature is read."""
        env = self.metadata.get("containerEnv") or {}
        return {str(key): _text(value) for key, value in env.items()} if isinstance(env, dict) else {}


def _dockerfile_quoted(value: str) -> str:
    """A Dockerfile ENV value in double quotes; `$` stays, so `${PATH}` expands as the reference's does."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _safe_id(name: str) -> str:
    return re.sub(r"^[\d_]+", "_", re.sub(r"[^\w_]", "_", name)).upper()


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def resolve(path: Path, key: str, options: Any, base: Path, repo_root: Path, worktree: Path,
            fetch: Callable[[str], Path] | None) -> Feature | None:
    """The feature `key` of the devcontainer.json at `path`; None for a kind we do not support
    (a tarball URL, a deprecated short id)."""
    if isinstance(options, bool) or options is None:
        options = {}
    if not isinstance(options, (dict, str)):
        raise UsageError(f"{path}: the options of feature {key} must be an object")
    if key.startswith(("./", "../")):
        folder = (base / key).resolve()
        from .devcontainer import inside

        if not inside(folder, repo_root, worktree):
            raise UsageError(f"{path}: feature {key} is outside the repository")
    elif "/" not in key:
        raise UsageError(f"{path}: feature '{key}' names neither a folder nor a registry: a feature in a folder is "
                         f"written \"./{key}\"", hint="the short ids of the old feature format are not supported")
    elif _OCI_REFERENCE.fullmatch(_with_tag(key)):
        folder = (fetch or fetch_oci)(key)
    else:
        return None
    for name in ("devcontainer-feature.json", "install.sh"):
        if not (folder / name).is_file():
            raise UsageError(f"{path}: feature {key} has no {name}", hint=f"a feature is a folder with "
                             f"devcontainer-feature.json and install.sh (looked in {folder})")
    try:
        metadata = json5.loads(_read_metadata(folder / "devcontainer-feature.json").decode("utf-8"))
    except OSError as error:
        raise UsageError(f"{path}: feature {key}: cannot read devcontainer-feature.json: "
                         f"{error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: feature {key}: devcontainer-feature.json is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{path}: feature {key}: devcontainer-feature.json must be an object")
    env = metadata.get("containerEnv") or {}
    if not isinstance(env, dict) or not all(isinstance(name, str) and _ENV_NAME.fullmatch(name) for name in env):
        raise UsageError(f"{path}: feature {key}: containerEnv in devcontainer-feature.json must map variable "
                         f"names (letters, digits, _) to values")
    if not isinstance(metadata.get("options") or {}, dict):
        raise UsageError(f"{path}: feature {key}: options in devcontainer-feature.json must be an object")
    return Feature(key, folder, options if isinstance(options, str) else dict(options), metadata)


def _read_metadata(path: Path) -> bytes:
    """A regular file, not through a link, of a sane size (a FIFO or /dev/zero would never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError("not a regular file")
        content = handle.read(MAX_METADATA_BYTES + 1)
    if len(content) > MAX_METADATA_BYTES:
        raise OSError(f"larger than {MAX_METADATA_BYTES >> 20} MiB")
    return content


def _with_tag(reference: str) -> str:
    """`:latest` where the reference names no tag or digest, as the reference does."""
    return reference if ":" in reference.split("/")[-1] else f"{reference}:latest"  # a digest has one too


def _cache_folder(reference: str) -> tuple[str, Path]:
    """The reference with its tag (`:latest` when none), and where its feature is kept."""
    from platformdirs import user_cache_dir

    target = _with_tag(reference)
    return target, Path(user_cache_dir("git-gpuspace")) / "features" / hashlib.sha256(target.encode()).hexdigest()[:16]


def cached_oci(reference: str) -> Path:
    """The feature as last fetched (re-reading what a made container was made with needs no
    network), or fetched now."""
    _, folder = _cache_folder(reference)
    return folder if folder.is_dir() else fetch_oci(reference)


def fetch_oci(reference: str) -> Path:
    """A feature from an OCI registry: its one layer (a tar of the feature's folder), unpacked
    into the user's cache (a tag may move: fetched again by every new container). A failure
    names the feature."""
    import oras.client

    registry = reference.split("/", 1)[0]
    target, folder = _cache_folder(reference)
    cache = folder.parent
    cache.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix="pull-", dir=cache))
    insecure = (registry.rpartition(":")[0] if re.search(r":\d+$", registry) else registry) in _LOCAL_REGISTRIES
    unpacked = None
    try:
        _reachable(registry, insecure)
        client = oras.client.OrasClient(insecure=insecure)
        # the manifest and the one blob only: the library's own pull unpacks some layer types
        # itself, without the checks below
        layers = client.get_manifest(target).get("layers") or []
        if len(layers) != 1:
            raise ValueError(f"expected one layer, found {len(layers)}")
        digest = layers[0].get("digest")
        if (layers[0].get("mediaType") != LAYER_TYPE or not isinstance(digest, str)
                or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
            raise ValueError(f"its layer is not a Dev Container Feature ({LAYER_TYPE} with a sha256 digest)")
        archive_path = download / "layer.tar"
        client.download_blob(target, digest, str(archive_path))
        if "sha256:" + _sha256_of(archive_path) != digest:
            raise ValueError("the layer does not match its digest")
        if not hasattr(tarfile, "data_filter"):
            raise ValueError("this Python cannot unpack an archive safely (3.10.12, 3.11.4 or later needed)")
        unpacked = Path(tempfile.mkdtemp(prefix="unpacked-", dir=cache))
        with tarfile.open(archive_path) as archive:
            archive.extractall(unpacked, filter="data")  # no links out, no device files, no absolute paths
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(unpacked, folder)
    except Exception as error:  # noqa: BLE001 - the registry, the network or the archive: one line
        raise UsageError(f"cannot fetch feature {reference}: {_reason(error)}",
                         hint="check the reference and that the registry is reachable; a feature in a folder of "
                              "the repository (\"./my-feature\") needs no registry") from None
    finally:
        shutil.rmtree(download, ignore_errors=True)
        if unpacked is not None:  # gone after the rename; left when unpacking was refused
            shutil.rmtree(unpacked, ignore_errors=True)
    return folder


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reachable(registry: str, insecure: bool) -> None:
    """Fail in seconds when the registry cannot be reached at all: the library retries every
    request for minutes. Through a proxy, the library's own request decides."""
    import requests.utils

    url = f"{'http' if insecure else 'https'}://{registry}/v2/"
    if requests.utils.get_environ_proxies(url):
        return
    host, _, port = registry.rpartition(":") if re.search(r":\d+$", registry) else (registry, "", "")
    try:
        socket.create_connection((host.strip("[]"), int(port or (80 if insecure else 443))), timeout=10).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach {registry}: {error.strerror or error}") from None


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def ordered(features: list[Feature]) -> list[Feature]:
    """The file's order, except that a feature comes after those it names in installsAfter."""
    placed: list[Feature] = []
    waiting = list(features)
    while waiting:
        ids = {feature.id for feature in waiting}
        ready = next((f for f in waiting if not ids & {Path(str(a).rsplit(":", 1)[0]).name
                                                       for a in f.metadata.get("installsAfter") or []} - {f.id}),
                     waiting[0])  # a cycle: the file's order
        placed.append(ready)
        waiting.remove(ready)
    return placed


@dataclass
class DerivedImage:
    """The configuration's image with its features installed."""

    base: str
    base_id: str  # the base image's id: a changed base is a new derived image
    base_user: str  # the base image's USER, restored after the installs
    features: list[Feature]
    container_user: str | None = None
    remote_user: str | None = None

    def tag(self) -> str:
        from .devcontainer import hash_tree

        digest = hashlib.sha256(f"{self.base}\0{self.base_id}\0{self.base_user}\0{self.container_user}\0"
                                f"{self.remote_user}".encode())
        for feature in self.features:
            digest.update(f"\0{feature.key}\0{sorted(feature.environment().items())}".encode())
            hash_tree(digest, feature.folder)
        return f"gpuspace-build/features:{digest.hexdigest()[:16]}"

    def dockerfile(self) -> str:
        """As the reference lays it out: as root, each feature's containerEnv as ENV before its
        install.sh (so that PATH additions see the PATH so far), then the image's user again."""
        container_user = self.container_user or self.base_user or "root"
        users = {"_CONTAINER_USER": container_user, "_REMOTE_USER": self.remote_user or container_user}
        homes = " ".join(f"{name}_HOME=$(awk -F: -v u={shlex.quote(user)} '$1==u{{print $6}}' /etc/passwd)"
                         for name, user in users.items())
        lines = [f"FROM {self.base}", "USER root"]
        for number, feature in enumerate(self.features):
            where = f"/tmp/gpuspace-features/{number}"
            lines += [f"ENV {name}={_dockerfile_quoted(value)}" for name, value in feature.container_env().items()]
            assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in {**users, **feature.environment()}.items())
            lines += [f"COPY {number}/ {where}/",
                      f"RUN cd {where} && chmod +x install.sh && export {homes} && env {assignments} ./install.sh "
                      f"&& rm -rf {where}"]
        if self.base_user:
            lines.append(f"USER {self.base_user}")
        return "\n".join(lines) + "\n"

    def context(self) -> Path:
        """A build context: each feature's folder, numbered, and the Dockerfile."""
        folder = Path(tempfile.mkdtemp(prefix="gpuspace-features-"))
        for number, feature in enumerate(self.features):
            shutil.copytree(feature.folder, folder / str(number), symlinks=True)
        (folder / "Dockerfile").write_text(self.dockerfile())
        return folder
