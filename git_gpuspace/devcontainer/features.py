"""Dev Container Features: a folder with `devcontainer-feature.json` and `install.sh`, from the
repository (`"./my-feature"`), an OCI registry (`ghcr.io/devcontainers/features/python:1`) or a
tarball's https URL (`https://host/path/devcontainer-feature-<id>.tgz`), installed into an image
derived from the configuration's own.

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
from functools import cmp_to_key
from pathlib import Path
from typing import Any, Callable

import json5

from ..errors import UsageError

# Metadata a feature may carry that we do not apply: named in the notice.
CONTRIBUTES_UNSUPPORTED = ("entrypoint", "customizations")
# The short ids of the old feature format the reference maps to ghcr.io/devcontainers/features.
_MIGRATED_IDS = {**{name: name for name in (
    "aws-cli", "azure-cli", "desktop-lite", "docker-in-docker", "docker-from-docker", "dotnet", "git", "git-lfs",
    "github-cli", "java", "kubectl-helm-minikube", "node", "powershell", "python", "ruby", "rust", "sshd",
    "terraform")}, "golang": "go", "common": "common-utils", "gradle": "java", "maven": "java", "jupyterlab": "python"}
_MIGRATED_TO = "ghcr.io/devcontainers/features"
_OCI_REFERENCE = re.compile(r"[a-z0-9.-]+(?::\d+)?/[a-z0-9._/-]+(?::[\w.-]+|@sha256:[0-9a-f]{64})")
_LOCAL_REGISTRIES = ("localhost", "127.0.0.1", "[::1]")  # plain HTTP, as Docker allows for loopback
LAYER_TYPE = "application/vnd.devcontainers.layer.v1+tar"
# A tarball's name, as the reference requires it: devcontainer-feature-<id>.tgz
_TARBALL_NAME = re.compile(r"devcontainer-feature-([a-zA-Z0-9_-]+)\.tgz")
MAX_TARBALL_BYTES = 256 << 20
TARBALL_TIMEOUT_S = (10, 60)  # to connect, and between two reads of the answer
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_METADATA_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    """A feature as the reference compares features: a local folder by its path (as written, not
    through links), a registry feature by registry/namespace, id and tag (None: a digest)."""

    kind: str  # "file-path", "oci" or "direct-tarball", the reference's names
    location: str  # the folder, registry/namespace, or the tarball's URL
    id: str = ""
    tag: str | None = None

    @property
    def resource(self) -> str:
        return f"{self.location}/{self.id}" if self.kind == "oci" else self.location


@dataclass
class Feature:
    key: str  # as the devcontainer.json (or the dependsOn naming it) names it
    folder: Path
    options: dict[str, Any] | str = field(default_factory=dict)  # a string: the version, where there is one
    metadata: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None  # what the install order compares; set by resolve

    @property
    def id(self) -> str:
        """The folder's name, a tarball's <id>, or the reference's last path part without tag (as
        the reference)."""
        if self.source is not None and self.source.kind == "direct-tarball":
            return _tarball_id(self.key) or ""
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
    (an http:// URL, a malformed registry reference). `fetch`: brings a registry's or a tarball's
    feature (fetch_feature unless told)."""
    if isinstance(options, bool) or options is None:
        options = {}
    if not isinstance(options, (dict, str)):
        raise UsageError(f"{path}: the options of feature {key} must be an object")
    if key.startswith(("./", "../")):
        folder = (base / key).resolve()
        from ..folders import inside

        if not inside(folder, repo_root, worktree):
            raise UsageError(f"{path}: feature {key} is outside the repository", hint=_LOCAL_RULE)
        source = Source("file-path", _local_folder(path, key, base, worktree))
    elif key.startswith("https://"):
        if _tarball_id(key) is None:
            raise UsageError(f"{path}: feature {key}: Expected tarball name to follow "
                             f"'devcontainer-feature-<feature-id>.tgz' format.",
                             hint="a feature's tarball is named devcontainer-feature-<id>.tgz, the id of letters, "
                                  "digits, - and _")
        folder = (fetch or fetch_feature)(key)
        source = Source("direct-tarball", key)
    elif "/" not in key:
        if key in _MIGRATED_IDS:
            raise UsageError(f"{path}: Could not resolve Feature '{key}': the short ids of the old feature format "
                             f"are not supported", hint=f"its current form is \"{_MIGRATED_TO}/{_MIGRATED_IDS[key]}:1\"")
        raise UsageError(f"{path}: feature '{key}' names neither a folder nor a registry: a feature in a folder is "
                         f"written \"./{key}\"", hint="the short ids of the old feature format are not supported")
    elif not _registry_host(key.split("/", 1)[0]):
        raise UsageError(f"{path}: Could not resolve Feature '{key}'.  Ensure the Feature is published and accessible "
                         f"from your current environment.",
                         hint="a feature from a registry is named with the registry's host (ghcr.io/owner/repo/feature); "
                              "the GitHub-release features of the old format are not supported")
    elif _OCI_REFERENCE.fullmatch(_with_tag(key.lower())):  # the reference lowercases a registry reference
        folder = (fetch or fetch_feature)(key.lower())
        source = _oci_source(key.lower())
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
    return Feature(key, folder, options if isinstance(options, str) else dict(options), metadata, source)


_LOCAL_RULE = "a local feature is a folder under .devcontainer/, named from the devcontainer.json (\"./name\")"


def _local_folder(path: Path, key: str, base: Path, worktree: Path) -> str:
    """The folder `key` names, as written (the reference's rule: in the worktree's .devcontainer/
    folder, whichever devcontainer.json names it)."""
    folder = os.path.normpath(base / key)
    if os.path.relpath(folder, worktree / ".devcontainer").split(os.sep)[0] == "..":
        raise UsageError(f"{path}: feature {key}: Local file path parse error. Resolved path must be a child of the "
                         f".devcontainer/ folder.  Parsed: {folder}", hint=_LOCAL_RULE)
    return folder


def _tarball_id(url: str) -> str | None:
    """The <id> of a tarball URL's devcontainer-feature-<id>.tgz; None for another name."""
    from urllib.parse import urlsplit

    found = _TARBALL_NAME.fullmatch(urlsplit(url).path.rsplit("/", 1)[-1])
    return found.group(1) if found else None


def _registry_host(name: str) -> bool:
    """As Docker tells a registry from a user: a dot, a port, or localhost."""
    return "." in name or ":" in name or name == "localhost"


def _oci_source(reference: str) -> Source:
    """As the reference's getRef splits a reference: registry/namespace/id, then tag or digest."""
    if "@" in reference:
        resource, tag = reference.rsplit("@", 1)[0], None
    elif reference.rfind(":") > reference.rfind("/"):
        resource, tag = reference.rsplit(":", 1)
    else:
        resource, tag = reference, "latest"
    location, _, name = resource.rpartition("/")
    return Source("oci", location, name, tag)


def _source(path: Path, key: str, base: Path, worktree: Path) -> Source | None:
    """What an installsAfter or overrideFeatureInstallOrder entry names, without fetching it;
    None for what names no feature we could install."""
    if key.startswith(("./", "../")):
        return Source("file-path", _local_folder(path, key, base, worktree))
    if key.startswith("https://"):
        return Source("direct-tarball", key) if _tarball_id(key) else None
    if "/" not in key:
        return Source("oci", _MIGRATED_TO, _MIGRATED_IDS[key], "1") if key in _MIGRATED_IDS else None
    key = key.lower()
    if _registry_host(key.split("/", 1)[0]) and _OCI_REFERENCE.fullmatch(_with_tag(key)):
        return _oci_source(key)
    return None


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
    """The reference with its tag (`:latest` when none; a URL as it is), and where its feature is kept."""
    from platformdirs import user_cache_dir

    target = reference if reference.startswith("https://") else _with_tag(reference)
    return target, Path(user_cache_dir("git-gpuspace")) / "features" / hashlib.sha256(target.encode()).hexdigest()[:16]


def fetch_feature(reference: str) -> Path:
    """A registry's feature (fetch_oci) or a tarball's (fetch_tarball), fetched now."""
    return fetch_tarball(reference) if reference.startswith("https://") else fetch_oci(reference)


def cached_feature(reference: str) -> Path:
    """The feature as last fetched (re-reading what a made container was made with needs no
    network), or fetched now."""
    _, folder = _cache_folder(reference)
    return folder if folder.is_dir() else fetch_feature(reference)


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
        _unpack(archive_path, folder)
    except Exception as error:  # noqa: BLE001 - the registry, the network or the archive: one line
        raise UsageError(f"cannot fetch feature {reference}: {_reason(error)}",
                         hint="check the reference and that the registry is reachable; a feature in a folder of "
                              "the repository (\"./my-feature\") needs no registry") from None
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return folder


def fetch_tarball(url: str) -> Path:
    """A feature from a tarball's https URL (a redirect may not leave https), unpacked into the
    user's cache as a registry's feature is (fetched again by every new container). A failure
    names the feature."""
    import requests
    from urllib.parse import urljoin, urlsplit

    def https_only(response, **_):  # each response of the chain, before its redirect is followed
        if response.is_redirect:
            target = urljoin(response.url, response.headers["location"])
            if not target.startswith("https://"):
                raise ValueError(f"it redirects to {target}, not https")

    _, folder = _cache_folder(url)
    cache = folder.parent
    cache.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix="pull-", dir=cache))
    try:
        where = urlsplit(url)
        _reachable(f"{where.hostname}:{where.port or 443}", False)
        # streamed: the size limit holds while it comes, not once all of it is in memory
        with requests.get(url, stream=True, timeout=TARBALL_TIMEOUT_S, hooks={"response": https_only}) as response:
            response.raise_for_status()
            archive_path = download / "feature.tgz"
            size = 0
            with open(archive_path, "wb") as archive:
                for block in response.iter_content(1 << 20):
                    size += len(block)
                    if size > MAX_TARBALL_BYTES:
                        raise ValueError(f"larger than {MAX_TARBALL_BYTES >> 20} MiB")
                    archive.write(block)
        _unpack(archive_path, folder)
    except Exception as error:  # noqa: BLE001 - the network, the server or the archive: one line
        raise UsageError(f"cannot fetch feature {url}: {_reason(error)}",
                         hint="check the URL and that its host is reachable; a feature in a folder of the "
                              "repository (\"./my-feature\") needs no network") from None
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return folder


def _unpack(archive_path: Path, folder: Path) -> None:
    """The archive (tar, maybe compressed) unpacked into `folder`, which it replaces whole."""
    if not hasattr(tarfile, "data_filter"):
        raise ValueError("this Python cannot unpack an archive safely (3.10.12, 3.11.4 or later needed)")
    unpacked = Path(tempfile.mkdtemp(prefix="unpacked-", dir=folder.parent))
    try:
        with tarfile.open(archive_path) as archive:
            archive.extractall(unpacked, filter="data")  # no links out, no device files, no absolute paths
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(unpacked, folder)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)  # gone after the rename; left when unpacking was refused


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


MAX_FEATURES = 100  # with every dependency: a chain of dependsOn fetches each link


@dataclass(eq=False)
class _Node:
    """A feature in the reference's dependency graph: the file's own, or named by a dependsOn."""

    key: str
    options: Any
    needed_by: Feature | None = None
    feature: Feature | None = None
    depends_on: list[_Node] = field(default_factory=list)
    installs_after: list[Source] = field(default_factory=list)
    aliases: list[str] | None = None  # its id and legacyIds, once its metadata is read
    priority: int = 0  # from overrideFeatureInstallOrder
    digest: str = ""  # a registry feature's content, where the reference compares manifest digests


def install_order(path: Path, requested: dict, override: Any, base: Path, repo_root: Path, worktree: Path,
                  fetch: Callable[[str], Path] | None) -> tuple[list[Feature], list[str]]:
    """The features of the file and, recursively, those their dependsOn name, in the order the
    reference installs them (containerFeaturesOrder.ts): in rounds, each of the features whose
    dependsOn are installed and whose installsAfter (those present) are, of these only the ones
    with the highest overrideFeatureInstallOrder priority, sorted as the reference sorts. A
    feature named twice with the same options is installed once. Also the notices: what is
    named and not installed."""
    named: list[str] = []
    graph: list[_Node] = []
    worklist = [_Node(key, options) for key, options in requested.items()]
    while worklist:
        current = worklist.pop(0)
        feature = resolve(path, current.key, current.options, base, repo_root, worktree, fetch)
        if feature is None:
            if current.needed_by is None:
                named.append(f"feature {current.key} (only a local folder, an OCI reference or an https:// tarball)")
                continue
            raise UsageError(f"{path}: feature {current.needed_by.key} depends on {current.key}, which is not a "
                             f"local folder, an OCI reference or an https:// tarball")
        current.feature = feature
        if feature.source and feature.source.kind == "oci":
            from ..folders import hash_tree

            digest = hashlib.sha256()
            hash_tree(digest, feature.folder)
            current.digest = digest.hexdigest()
        if any(_equal(node, current) for node in graph):
            continue
        if len(graph) == MAX_FEATURES:
            raise UsageError(f"{path}: more than {MAX_FEATURES} features with their dependencies (dependsOn)")
        _read_dependencies(path, current, base, worktree, named)
        worklist += current.depends_on
        graph.append(current)
    if override is not None:
        _apply_override(path, override, graph, base, worktree)
    for node in graph:  # installsAfter orders only among the features there
        node.installs_after = [soft for soft in node.installs_after if any(_satisfies(other, soft) for other in graph)]
    installed: list[_Node] = []
    waiting = list(graph)
    while waiting:
        ready = [node for node in waiting
                 if all(any(_equal(done, hard) for done in installed) for hard in node.depends_on)
                 and all(any(_satisfies(done, soft) for done in installed) for soft in node.installs_after)]
        if not ready:
            remaining = ", ".join(dict.fromkeys(node.key for node in waiting))
            raise UsageError(f"{path}: Failed to compute Feature installation order! Circular dependency detected: "
                             f"{remaining}", hint="their dependsOn and installsAfter (devcontainer-feature.json) "
                                                  "name each other; nothing was made")
        top = max(node.priority for node in ready)
        ready = sorted((node for node in ready if node.priority == top), key=cmp_to_key(_compare))
        waiting = [node for node in waiting if node not in ready]
        installed += ready
    return [node.feature for node in installed], named


def _read_dependencies(path: Path, node: _Node, base: Path, worktree: Path, named: list[str]) -> None:
    feature = node.feature
    metadata = feature.metadata
    depends_on = metadata.get("dependsOn") or {}
    if not isinstance(depends_on, dict):
        raise UsageError(f"{path}: feature {feature.key}: dependsOn in devcontainer-feature.json must be an object "
                         f"(feature -> options)")
    installs_after = metadata.get("installsAfter") or []
    if not isinstance(installs_after, list) or not all(isinstance(key, str) for key in installs_after):
        raise UsageError(f"{path}: feature {feature.key}: installsAfter in devcontainer-feature.json must be a list "
                         f"of feature ids")
    legacy = metadata.get("legacyIds")
    node.aliases = [str(metadata.get("currentId") or metadata.get("id") or feature.id),
                    *(str(name) for name in (legacy if isinstance(legacy, list) else []))]
    node.depends_on = [_Node(key, options, feature) for key, options in depends_on.items()]
    for key in installs_after:
        soft = _source(path, key, base, worktree)
        if soft is None:
            named.append(f"feature {feature.key}: installsAfter {key} (names no local folder or registry feature)")
        else:
            node.installs_after.append(soft)


def _apply_override(path: Path, override: Any, graph: list[_Node], base: Path, worktree: Path) -> None:
    """The first entry gets the highest priority; a feature it names installs as soon as it can."""
    if not isinstance(override, list) or not all(isinstance(key, str) for key in override):
        raise UsageError(f"{path}: 'overrideFeatureInstallOrder' must be a list of feature ids")
    for index, key in enumerate(override):
        named = _source(path, key, base, worktree)
        if named is None:
            raise UsageError(f"{path}: Feature '{key}' in 'overrideFeatureInstallOrder' could not be processed.",
                             hint="name a feature as the features object does (\"./name\" or a registry reference)")
        for node in graph:
            if _satisfies(node, named, aliases=False):
                node.priority = max(node.priority, len(override) - index)


def _satisfies(node: _Node, soft: Source, aliases: bool = True) -> bool:
    """Whether `node` is what an installsAfter (or an override) names: the same folder, or the
    same registry feature whatever its tag. The reference also matches a renamed feature by the
    named one's legacyIds, which it fetches; here the installed one's own legacyIds stand in."""
    source = node.feature.source
    if source.kind != soft.kind:
        return False
    if source.kind != "oci":
        return source.location == soft.location
    return source.resource == soft.resource or (aliases and source.location == soft.location
                                                and soft.id in (node.aliases or []))


def _equal(a: _Node, b: _Node) -> bool:
    return a.feature.source.kind == b.feature.source.kind and _compare(a, b) == 0


def _compare(a: _Node, b: _Node) -> int:
    """The reference's compareTo: by kind's own terms, then options; across kinds by the id as written."""
    first, second = a.feature.source, b.feature.source
    if first.kind != second.kind:
        return _locale_compare(a.key, b.key)
    options = _options_compare(a.feature.options, b.feature.options)
    if first.kind != "oci":  # a folder or a tarball: by where it is
        return _locale_compare(first.location, second.location) or options
    if a.digest == b.digest and options == 0:
        return 0
    if first.location != second.location:
        return _locale_compare(first.location, second.location)
    if not set(a.aliases or [first.id]) & set(b.aliases or [second.id]):
        return _locale_compare(first.id, second.id)
    if first.tag and second.tag and first.tag != second.tag:
        return _locale_compare(first.tag, second.tag)
    return options or _locale_compare(a.digest, b.digest)


def _options_compare(a: Any, b: Any) -> int:
    """The reference's optionsCompareTo: fewer options first, then by sorted name and value."""
    if isinstance(a, str) and isinstance(b, str):
        return _locale_compare(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return len(a) - len(b)
        for name_a, name_b in zip(sorted(a), sorted(b)):
            if name_a != name_b:
                return _locale_compare(name_a, name_b)
            value_a, value_b = a[name_a], b[name_b]
            if isinstance(value_a, str) and isinstance(value_b, str) and value_a != value_b:
                return _locale_compare(value_a, value_b)
            if isinstance(value_a, bool) and isinstance(value_b, bool) and value_a != value_b:
                return 1 if value_a else -1
        return 0
    return _locale_compare(*("object" if isinstance(value, dict) else "string" for value in (a, b)))


# JavaScript's localeCompare (ICU's root collation) on ASCII: punctuation in this order, then
# digits, then letters ignoring case; only then lower case before upper.
_PUNCTUATION = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"


def _collation_key(text: str) -> tuple:
    primary, case = [], []
    for char in text:
        if char in _PUNCTUATION:
            primary.append((0, _PUNCTUATION.index(char)))
        elif char.isdigit():
            primary.append((1, ord(char)))
        elif char.isalpha():
            primary.append((2, ord(char.lower())))
        else:
            primary.append((3, ord(char)))
        case.append(char.isupper())
    return primary, case


def _locale_compare(a: str, b: str) -> int:
    first, second = _collation_key(a), _collation_key(b)
    return (first > second) - (first < second)


@dataclass
class DerivedImage:
    """The configuration's image with its features installed."""

    base: str
    base_id: str  # the base image's id: a changed base is a new derived image
    base_user: str  # the base image's USER, restored after the installs
    features: list[Feature]
    container_user: str | None = None
    remote_user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # its devcontainer.metadata (image_metadata)

    def tag(self) -> str:
        from ..folders import hash_tree

        digest = hashlib.sha256(f"{self.base}\0{self.base_id}\0{self.base_user}\0{self.container_user}\0"
                                f"{self.remote_user}\0{sorted(self.labels.items())}".encode())
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
