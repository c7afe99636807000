"""`.devcontainer/devcontainer.json`: read as the reference implementation (devcontainers/cli)
reads it, and taken as far as it is safe.

The file comes from the repository, so it is untrusted until the user trusts its content
(`git gpuspace trust`, or `--trust`; see trust.py). Untrusted, the container is made with the
safe subset: no lifecycle commands, no `${localEnv:...}` (the host's environment stays on the
host), and no privileged mode, host namespaces, capabilities, devices, Docker socket or host
paths outside the repository. What is skipped is named in one notice, with the command that
trusts the file; what we do not support in another; a configuration we cannot make as written
(a Compose one) is refused before anything is made. `--gpus` in runArgs never overrides the
exclusive GPU allocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import json5

from .. import boundary
from ..folders import hash_tree, inside
from . import compose as compose_module
from . import features as features_module
from ..errors import UsageError
from ..installation import WORKSPACE
from ..model import PortRequest, mount_parts, mount_text
from ..engine.container_env import CACHE_MOUNT
from ..data_dirs import DATA_MOUNT
from ..services import SERVICE_PORTS

MAX_BYTES = 1 << 20  # a devcontainer.json is a few KiB; a huge one is an attack on the parser
# In the order the spec runs them: the first three once, after the container's first start;
# postStartCommand after every start, and postAttachCommand then too (as the reference's `up`
# runs it: the command that starts the container is what attaches).
LIFECYCLE = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand", "postAttachCommand")
EVERY_START = ("postStartCommand", "postAttachCommand")
SUPPORTED = {"name", "image", "build", "dockerFile", "context", "containerEnv", "forwardPorts", "mounts",
             "appPort", "portsAttributes",
             "otherPortsAttributes",  # what the editor does with ports it detects: we forward none unasked
             "hostRequirements", "runArgs", "features", "overrideFeatureInstallOrder", "remoteUser", "containerUser",
             "workspaceFolder",
             "workspaceMount", "overrideCommand", "init", "privileged", "capAdd", "securityOpt", *LIFECYCLE,
             "remoteEnv", "userEnvProbe", "initializeCommand",
             "waitFor",  # every command has finished before `add` returns, so any waitFor holds
             "dockerComposeFile", "service", "runServices", "shutdownAction",  # trusted only: compose.py
             "$schema"}  # names the schema, asks for nothing
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "::1")
_VARIABLE = re.compile(r"\$\{(.*?)\}")  # as the reference: non-greedy, the name may carry ":args"


@dataclass
class Build:
    dockerfile: Path
    context: Path
    args: dict[str, str]
    target: str | None = None
    cache_from: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # Docker SDK build() arguments from build.options

    def base_images(self) -> list[str]:
        """The images the Dockerfile starts from (its FROM lines, build args filled in), so that a
        changed base image makes a new build."""
        return base_images(self._dockerfile_bytes().decode(errors="replace"), self.args)

    def tag(self, base_ids: dict[str, str]) -> str:
        """Content-addressed: same Dockerfile, args, target, options, base images and context
        files, same tag, so a built image is reused (by any worktree) while nothing it is made
        of changed."""
        digest = hashlib.sha256()
        digest.update(self._dockerfile_bytes())
        digest.update(repr((sorted(self.args.items()), self.target, self.cache_from,
                            sorted(self.options.items()), sorted(base_ids.items()))).encode())
        hash_tree(digest, self.context, skip=".git")
        return f"gpuspace-build/devcontainer:{digest.hexdigest()[:16]}"


    def _dockerfile_bytes(self) -> bytes:
        """The worktree's Dockerfile, which a container can swap for a FIFO: refused, not waited on."""
        from ..untrusted_files import read_bytes

        try:
            return read_bytes(self.dockerfile, follow_symlinks=True)
        except OSError as error:
            raise UsageError(f"cannot read {self.dockerfile}: {error.strerror or error}") from None


def base_images(dockerfile: str, args: dict[str, str]) -> list[str]:
    """FROM images of a Dockerfile, `ARG` defaults and build args substituted; stage names and
    `scratch` are not images."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and not images and len(words) > 1:
            name, _, default = words[1].partition("=")
            values[name] = args.get(name, default.strip("\"'"))
        elif instruction == "FROM":
            rest = [word for word in words[1:] if not word.startswith("--")]
            if not rest:
                continue
            image = re.sub(r"\$\{?(\w+)(?::-([^}]*))?\}?",
                           lambda m: values.get(m.group(1)) or m.group(2) or "", rest[0])
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
            if image.lower() not in stages and image != "scratch" and image not in images:
                images.append(image)
    return images


@dataclass
class Devcontainer:
    path: Path
    image: str | None = None
    build: Build | None = None
    features: list[features_module.Feature] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[PortRequest] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)  # as model.mount_text writes them
    lifecycle: dict[str, Any] = field(default_factory=dict)  # trusted only: LIFECYCLE key -> command
    override_command: bool = True
    workspace: str | None = None  # where the worktree is mounted (workspaceMount / workspaceFolder)
    workdir: str | None = None  # workspaceFolder: where commands start
    container_user: str | None = None
    remote_user: str | None = None
    remote_env: dict[str, str | None] = field(default_factory=dict)  # for commands run in it; None unsets
    user_env_probe: str | None = None
    initialize_command: Any = None  # trusted only: runs on the host, in the worktree, before the build
    gpu: Any = None  # hostRequirements.gpu: True, "optional", a count, or None
    layer: dict[str, Any] = field(default_factory=dict)  # settings it gives: memory, cpus, shm_size
    host_options: dict[str, Any] = field(default_factory=dict)  # trusted: privileged, cap_add, ...
    unsupported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what only a trusted file may ask for
    worktree: Path | None = None
    trusted: bool = False
    protected: tuple[Path, ...] = ()  # what an untrusted mount may not expose (the git dir, hooks)
    # runArgs and `init` any file may set, as they stay in the container (state.CONTAINER_OPTIONS)
    container_options: dict[str, Any] = field(default_factory=dict)
    compose: Any = None  # a Compose-based file's project (compose.ComposeConfig): its services, not an image

    def notices(self) -> list[str]:
        lines = []
        if self.unsupported:
            lines.append(f"{self.path.name}: not supported, ignored: {', '.join(self.unsupported)}")
        if self.skipped:
            lines.append(f"{self.path.name} is not trusted, so it was made without: {', '.join(self.skipped)}; "
                         f"to allow them, review it and run `git gpuspace trust {self.worktree}`, then recreate "
                         f"the container (`git gpuspace remove --keep-worktree` and `bind`)")
        return lines


def locate(worktree: Path, name: str | None) -> Path | None:
    """`.devcontainer/devcontainer.json` or `.devcontainer.json`; with a name, `.devcontainer/<name>/`."""
    if name:
        path = worktree / ".devcontainer" / name / "devcontainer.json"
        if not path.is_file():
            choices = sorted(p.parent.name for p in (worktree / ".devcontainer").glob("*/devcontainer.json"))
            raise UsageError(f"no devcontainer '{name}' in {worktree / '.devcontainer'}",
                             hint=f"choose one of: {', '.join(choices)}" if choices else None)
        return path
    for path in (worktree / ".devcontainer" / "devcontainer.json", worktree / ".devcontainer.json"):
        if path.is_file():
            return path
    return None


def read(path: Path, worktree: Path, repo_root: Path) -> bytes:
    """The file's bytes, read once (what is trusted is what is parsed): a regular file inside
    the repository, of a sane size."""
    if not inside(path.resolve(), repo_root, worktree):
        raise UsageError(f"{path} leads outside the repository (a symlink?)")
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise UsageError(f"{path} is not a regular file")
            content = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if len(content) > MAX_BYTES:
        raise UsageError(f"{path} is larger than {MAX_BYTES >> 20} MiB; refused",
                         hint="a devcontainer.json is a few KiB: check what the repository put there")
    return content


def devcontainer_id(path: Path, worktree: Path) -> str:
    """`${devcontainerId}` as the reference computes it: the sha256 of its id labels as JSON
    (keys sorted), in base 32, 52 digits. Stable across rebuilds of one worktree's container."""
    labels = {"devcontainer.config_file": str(path), "devcontainer.local_folder": str(worktree)}
    text = json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)
    number = int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)
    digits = ""
    while number:
        number, digit = divmod(number, 32)
        digits = "0123456789abcdefghijklmnopqrstuv"[digit] + digits
    return digits.rjust(52, "0")


class Substitution:
    """The spec's variables, in every string of the file. `${containerEnv:VAR}` is left for
    later (it is known only once the container exists: see `container_substitute`); the host's
    environment (`localEnv`, `env`) is read only for a trusted file."""

    def __init__(self, config: Devcontainer, worktree: Path, trust: bool) -> None:
        self.config, self.trust = config, trust
        self.variables = {
            "localWorkspaceFolder": str(worktree),
            "localWorkspaceFolderBasename": worktree.name,
            "devcontainerId": devcontainer_id(config.path, worktree),
        }

    def set_container_folder(self, folder: str) -> None:
        self.variables["containerWorkspaceFolder"] = folder
        self.variables["containerWorkspaceFolderBasename"] = Path(folder).name

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return _VARIABLE.sub(self._replace, value)
        if isinstance(value, list):
            return [self(item) for item in value]
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        return value

    def _replace(self, match: re.Match) -> str:
        name, *args = match.group(1).split(":")
        if name in ("localEnv", "env"):
            if not args or not args[0]:
                raise UsageError(f"{self.config.path}: '{match.group(0)}' names no environment variable")
            default = args[1] if len(args) > 1 else ""
            if not self.trust:
                _once(self.config.skipped, match.group(0))  # the host's environment is not the repo's to read
                return default
            return os.environ.get(args[0], default)
        return self.variables.get(name, match.group(0))


def container_substitute(value: Any, container_env: dict[str, str]) -> Any:
    """`${containerEnv:VAR[:default]}` from the container's own environment."""
    if isinstance(value, list):
        return [container_substitute(item, container_env) for item in value]
    if isinstance(value, dict):
        return {key: container_substitute(item, container_env) for key, item in value.items()}
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, *args = match.group(1).split(":")
        if name != "containerEnv" or not args:
            return match.group(0)
        return container_env.get(args[0], args[1] if len(args) > 1 else "")
    return _VARIABLE.sub(replace, value)


def load(path: Path, content: bytes, worktree: Path, repo_root: Path, trust: bool,
         fetch: Callable[[str], Path] | None = None, protected: tuple[Path, ...] = ()) -> Devcontainer:
    """Parse `content` (the bytes of `path`); `trust`: the user trusts exactly these bytes.
    `fetch`: brings a registry's or a tarball's feature folder (features.fetch_feature unless told); `protected`:
    paths no untrusted mount may expose (boundary.protected_paths; each `.git` always)."""
    try:
        document = json5.loads(content.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON with comments: {error}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: the top level must be an object")
    if "dockerComposeFile" in document and not trust:
        # its Compose files may mount any host path, run privileged, use the host's network
        raise UsageError(f"{path}: a Compose-based configuration (dockerComposeFile, service) runs the services its "
                         f"Compose files describe, as they describe them, so it is used only when trusted; nothing "
                         f"was made", hint=f"review {path.parent} and the Compose files it names, then pass --trust "
                                           f"(or run `git gpuspace trust {worktree}`)")
    config = Devcontainer(path=path, worktree=worktree, trusted=trust,
                          protected=(*protected, *boundary.dot_git(worktree, repo_root)))
    config.unsupported = sorted(key for key in document if key not in SUPPORTED)
    if "dockerComposeFile" in document:
        document = _compose_kind(document, config)
    substitute = Substitution(config, worktree, trust)
    _workspace(path, document, config, substitute)
    substitute.set_container_folder(config.workdir or config.workspace or WORKSPACE)
    document = substitute(document)
    base = path.parent
    if "dockerComposeFile" in document:
        config.compose = compose_module.parse(path, document, repo_root, worktree)

    if "image" in document:
        config.image = _string(path, "image", document["image"])
    if "build" in document or "dockerFile" in document:
        config.build = _build(path, document, base, repo_root, worktree, trust, config)
    env = document.get("containerEnv") or {}
    if not isinstance(env, dict):
        raise UsageError(f"{path}: 'containerEnv' must be an object")
    config.env = {str(key): _env_text(path, key, value) for key, value in env.items()}
    _ports(path, document, config)
    mounts = document.get("mounts") or []
    if not isinstance(mounts, list):
        raise UsageError(f"{path}: 'mounts' must be a list")
    for entry in mounts:
        _take_mount(path, entry, config, trust, repo_root, worktree)
    for key in LIFECYCLE:
        if key in document:
            _check_command(path, key, document[key])
            if trust:
                config.lifecycle[key] = document[key]
            else:
                config.skipped.append(key)
    if "initializeCommand" in document:
        _check_command(path, "initializeCommand", document["initializeCommand"])
        if trust:
            config.initialize_command = document["initializeCommand"]
        else:
            config.skipped.append("initializeCommand (it runs on the host)")
    remote_env = document.get("remoteEnv") or {}
    if not isinstance(remote_env, dict):
        raise UsageError(f"{path}: 'remoteEnv' must be an object")
    config.remote_env = {str(key): None if value is None else _env_text(path, key, value)
                         for key, value in remote_env.items()}
    if "userEnvProbe" in document:
        probe = document["userEnvProbe"]
        if probe not in ("none", "loginShell", "interactiveShell", "loginInteractiveShell"):
            raise UsageError(f"{path}: 'userEnvProbe' must be one of none, loginShell, interactiveShell, "
                             f"loginInteractiveShell")
        config.user_env_probe = probe
    if "overrideCommand" in document:
        if not isinstance(document["overrideCommand"], bool):
            raise UsageError(f"{path}: 'overrideCommand' must be true or false")
        config.override_command = document["overrideCommand"]
    for key, attribute in (("containerUser", "container_user"), ("remoteUser", "remote_user")):
        if key in document:
            setattr(config, attribute, _string(path, key, document[key]))
    _host_fields(path, document, config, trust)
    requirements = document.get("hostRequirements") or {}
    if not isinstance(requirements, dict):
        raise UsageError(f"{path}: 'hostRequirements' must be an object")
    if "gpu" in requirements:
        gpu = requirements["gpu"]
        config.gpu = True if isinstance(gpu, dict) else gpu
    config.unsupported += [f"hostRequirements.{key}" for key in requirements if key != "gpu"]
    _run_args(path, document.get("runArgs") or [], config, trust)
    features = document.get("features") or {}
    if not isinstance(features, dict):
        raise UsageError(f"{path}: 'features' must be an object (feature id -> options)")
    # with their dependencies, in install order (what each contributes follows the same order)
    ordered, named = features_module.install_order(path, features, document.get("overrideFeatureInstallOrder"),
                                                   base, repo_root, worktree, fetch)
    config.unsupported += named
    for feature in ordered:
        config.features.append(feature)
        _feature_contributions(path, feature, config, repo_root, worktree)
    return config



# What the Compose files say for a Compose-based configuration, as the reference reads them: named, not applied
_COMPOSE_OWN = {"image": "the service's image", "build": "the service's build", "dockerFile": "the service's build",
                "context": "the service's build", "runArgs": "the service's options",
                "workspaceMount": "the service's volumes; the worktree is mounted at workspaceFolder"}


def _compose_kind(document: dict, config: Devcontainer) -> dict:
    """A Compose-based file without what belongs to the other kinds (named), with the
    reference's defaults for this kind: overrideCommand false (the service's own command runs),
    and workspaceFolder "/" as where commands start (the worktree is then at /workspace)."""
    document = dict(document)
    for key, why in _COMPOSE_OWN.items():
        if key in document:
            del document[key]
            config.unsupported.append(f"{key} (with dockerComposeFile: {why})")
    config.override_command = False
    if isinstance(document.get("workspaceFolder"), str) and not document["workspaceFolder"].strip("/"):
        del document["workspaceFolder"]
        config.workdir = "/"
    return document


def _workspace(path: Path, document: dict, config: Devcontainer, substitute: Substitution) -> None:
    """workspaceMount (the worktree itself, mounted elsewhere) and workspaceFolder (where commands
    start; the mount's target when there is no workspaceMount). A workspaceMount of anything else
    is named and both are left, so that nothing is half-applied."""
    folder = substitute(document.get("workspaceFolder"))
    mount = substitute(document.get("workspaceMount"))
    if folder is not None:  # as one path: "/src/" is "/src"
        folder = _container_path(path, "workspaceFolder", _string(path, "workspaceFolder", folder))
    if mount is not None:
        fields = _mount_fields(path, mount)
        source = fields.get("source") or fields.get("src") or ""
        target = fields.get("target") or fields.get("destination") or fields.get("dst") or ""
        if fields.get("type", "volume") != "bind" or not source or Path(source).resolve() != config.worktree.resolve():
            config.unsupported.append(f"workspaceMount {_shown(mount)} (only the worktree itself can be mounted)"
                                      + (", so workspaceFolder too" if folder is not None else ""))
            return
        config.workspace = _container_path(path, "workspaceMount target", target)
    if folder is not None:
        config.workdir = folder
        # without workspaceMount the reference mounts at /workspaces/<name> and starts in the
        # folder; a folder elsewhere is where we mount the worktree
        default = f"/workspaces/{config.worktree.name}"
        config.workspace = config.workspace or (default if folder.startswith(default + "/") else folder)
    for reserved in (DATA_MOUNT, CACHE_MOUNT, "/home/gpuspace"):
        if config.workspace and (config.workspace == reserved or config.workspace.startswith(reserved + "/")):
            raise UsageError(f"{path}: the worktree cannot be mounted at {config.workspace}: git-gpuspace mounts "
                             f"{reserved} itself", hint="choose another workspaceFolder / workspaceMount target")


def _container_path(path: Path, key: str, value: str) -> str:
    if not value.startswith("/") or value.rstrip("/") == "" or ".." in value.split("/"):
        raise UsageError(f"{path}: {key} {value!r} must be an absolute path in the container, not /")
    return value.rstrip("/")


def _build(path: Path, document: dict, base: Path, repo_root: Path, worktree: Path, trust: bool,
           config: Devcontainer) -> Build:
    """`build` (dockerfile, context, args, target, cacheFrom, options), or the older top-level
    `dockerFile` / `context`."""
    build = document.get("build", {})
    if not isinstance(build, dict):
        raise UsageError(f"{path}: 'build' must be an object")
    if "dockerFile" in document and "dockerfile" not in build:
        build = {**build, "dockerfile": document["dockerFile"]}
        if "context" in document:
            build["context"] = document["context"]
    elif "context" in document:
        config.unsupported.append("context (without dockerFile)")
    dockerfile = base / _string(path, "build.dockerfile", build.get("dockerfile", "Dockerfile"))
    context = (base / _string(path, "build.context", build.get("context", "."))).resolve()
    for what, where in (("dockerfile", dockerfile), ("context", context)):
        if not inside(where.resolve(), repo_root, worktree):
            raise UsageError(f"{path}: build.{what} {where} is outside the repository")
    if not dockerfile.is_file():
        raise UsageError(f"{path}: build.dockerfile {dockerfile} does not exist")
    args = build.get("args") or {}
    if not isinstance(args, dict):
        raise UsageError(f"{path}: 'build.args' must be an object")
    target = _string(path, "build.target", build["target"]) if "target" in build else None
    cache_from = build.get("cacheFrom") or []
    cache_from = [cache_from] if isinstance(cache_from, str) else cache_from
    if not isinstance(cache_from, list) or not all(isinstance(item, str) for item in cache_from):
        raise UsageError(f"{path}: 'build.cacheFrom' must be a string or a list of strings")
    result = Build(dockerfile.resolve(), context, {str(k): _env_text(path, k, v) for k, v in args.items()},
                   target, list(cache_from))
    _build_options(path, build.get("options") or [], result, config, trust)
    config.unsupported += [f"build.{key}" for key in build
                           if key not in ("dockerfile", "context", "args", "target", "cacheFrom", "options")]
    return result


# `docker build` flags in build.options, by the Docker SDK build() argument they become
_BUILD_VALUE_OPTIONS = {"--build-arg": "buildargs", "--label": "labels", "--add-host": "extra_hosts",
                        "--platform": "platform", "--network": "network_mode", "--target": "target"}
_BUILD_SWITCHES = {"--pull": "pull", "--no-cache": "nocache"}


def _build_options(path: Path, options: Any, build: Build, config: Devcontainer, trust: bool) -> None:
    if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        raise UsageError(f"{path}: 'build.options' must be a list of strings")
    tokens = [token for option in options for token in shlex.split(option)]
    i = 0
    while i < len(tokens):
        flag, value = tokens[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag in _BUILD_VALUE_OPTIONS and i + 1 < len(tokens):
            value = tokens[i + 1]
            i += 1
        i += 1
        shown = f"build.options {flag}" + (f" {value}" if value is not None else "")
        if flag in _BUILD_SWITCHES and value is None:
            build.options[_BUILD_SWITCHES[flag]] = True
        elif flag in _BUILD_VALUE_OPTIONS and value:
            option = _BUILD_VALUE_OPTIONS[flag]
            if option == "network_mode" and value not in ("default", "bridge", "none") and not trust:
                config.skipped.append(shown)  # build steps on the host's network: only for a trusted file
            elif option == "target":
                build.target = value
            elif option in ("buildargs", "labels"):
                key, _, text = value.partition("=")
                if option == "buildargs":
                    build.args[key] = text if "=" in value else os.environ.get(key, "") if trust else ""
                else:
                    build.options.setdefault("labels", {})[key] = text
            elif option == "extra_hosts":
                host, _, address = value.partition(":")
                build.options.setdefault("extra_hosts", {})[host] = address
            else:
                build.options[option] = value
        else:
            config.unsupported.append(shown)


def _env_text(path: Path, key: Any, value: Any) -> str:
    """An environment value as the reference writes it: strings as they are, other JSON scalars
    in JSON (`true`, `1`), never Python's `True`."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise UsageError(f"{path}: the value of '{key}' must be a string, number or boolean")


def _ports(path: Path, document: dict, config: Devcontainer) -> None:
    """appPort, published as the reference publishes it (a number N: host port N on loopback;
    "[ip:][host:]container" with that host port), then forwardPorts: a port, or "host:port"
    where the host is this container (another name is another service's port: there is no such
    service here), published on loopback at a free host port, as the editor forwards it.
    portsAttributes gives a port its name (`label`), keeps it unpublished (`onAutoForward:
    "ignore"`) or on the same host port (`requireLocalPort`). One container port is one entry,
    appPort's first."""
    attributes = _port_attributes(path, document.get("portsAttributes"))
    if not isinstance(document.get("otherPortsAttributes", {}), dict):
        raise UsageError(f"{path}: 'otherPortsAttributes' must be an object")
    app = document.get("appPort")
    for entry in [] if app is None else app if isinstance(app, list) else [app]:
        asked = _app_port(path, entry, config)
        if asked is not None and asked[0] not in {port.container_port for port in config.ports}:
            name = _port_name(attributes(asked[0]), f"app-{asked[0]}", config)
            config.ports.append(PortRequest(name, asked[0], asked[1], "app"))
    entries = document.get("forwardPorts") or []
    if not isinstance(entries, list):
        raise UsageError(f"{path}: 'forwardPorts' must be a list")
    for entry in entries:
        if isinstance(entry, int) and not isinstance(entry, bool) and 1 <= entry <= 65535:
            host, number = "localhost", entry
        elif isinstance(entry, str) and (found := re.fullmatch(r"(?:([\w.:-]+):)?(\d{1,5})", entry)) \
                and 1 <= int(found.group(2)) <= 65535:
            host, number = found.group(1) or "localhost", int(found.group(2))
        else:
            raise UsageError(f"{path}: forwardPorts entry {entry!r} is not a port")
        wanted = attributes(number)
        if host not in LOCAL_HOSTS:
            config.unsupported.append(f"forwardPorts {entry} (a port of another service)")
        elif number not in {port.container_port for port in config.ports} and wanted.get("onAutoForward") != "ignore":
            config.ports.append(PortRequest(_port_name(wanted, f"port-{number}", config), number,
                                            number if wanted.get("requireLocalPort") is True else None, "forwarded"))


def _port_attributes(path: Path, found: Any) -> Callable[[int], dict]:
    """portsAttributes as a port's attributes: its own key ("3000") or a range's ("3000-3010");
    other keys name what the editor detects (a process, a pattern) and concern no port here."""
    if found is None:
        found = {}
    if not isinstance(found, dict) or not all(isinstance(value, dict) for value in found.values()):
        raise UsageError(f"{path}: 'portsAttributes' must be an object of objects (port -> attributes)")
    ranges = []
    for key, value in found.items():
        if bounds := re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", str(key)):
            ranges.append((int(bounds.group(1)), int(bounds.group(2) or bounds.group(1)), value))
    # an exact key before a range that holds the port, as the editor matches them
    ranges.sort(key=lambda item: item[0] != item[1])
    return lambda port: next((value for low, high, value in ranges if low <= port <= high), {})


def _port_name(wanted: dict, default: str, config: Devcontainer) -> str:
    """A port's `label` as a port name (`--port`'s words: lowercase, digits, - and _), unless it
    is a service's name or taken; else `default`."""
    label = wanted.get("label")
    name = re.sub(r"[^a-z0-9_-]+", "-", label.lower()).strip("-_")[:31].rstrip("-_") if isinstance(label, str) else ""
    taken = {port.name for port in config.ports} | set(SERVICE_PORTS)
    return name if name[:1].isalpha() and name not in taken else default


def _app_port(path: Path, entry: Any, config: Devcontainer) -> tuple[int, int | None] | None:
    """(container port, host port or None: a free one) of an appPort entry, as `docker run -p`
    reads it. Its address, when it names one off loopback, is named and not taken: a
    repository's file does not open a port to the network."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        text, address, host, container = str(entry), "", str(entry), str(entry)  # the reference: 127.0.0.1:N:N
    elif isinstance(entry, str) and (found := re.fullmatch(
            r"(?:(\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+):(\d*):|(\d+):)?(\d+)(?:/(tcp|udp|sctp))?", entry.strip())):
        if found.group(5) not in (None, "tcp"):
            config.unsupported.append(f"appPort {entry} (only TCP ports are published)")
            return None
        text, address, host, container = entry, (found.group(1) or "").strip("[]"), found.group(2) or found.group(3), \
            found.group(4)
    else:
        raise UsageError(f"{path}: appPort entry {entry!r} is not a port or \"[ADDRESS:][HOST_PORT:]PORT\"")
    for number in (host, container):
        if number and not 1 <= int(number) <= 65535:
            raise UsageError(f"{path}: appPort {text}: port {number} is out of range (1-65535)")
    if address and address not in ("localhost", "127.0.0.1", "::1"):
        config.unsupported.append(f"appPort {text} (address {address}: published where every port is, on "
                                  f"127.0.0.1 unless publish_address says otherwise)")
    return int(container), int(host) if host else None


def _mount_fields(path: Path, entry: Any) -> dict[str, Any]:
    """A mount as "type=…,source=…,target=…[,readonly]" or as an object."""
    if isinstance(entry, str):
        return dict(part.split("=", 1) if "=" in part else (part, "true") for part in entry.split(",") if part)
    if isinstance(entry, dict):
        return {str(k): v for k, v in entry.items()}
    raise UsageError(f"{path}: mounts entry {entry!r} is neither a string nor an object")


def _shown(entry: Any) -> str:
    """A mount named as the file writes it: a string, or an object's key=value pairs."""
    if isinstance(entry, dict):
        return ",".join(f"{key}={value}" for key, value in entry.items())
    return entry if isinstance(entry, str) else json.dumps(entry)


_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro", "consistency"}


def _take_mount(path: Path, entry: Any, config: Devcontainer, trust: bool, repo_root: Path, worktree: Path) -> None:
    """A bind, volume (Docker's and the spec's default type) or tmpfs mount. A bind's source is
    mounted as resolved now (a later symlink swap is caught at use); untrusted, only one inside
    the repository, never the Docker socket."""
    fields = _mount_fields(path, entry)
    kind = str(fields.get("type", "volume"))
    source = str(fields.get("source") or fields.get("src") or "")
    target = str(fields.get("target") or fields.get("destination") or fields.get("dst") or "")
    read_only = str(fields.get("readonly", fields.get("ro", "false"))).lower() in ("true", "1", "yes")
    unknown = sorted(set(fields) - _MOUNT_KEYS)
    if kind not in ("bind", "volume", "tmpfs") or unknown:
        config.unsupported.append(f"mount {_shown(entry)}" + (f" ({', '.join(unknown)})" if unknown else ""))
        return
    if not target:
        raise UsageError(f"{path}: mounts entry {_shown(entry)!r} needs a target")
    target = _container_path(path, f"mount target of {_shown(entry)}", target)  # "/x/" is "/x"
    if ":" in source or ":" in target:
        raise UsageError(f"{path}: mounts entry {_shown(entry)!r}: ':' in a mount path is not supported")
    if kind == "bind":
        if not source.startswith("/"):
            raise UsageError(f"{path}: bind mount {_shown(entry)!r}: the source must be an absolute path",
                             hint="write it as ${localWorkspaceFolder}/..., or leave out type=bind for a named volume")
        resolved = Path(source).resolve()
        if not trust and (resolved.as_posix() in DOCKER_SOCKETS or not inside(resolved, repo_root, worktree)
                          or boundary.exposes(resolved, config.protected)):
            config.skipped.append(f"mount of {source}")
            return
        source = str(resolved)
    elif kind == "volume" and source and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", source):
        raise UsageError(f"{path}: volume mount {_shown(entry)!r}: {source!r} is not a volume name")
    if target in (config.workspace or WORKSPACE, DATA_MOUNT, CACHE_MOUNT) or target.startswith(CACHE_MOUNT + "/"):
        # the worktree, the data dir and the caches are mounted there already (an exported
        # devcontainer.json names the data dir so: it is read back as it was made)
        config.unsupported.append(f"mount {_shown(entry)} (git-gpuspace mounts its own {target})")
        return
    # one mount per target, the last one written winning (as the reference merges them)
    config.mounts = [mount for mount in config.mounts if mount_parts(mount)[2] != target]
    config.mounts.append(mount_text(kind, "" if kind == "tmpfs" else source, target, read_only))


def _check_command(path: Path, key: str, command: Any) -> None:
    """A lifecycle command: a shell string, an argv list, or an object of those (run in turn)."""
    steps = list(command.values()) if isinstance(command, dict) else [command]
    for step in steps:
        if not (isinstance(step, str) or (isinstance(step, list) and step and all(isinstance(w, str) for w in step))):
            raise UsageError(f"{path}: '{key}' must be a string, a list of strings, or an object of those")


def _host_fields(path: Path, document: dict, config: Devcontainer, trust: bool) -> None:
    """Top-level `privileged`, `capAdd`, `securityOpt`, `init`: the same rule as in runArgs."""
    if document.get("privileged") is True:
        _trusted_option(config, trust, "privileged", "privileged", True)
    elif "privileged" in document and document["privileged"] is not False:
        raise UsageError(f"{path}: 'privileged' must be true or false")
    for key, option in (("capAdd", "cap_add"), ("securityOpt", "security_opt")):
        values = document.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise UsageError(f"{path}: '{key}' must be a list of strings")
        for value in values:
            _trusted_option(config, trust, f"{key} {value}", option, value)
    if "init" in document:
        if not isinstance(document["init"], bool):
            raise UsageError(f"{path}: 'init' must be true or false")
        if document["init"] is False:  # the command is PID 1 then (our default runs docker's init)
            config.container_options["init"] = False


def _trusted_option(config: Devcontainer, trust: bool, shown: str, option: str, value: Any) -> None:
    if not trust:
        _once(config.skipped, shown)
    elif option == "privileged":
        config.host_options["privileged"] = True
    elif option in _LISTS:
        if value not in config.host_options.setdefault(option, []):
            config.host_options[option].append(value)
    else:
        config.host_options[option] = value


def _feature_contributions(path: Path, feature: features_module.Feature, config: Devcontainer, repo_root: Path,
                           worktree: Path) -> None:
    """What a feature's metadata adds to the container. Trust covers a local feature's folder but
    not a registry's tag, so a feature's own host options are named and not applied (the file
    itself may ask for them), and its mounts follow the untrusted rules."""
    metadata = feature.metadata
    where = f"feature {feature.key}"
    for key in metadata:
        if key in features_module.CONTRIBUTES_UNSUPPORTED:
            config.unsupported.append(f"{where}: {key}")
    # its containerEnv is in the derived image (ENV), as the reference puts it there
    for key in ("privileged", "capAdd", "securityOpt"):
        if metadata.get(key):
            config.unsupported.append(f"{where}: {key} (ask for it in {path.name} itself)")
    if metadata.get("init") is True and config.container_options.get("init") is False:
        config.container_options["init"] = True  # as the reference: an init process when any entry asks for one
    mounts = metadata.get("mounts") or []
    if not isinstance(mounts, list):
        raise UsageError(f"{path}: {where}: 'mounts' in devcontainer-feature.json must be a list")
    for entry in mounts:
        _take_mount(path, entry, config, False, repo_root, worktree)


def _once(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _string(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{path}: '{key}' must be a non-empty string")
    return value


# runArgs we take (values go to settings or env), and the ones only --trust allows, by the
# Docker SDK host-config option they become (lists collect repeated flags).
_VALUE_FLAGS = {"--shm-size": "shm_size", "--memory": "memory", "-m": "memory", "--cpus": "cpus"}
_TRUSTED_ONLY = {"--privileged": "privileged", "--cap-add": "cap_add", "--network": "network_mode",
                 "--net": "network_mode", "--ipc": "ipc_mode", "--pid": "pid_mode", "--device": "devices",
                 "--security-opt": "security_opt", "-v": "volume", "--volume": "volume"}
_LISTS = {"cap_add", "devices", "security_opt"}
_SWITCHES = {"--privileged", "--init"}
# runArgs any file may set, as what they change stays in the container, by the
# container_options key they become (containers.Engine.create)
_CONTAINER_FLAGS = {"--ulimit": "ulimits", "--add-host": "extra_hosts", "--label": "labels", "-l": "labels",
                    "--hostname": "hostname", "-h": "hostname", "--platform": "platform"}
# limits that let a process outrank the host's own (a real-time or raised priority): trusted only
_HOST_ULIMITS = {"nice", "rtprio"}
_ULIMIT_NAMES = {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
                 "rtprio", "rttime", "sigpending", "stack"}  # docker's own list


def _run_args(path: Path, args: list, config: Devcontainer, trust: bool) -> None:
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise UsageError(f"{path}: 'runArgs' must be a list of strings")
    tokens = [token for arg in args for token in (shlex.split(arg) if " " in arg and not arg.startswith("-e") else [arg])]
    from_files: dict[str, str] = {}  # --env-file: under containerEnv and -e, as docker reads them
    i = 0
    while i < len(tokens):
        flag, value = tokens[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag.startswith("-") and i + 1 < len(tokens) and not tokens[i + 1].startswith("-") and flag not in _SWITCHES:
            value = tokens[i + 1]
            i += 1
        i += 1
        shown = flag + (f" {value}" if value is not None else "")
        if flag == "--gpus":
            config.unsupported.append(f"runArgs {shown} (GPUs come from the exclusive allocation)")
        elif flag == "--init" and value in (None, "true", "false"):
            if value == "false":
                config.container_options["init"] = False
            else:  # our default
                config.container_options.pop("init", None)
        elif flag in _CONTAINER_FLAGS and value:
            _container_flag(path, f"runArgs {shown}", _CONTAINER_FLAGS[flag], value, config, trust)
        elif flag == "--env-file" and value:
            if trust:
                from_files.update(_env_file(path, f"runArgs {shown}", value, config.worktree or path.parent))
            else:  # a file of the host's
                _once(config.skipped, f"runArgs {shown}")
        elif flag in _VALUE_FLAGS and value is not None:
            config.layer[_VALUE_FLAGS[flag]] = value
        elif flag in ("-e", "--env") and value and "=" in value:
            key, text = value.split("=", 1)
            config.env[key] = text
        elif flag in _TRUSTED_ONLY and (value is not None or flag == "--privileged"):
            option = _TRUSTED_ONLY[flag]
            if option != "volume":
                _trusted_option(config, trust, f"runArgs {shown}", option, value)
            elif not trust:
                config.skipped.append(f"runArgs {shown}")
            elif value.count(":") not in (1, 2):
                raise UsageError(f"{path}: runArgs {shown}: write -v SOURCE:TARGET[:ro]")
            else:
                source, target, *mode = value.split(":")
                config.mounts.append(mount_text("bind" if source.startswith("/") else "volume", source, target,
                                                mode == ["ro"]))
        else:
            config.unsupported.append(f"runArgs {shown}")
    config.env = {**from_files, **config.env}


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _container_flag(path: Path, shown: str, option: str, value: str, config: Devcontainer, trust: bool) -> None:
    """--ulimit, --add-host, --label, --hostname, --platform as `docker run` reads them; a value
    docker would refuse is refused here, before anything is made."""
    options = config.container_options
    if option == "ulimits":
        name, limits = _ulimit(path, shown, value)
        target = config.host_options if name in _HOST_ULIMITS else options
        if target is config.host_options and not trust:
            _once(config.skipped, shown)
            return
        # one per name, the last written winning (as docker's own --ulimit)
        target["ulimits"] = [text for text in target.get("ulimits", []) if text.split("=", 1)[0] != name] \
            + [f"{name}={limits}"]
    elif option == "extra_hosts":
        host, _, address = value.partition("=") if "=" in value else value.partition(":")
        address = address.strip("[]")
        if not _HOSTNAME.fullmatch(host) or not (address == "host-gateway" or _is_address(address)):
            raise UsageError(f"{path}: {shown}: write --add-host NAME:ADDRESS (an IP address or host-gateway)")
        options.setdefault("extra_hosts", []).append(f"{host}:{address}")
    elif option == "labels":
        key, _, text = value.partition("=")
        if not key.strip():
            raise UsageError(f"{path}: {shown}: write --label KEY=VALUE")
        if key.lower().startswith("gpuspace."):
            raise UsageError(f"{path}: {shown}: gpuspace.* labels are git-gpuspace's own (they say whose container "
                             f"it is and which GPUs it holds); nothing was made", hint="choose another label key")
        options.setdefault("labels", {})[key] = text
    elif option == "hostname":
        if not _HOSTNAME.fullmatch(value):
            raise UsageError(f"{path}: {shown}: not a valid hostname (letters, digits, '-' and '.')")
        options["hostname"] = value
    elif not re.fullmatch(r"[a-z0-9]+(/[a-z0-9_]+(/[a-z0-9]+)?)?", value.lower()):  # --platform
        raise UsageError(f"{path}: {shown}: write --platform OS[/ARCH[/VARIANT]], e.g. linux/amd64")
    else:
        options["platform"] = value.lower()


def _ulimit(path: Path, shown: str, value: str) -> tuple[str, str]:
    """`name=soft[:hard]` -> (name, "soft:hard"); -1 is unlimited, as with `docker run --ulimit`."""
    name, _, limits = value.partition("=")
    numbers = limits.split(":")
    if name not in _ULIMIT_NAMES or not 1 <= len(numbers) <= 2 or not all(re.fullmatch(r"-?\d+", n) for n in numbers):
        raise UsageError(f"{path}: {shown}: write --ulimit NAME=SOFT[:HARD] (NAME one of "
                         f"{', '.join(sorted(_ULIMIT_NAMES))}; -1 is unlimited)")
    soft, hard = int(numbers[0]), int(numbers[-1])
    if hard != -1 and (soft == -1 or soft > hard) or min(soft, hard) < -1:
        raise UsageError(f"{path}: {shown}: the soft limit is above the hard one")
    return name, f"{soft}:{hard}"


def _is_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _env_file(path: Path, shown: str, value: str, worktree: Path) -> dict[str, str]:
    """An --env-file as docker reads it: KEY=VALUE lines (the value as written), `#` comments,
    a bare KEY taken from the environment when set there. A relative path is the worktree's,
    where the reference runs `docker run`."""
    from ..untrusted_files import read_bytes

    file = Path(value) if Path(value).is_absolute() else worktree / value  # no shell: no ~ either
    try:
        content = read_bytes(file, limit=MAX_BYTES + 1, follow_symlinks=True)
    except OSError as error:
        raise UsageError(f"{path}: {shown}: cannot read {file}: {error.strerror or error}") from None
    if len(content) > MAX_BYTES:
        raise UsageError(f"{path}: {shown}: {file} is larger than {MAX_BYTES >> 20} MiB")
    try:
        text = content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: {shown}: {file} is not UTF-8 text") from None
    found = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, rest = line.partition("=")
        if not key or any(character.isspace() for character in key):
            raise UsageError(f"{path}: {shown}: line {number} of {file} is not KEY=VALUE")
        if equals:
            found[key] = rest
        elif key in os.environ:
            found[key] = os.environ[key]
    return found


def gpu_spec(gpu: Any, configured: str, inventory_size: int, from_flag: bool) -> str:
    """hostRequirements.gpu as a --gpus spec; an explicit --gpus always wins."""
    if from_flag or gpu is None:
        return configured
    if gpu == "optional":
        return configured if inventory_size else "none"
    if gpu is True:
        return configured if configured not in ("none", "0") else "1"
    if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu >= 0:
        return str(gpu)
    if gpu is False:
        return "none"
    raise UsageError(f"hostRequirements.gpu must be true, false, \"optional\" or a count, not {gpu!r}")
