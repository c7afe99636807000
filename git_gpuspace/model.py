"""Plain data: what a binding is, what a GPU is, what a user asked for."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Gpu:
    """One physical GPU. The UUID is its identity; the index is for people."""

    index: int
    uuid: str
    name: str = ""
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: int | None = None


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpus: float | None = None
    shm_bytes: int | None = None


@dataclass(frozen=True)
class PortMap:
    """A container port published on the host, kept for the binding's life."""

    name: str  # jupyter, ssh, tensorboard, or the user's own
    container_port: int
    host_port: int
    address: str = "127.0.0.1"
    origin: str = ""  # PORT_ORIGINS: which devcontainer.json field asked for it ("": a flag or a service)

    def label(self) -> str:
        return f"{self.name}={self.container_port}:{self.host_port}@{self.address}" + (
            f"/{self.origin}" if self.origin else "")

    @classmethod
    def from_label(cls, text: str) -> "PortMap | None":
        """`name=container:host@address[/origin]`: labels written before origins read as ever."""
        try:
            name, rest = text.split("=", 1)
            ports, address = rest.split("@", 1)
            address, _, origin = address.partition("/")
            container_port, host_port = ports.split(":", 1)
            if origin and origin not in PORT_ORIGINS:
                return None
            return cls(name, int(container_port), int(host_port), address, origin)
        except ValueError:
            return None


# devcontainer.json forwardPorts (the editor's, published on loopback at a free port) and appPort
PORT_ORIGINS = ("forwarded", "app")


@dataclass(frozen=True)
class PortRequest:
    """A port asked for: the host port is chosen when None."""

    name: str
    container_port: int
    host_port: int | None = None
    origin: str = ""  # as PortMap.origin


@dataclass(frozen=True)
class GpuRequest:
    """Parsed `--gpus`: a count, explicit ids (index or UUID), all, or none."""

    count: int | None = None
    ids: tuple[str, ...] = ()
    all: bool = False

    @property
    def none(self) -> bool:
        return not self.all and not self.ids and not self.count


@dataclass(frozen=True)
class Holder:
    """Who holds a GPU, as read from a container's labels (any repo on the engine)."""

    repo: str
    worktree: str
    branch: str | None
    container: str
    share: bool
    pack: str = ""  # runs of one sweep packed K to a GPU (--runs-per-gpu) carry the same group
    user: str = ""  # who made it


def name_digest(common_dir: Path, worktree: Path) -> str:
    """The end of a container's name: which repo and worktree it is for, so a name in the state
    file can be checked against the binding it sits in."""
    return hashlib.sha256(f"{common_dir}\0{worktree}".encode()).hexdigest()[:8]


@dataclass
class Binding:
    """Desired state of one worktree, as kept in `.git/gpuspace.toml`."""

    path: str
    container: str
    image: str
    branch: str | None = None
    gpus: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    share: bool = False
    worktree_id: str | None = None  # git's admin dir name: finds the worktree after `git worktree move`
    gpu_request: str | None = None  # the --gpus spec asked for; claimed again when pending
    pending: str | None = None  # why the container could not be made yet (engine down, no GPU free...)
    ports: list[PortMap] = field(default_factory=list)
    data_dir: str | None = None  # outlives the container; mounted at /data
    env: dict[str, str] = field(default_factory=dict)  # from devcontainer.json containerEnv
    mounts: list[str] = field(default_factory=list)  # extra "source:target[:ro]" binds
    host_options: dict = field(default_factory=dict)  # trusted devcontainer runArgs (privileged, cap_add, ...)
    devcontainer: str | None = None  # the devcontainer.json it was made from, relative to the worktree
    workspace: str | None = None  # where the worktree is mounted, when not /workspace (workspaceMount)
    workdir: str | None = None  # where commands start, when not the workspace (workspaceFolder)
    container_user: str | None = None  # devcontainer.json containerUser / remoteUser
    remote_user: str | None = None
    remote_env: dict[str, str] = field(default_factory=dict)  # devcontainer.json / image remoteEnv, for commands
    user_env_probe: str | None = None  # devcontainer.json userEnvProbe (None: the default)
    override_command: bool = True  # False: the image's own command is the container's
    container_options: dict = field(default_factory=dict)  # devcontainer runArgs any file may set (ulimits, ...)
    # the common dir its container was named and labelled under (None: the state file's own);
    # it stays the old path once the repository is moved, as the container's name and labels do
    repo: str | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know: kept as they are
    created: _dt.datetime = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    )


def current_user() -> str:
    """The user's login name (the uid where it has none)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def mount_parts(text: str) -> tuple[str, str, str, bool]:
    """A binding's mount as kept in the state file: (type, source, target, read-only).

    "SOURCE:TARGET[:ro]" is a bind (its source is an absolute path), "volume:NAME:TARGET[:ro]" a
    named volume (no name: an anonymous one), "tmpfs::TARGET" a tmpfs."""
    kind = "bind"
    if text.startswith(("volume:", "tmpfs:")):
        kind, text = text.split(":", 1)
    source, target, *mode = text.split(":")
    return kind, source, target, mode == ["ro"]


def mount_text(kind: str, source: str, target: str, read_only: bool) -> str:
    prefix = "" if kind == "bind" else f"{kind}:"
    return f"{prefix}{source}:{target}" + (":ro" if read_only else "")
