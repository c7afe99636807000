"""`.devcontainer/devcontainer.json`: what ML repos put there, taken as far as it is safe.

The file comes from the repository, so it is untrusted until the user trusts its content
(`git gpuspace trust`, or `--trust`; see trust.py). Untrusted, the container is made with the
safe subset: no lifecycle commands, no `${localEnv:...}` (the host's environment stays on the
host), and no privileged mode, host namespaces, capabilities, devices, Docker socket or host
paths outside the repository. What is skipped is named in one notice, with the command that
trusts the file; what we do not support in another. `--gpus` in runArgs never overrides the
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
from typing import Any

import json5

from .errors import UsageError
from .model import PortRequest

MAX_BYTES = 1 << 20  # a devcontainer.json is a few KiB; a huge one is an attack on the parser
SUPPORTED = {"name", "image", "build", "containerEnv", "forwardPorts", "mounts", "postCreateCommand",
             "hostRequirements", "runArgs"}
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


@dataclass
class Build:
    dockerfile: Path
    context: Path
    args: dict[str, str]

    def tag(self) -> str:
        """Content-addressed: same Dockerfile, args and context files, same tag, so a built
        image is reused (by any worktree) while nothing it is made of changed."""
        digest = hashlib.sha256()
        digest.update(self.dockerfile.read_bytes())
        digest.update(repr(sorted(self.args.items())).encode())
        for root, dirs, files in os.walk(self.context):  # does not descend into symlinked dirs
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in sorted(files):
                path = Path(root) / name
                digest.update(f"{path.relative_to(self.context)}\0".encode())
                digest.update(_content_of(path))
        return f"gpuspace-build/devcontainer:{digest.hexdigest()[:16]}"


def _content_of(path: Path) -> bytes:
    """What the build would take of an entry: a link's target text, a regular file's bytes; a
    device or FIFO only by its kind (reading /dev/zero or a FIFO would never end)."""
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return b"link\0" + os.readlink(path).encode()
        if not stat.S_ISREG(info.st_mode):
            return f"special {stat.S_IFMT(info.st_mode)}".encode()
        digest = hashlib.sha256()
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW | os.O_NONBLOCK)) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.digest()
    except OSError:
        return b"unreadable"


@dataclass
class Devcontainer:
    path: Path
    image: str | None = None
    build: Build | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[PortRequest] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)  # "source:target[:ro]"
    post_create: Any = None
    gpu: Any = None  # hostRequirements.gpu: True, "optional", a count, or None
    layer: dict[str, Any] = field(default_factory=dict)  # settings it gives: memory, cpus, shm_size
    host_options: dict[str, Any] = field(default_factory=dict)  # trusted runArgs: privileged, cap_add, ...
    unsupported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what only a trusted file may ask for
    worktree: Path | None = None

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


def load(path: Path, content: bytes, worktree: Path, repo_root: Path, trust: bool) -> Devcontainer:
    """Parse `content` (the bytes of `path`); `trust`: the user trusts exactly these bytes."""
    try:
        document = json5.loads(content.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON with comments: {error}") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: the top level must be an object")
    config = Devcontainer(path=path, worktree=worktree)
    config.unsupported = sorted(key for key in document if key not in SUPPORTED)
    base = path.parent
    variables = {
        "localWorkspaceFolder": str(worktree),
        "localWorkspaceFolderBasename": worktree.name,
        "containerWorkspaceFolder": "/workspace",
        "containerWorkspaceFolderBasename": "workspace",
    }

    def local_env(match: re.Match) -> str:
        if trust:
            return os.environ.get(match.group(1), match.group(2) or "")
        _once(config.skipped, match.group(0))  # the host's environment is not the repo's to read
        return match.group(2) or ""

    def expand(value: Any) -> str:
        text = re.sub(r"\$\{localEnv:([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}", local_env, str(value))
        return re.sub(r"\$\{([A-Za-z]+)\}", lambda m: variables.get(m.group(1), m.group(0)), text)

    if "image" in document:
        config.image = _string(path, "image", document["image"])
    if "build" in document:
        build = document["build"]
        if not isinstance(build, dict):
            raise UsageError(f"{path}: 'build' must be an object")
        dockerfile = base / _string(path, "build.dockerfile", build.get("dockerfile", "Dockerfile"))
        context = (base / _string(path, "build.context", build.get("context", "."))).resolve()
        for what, where in (("dockerfile", dockerfile), ("context", context)):
            if not inside(where.resolve(), repo_root, worktree):
                raise UsageError(f"{path}: build.{what} {where} is outside the repository")
        if not dockerfile.is_file():
            raise UsageError(f"{path}: build.dockerfile {dockerfile} does not exist")
        config.build = Build(dockerfile.resolve(), context, {str(k): expand(v) for k, v in (build.get("args") or {}).items()})
        config.unsupported += [f"build.{key}" for key in build if key not in ("dockerfile", "context", "args")]
    env = document.get("containerEnv") or {}
    if not isinstance(env, dict):
        raise UsageError(f"{path}: 'containerEnv' must be an object")
    config.env = {str(key): expand(value) for key, value in env.items()}
    for entry in document.get("forwardPorts") or []:
        config.ports.append(_forward_port(path, entry))
    for entry in document.get("mounts") or []:
        mount = _mount(path, entry, expand)
        if mount is None:  # named as the file writes it: a string, or an object's key=value pairs
            shown = entry if isinstance(entry, str) else ",".join(f"{key}={value}" for key, value in entry.items()) \
                if isinstance(entry, dict) else json.dumps(entry)
            config.unsupported.append(f"mount {shown}")
            continue
        source, target, read_only = mount
        resolved = Path(source).resolve()  # mounted as resolved now: a later symlink swap is caught at use
        if not trust and (resolved.as_posix() in DOCKER_SOCKETS or not inside(resolved, repo_root, worktree)):
            config.skipped.append(f"mount of {source}")
            continue
        config.mounts.append(f"{resolved}:{target}" + (":ro" if read_only else ""))
    if "postCreateCommand" in document:
        if trust:
            config.post_create = document["postCreateCommand"]
        else:
            config.skipped.append("postCreateCommand")
    requirements = document.get("hostRequirements") or {}
    if isinstance(requirements, dict):
        if "gpu" in requirements:
            gpu = requirements["gpu"]
            config.gpu = True if isinstance(gpu, dict) else gpu
        config.unsupported += [f"hostRequirements.{key}" for key in requirements if key != "gpu"]
    _run_args(path, document.get("runArgs") or [], config, trust, repo_root, worktree)
    return config


def _once(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _string(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{path}: '{key}' must be a non-empty string")
    return value


def inside(path: Path, *roots: Path) -> bool:
    return any(path == root.resolve() or root.resolve() in path.parents for root in roots)


def _forward_port(path: Path, entry: Any) -> PortRequest:
    if isinstance(entry, int) and not isinstance(entry, bool) and 1 <= entry <= 65535:
        return PortRequest(f"port-{entry}", entry)
    if isinstance(entry, str) and re.fullmatch(r"(?:[\w.-]+:)?\d{1,5}", entry):
        number = int(entry.rsplit(":", 1)[-1])
        if 1 <= number <= 65535:
            return PortRequest(f"port-{number}", number)
    raise UsageError(f"{path}: forwardPorts entry {entry!r} is not a port")


def _mount(path: Path, entry: Any, expand) -> tuple[str, str, bool] | None:
    """A bind mount from "source=…,target=…,type=bind" or {"source", "target", "type"}."""
    if isinstance(entry, str):
        fields = dict(part.split("=", 1) if "=" in part else (part, "true") for part in entry.split(","))
    elif isinstance(entry, dict):
        fields = {str(k): v for k, v in entry.items()}
    else:
        raise UsageError(f"{path}: mounts entry {entry!r} is neither a string nor an object")
    if fields.get("type", "bind") != "bind":
        return None
    source = fields.get("source") or fields.get("src")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not source or not target:
        raise UsageError(f"{path}: mounts entry {entry!r} needs a source and a target")
    read_only = str(fields.get("readonly", fields.get("ro", "false"))).lower() in ("true", "1", "yes")
    return expand(source), expand(target), read_only


# runArgs we take (values go to settings or env), and the ones only --trust allows, by the
# Docker SDK host-config option they become (lists collect repeated flags).
_VALUE_FLAGS = {"--shm-size": "shm_size", "--memory": "memory", "-m": "memory", "--cpus": "cpus"}
_TRUSTED_ONLY = {"--privileged": "privileged", "--cap-add": "cap_add", "--network": "network_mode",
                 "--net": "network_mode", "--ipc": "ipc_mode", "--pid": "pid_mode", "--device": "devices",
                 "--security-opt": "security_opt", "-v": "volume", "--volume": "volume"}
_LISTS = {"cap_add", "devices", "security_opt"}


def _run_args(path: Path, args: list, config: Devcontainer, trust: bool, repo_root: Path, worktree: Path) -> None:
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise UsageError(f"{path}: 'runArgs' must be a list of strings")
    tokens = [token for arg in args for token in (shlex.split(arg) if " " in arg and not arg.startswith("-e") else [arg])]
    i = 0
    while i < len(tokens):
        flag, value = tokens[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag.startswith("-") and i + 1 < len(tokens) and not tokens[i + 1].startswith("-") and flag != "--privileged":
            value = tokens[i + 1]
            i += 1
        i += 1
        shown = flag + (f" {value}" if value is not None else "")
        if flag == "--gpus":
            config.unsupported.append(f"runArgs {shown} (GPUs come from the exclusive allocation)")
        elif flag in _VALUE_FLAGS and value is not None:
            config.layer[_VALUE_FLAGS[flag]] = value
        elif flag in ("-e", "--env") and value and "=" in value:
            key, text = value.split("=", 1)
            config.env[key] = text
        elif flag in _TRUSTED_ONLY and (value is not None or flag == "--privileged"):
            if not trust:
                config.skipped.append(f"runArgs {shown}")
                continue
            option = _TRUSTED_ONLY[flag]
            if option == "volume":
                source, target, *mode = value.split(":")
                config.mounts.append(f"{source}:{target}" + (":ro" if mode[:1] == ["ro"] else ""))
            elif option == "privileged":
                config.host_options["privileged"] = True
            elif option in _LISTS:
                config.host_options.setdefault(option, []).append(value)
            else:
                config.host_options[option] = value
        else:
            config.unsupported.append(f"runArgs {shown}")


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
