"""The Docker engine, through the Docker SDK. The only module that imports docker.

Every container we make carries labels that say which repo, worktree, branch and GPUs it
belongs to; those labels are how any repo on the engine finds who holds which GPU.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import pwd
import re
import socket
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import docker
import docker.errors
from docker.utils.socket import STDOUT, frames_iter
import requests.exceptions
from docker.types import DeviceRequest, Mount, Ulimit

from ..errors import (
    EngineUnavailable,
    GpuspaceError,
    ImageUnavailable,
    NoNvidiaRuntime,
    PortTaken,
    StateError,
    UsageError,
)
from .container_user import identity
from ..installation import WORKSPACE
from ..model import Holder, Limits, PortMap, current_user, name_digest

LABEL_REPO = "gpuspace.repo"  # the repo's common git dir: present on every container we own
LABEL_WORKTREE = "gpuspace.worktree"
LABEL_BRANCH = "gpuspace.branch"
LABEL_GPUS = "gpuspace.gpus"  # comma-separated GPU UUIDs
LABEL_SHARE = "gpuspace.share"  # "true" when the binding opted in to sharing its GPUs
LABEL_PORTS = "gpuspace.ports"  # name=container:host@address,... : host ports stay reserved while stopped
LABEL_PACK = "gpuspace.pack"  # a sweep's runs that may share a GPU with each other (--runs-per-gpu)
LABEL_RUN = "gpuspace.run"  # a run's id: its container's main process is the run's command
LABEL_USER = "gpuspace.user"  # who made it (for `gpus`: whose GPU it is)
# a run's, for the scheduler of every dispatcher on the engine (schedule.py, runs/host_queue.py)
LABEL_PRIORITY = "gpuspace.priority"
LABEL_PREEMPTIBLE = "gpuspace.preemptible"  # "true": its GPUs may be taken (it checkpoints on SIGTERM)
LABEL_TIME_SLICE = "gpuspace.time_slice"  # seconds it keeps its GPUs while runs of its priority wait
# Requests waiting for GPUs (runs/host_queue.py): never-started containers of this name prefix,
# one per waiting queue, never one of ours (as the claim is not)
WANT_PREFIX = "gpuspace-want-"
LABEL_WANTS = "gpuspace.wants"
LABEL_WANT_GPUS = "gpuspace.wants.gpus"  # the poster's GPUs (UUIDs): a post is for whoever shares one
LABEL_GIT = "gpuspace.git"  # PRIVATE_GIT: its git is a private git dir (containers made before share the host's)
PRIVATE_GIT = "private"

# The host-wide GPU claim (claim.py): a never-started container of this name, never one of ours
# (container_name always ends in a digest, so no binding's container can take this name).
CLAIM_NAME = "gpuspace-claim"

STOP_TIMEOUT_S = 10


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    worktree: Path
    labels: dict[str, str]
    gpus: list[str] = field(default_factory=list)  # UUIDs
    limits: Limits = field(default_factory=Limits)
    ports: list[PortMap] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # (host path, container path, read-only): the git dir as boundary.py lays it out, data, caches
    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    command: list[str] | None = field(default_factory=list)  # the first process (None: the image's own)
    host_options: dict = field(default_factory=dict)  # trusted extras for the host config (privileged, ...)
    volumes: list[tuple[str, str, str, bool]] = field(default_factory=list)  # (volume|tmpfs, source, target, ro)
    workspace: str = WORKSPACE  # where the worktree is mounted
    workdir: str = WORKSPACE
    user: str | None = None  # the image's user unless the uid mapping runs the invoking user
    user_has_your_uid: bool = False  # `user` is an account of the image given your uid (user_uid.py): run as it
    # a binding's comes back with the engine (after a crash or a reboot too) unless `stop` said
    # otherwise; a run's does not (it is then interrupted), nor one made with --no-start
    restart: bool = True
    # devcontainer.json's container-local settings (state.CONTAINER_OPTIONS): ulimits
    # ("name=soft:hard"), extra_hosts ("host:ip"), labels, hostname, platform, init
    container_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: str  # the engine's word: created, running, exited, paused, restarting, dead
    image: str
    labels: dict[str, str]
    exit_code: int | None = None  # when exited: from the engine's status line, no extra call
    id: str = ""
    image_id: str = ""  # the image's digest (sha256:...)
    created: float = 0.0  # epoch seconds the engine made it (a run's: a moment before it started)

    @property
    def gpus(self) -> list[str]:
        return [uuid for uuid in self.labels.get(LABEL_GPUS, "").split(",") if uuid]

    @property
    def ports(self) -> list[PortMap]:
        found = (PortMap.from_label(text) for text in self.labels.get(LABEL_PORTS, "").split(",") if text)
        return [port for port in found if port is not None]

    @property
    def holder(self) -> Holder:
        return Holder(
            repo=self.labels.get(LABEL_REPO, ""),
            worktree=self.labels.get(LABEL_WORKTREE, ""),
            branch=self.labels.get(LABEL_BRANCH) or None,
            container=self.name,
            share=self.labels.get(LABEL_SHARE) == "true",
            pack=self.labels.get(LABEL_PACK, ""),
            user=self.labels.get(LABEL_USER) or _owner_name(self.labels.get(LABEL_REPO, "")),
        )


class NameInUse(Exception):
    """A container of that name exists already: the engine's 409 on create, which is what makes
    creating a named container an atomic claim. Not a GpuspaceError: the caller decides."""


def _owner_name(path: str) -> str:
    """Who owns a repository (for containers made before the user label): its git dir's owner."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def container_name(repo_name: str, worktree: Path, common_dir: Path) -> str:
    """Deterministic and unique per engine: readable parts plus a hash of the full paths."""
    parts = [_slug(repo_name, 20), _slug(worktree.name, 24), name_digest(common_dir, worktree)]
    return "gpuspace-" + "-".join(part for part in parts if part)


def _slug(text: str, limit: int) -> str:
    """Only what Docker allows in names ([a-zA-Z0-9_.-]); anything else becomes '-'."""
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-._")[:limit].strip("-._")


def labels_for(
    common_dir: Path, worktree: Path, branch: str | None, gpus: list[str], share: bool, ports: list[PortMap],
    pack: str = "",
) -> dict[str, str]:
    return {
        **({LABEL_PACK: pack} if pack else {}),
        LABEL_USER: current_user(),
        LABEL_REPO: str(common_dir),
        LABEL_WORKTREE: str(worktree),
        LABEL_BRANCH: branch or "",
        LABEL_GPUS: ",".join(gpus),
        LABEL_SHARE: "true" if share else "false",
        LABEL_PORTS: ",".join(port.label() for port in ports),
    }


@contextlib.contextmanager
def _engine_errors(base_url: str = "") -> Iterator[None]:
    """Turn transport failures into one sentence with a fix."""
    try:
        yield
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as error:
        if isinstance(error, docker.errors.APIError):
            raise
        raise _unreachable(error, base_url) from None


def engine_address() -> str:
    """Where the docker CLI would go: DOCKER_HOST, else the active docker context
    (DOCKER_CONTEXT, or `docker context use`), else the local socket. The SDK's from_env
    goes to the same place; its own name for a socket is http+docker://localhost."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        context = docker.context.ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT"))
    except docker.errors.DockerException:
        context = None
    if context is not None and context.name != "default" and context.Host:
        return f"{context.Host} (docker context '{context.name}')"
    return "unix:///var/run/docker.sock"


def _unreachable(error: Exception, base_url: str) -> EngineUnavailable:
    where = base_url or engine_address()
    if "Permission denied" in str(error):
        return EngineUnavailable(
            f"permission denied on the Docker socket ({where})",
            hint="add yourself to the 'docker' group (sudo usermod -aG docker $USER, then log in again)",
        )
    return EngineUnavailable(
        f"cannot reach the Docker engine at {where}",
        hint="start it (sudo systemctl start docker), or point DOCKER_HOST (or `docker context use`) at a running engine",
    )


class Engine:
    """One connection to the engine; every call maps its failures to GpuspaceErrors: the
    engine's own (APIError) where it is made, the transport's (an engine down or out of reach)
    around every public method (_engine_calls, applied below the class)."""

    def __init__(self) -> None:
        with _engine_errors():
            self.client = docker.from_env()  # asks the engine its API version: fails fast if down
        self.api = self.client.api
        self.base_url = engine_address()

    def list_managed(self) -> list[ContainerInfo]:
        """Every container any repo of ours made on this engine, in one call."""
        found = self.api.containers(all=True, filters={"label": LABEL_REPO})
        # The claim is no binding, even when its image carries our labels (the engine merges them in).
        found = [entry for entry in found if "/" + CLAIM_NAME not in (entry.get("Names") or [])
                 and not any(name.startswith("/" + WANT_PREFIX) for name in entry.get("Names") or [])]
        return [
            ContainerInfo(
                name=entry["Names"][0].lstrip("/") if entry.get("Names") else entry["Id"][:12],
                state=entry.get("State", "unknown"),
                image=entry.get("Image", ""),
                labels=entry.get("Labels") or {},
                exit_code=_exit_code(entry.get("Status", "")),
                id=entry.get("Id", ""),
                image_id=entry.get("ImageID", ""),
                created=float(entry.get("Created") or 0) if isinstance(entry.get("Created"), (int, float)) else 0.0,
            )
            for entry in found
        ]

    def list_wants(self) -> list[tuple[str, str, dict[str, str]]]:
        """(id, name, labels) of every posted request for GPUs (runs/host_queue.py), in one call."""
        found = self.api.containers(all=True, filters={"label": LABEL_WANTS})
        return [(entry.get("Id", ""), (entry.get("Names") or ["/"])[0].lstrip("/"), entry.get("Labels") or {})
                for entry in found if any(name.startswith("/" + WANT_PREFIX) for name in entry.get("Names") or [])]

    def signal(self, name: str, signal: str) -> None:
        """Send the container's first process a signal (its init passes it on); gone is fine."""
        try:
            self.api.kill(name, signal=signal)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: not running, so nothing to signal
                raise _translate(error, f"cannot signal container '{name}'") from None

    def published_ports(self) -> set[int]:
        """Host ports any running container publishes (ours reserve theirs by label too)."""
        found = self.api.containers()
        return {port["PublicPort"] for entry in found for port in entry.get("Ports") or [] if port.get("PublicPort")}

    def has_image(self, image: str) -> bool:
        return self.image_attrs(image) is not None

    def image_id(self, image: str) -> str | None:
        attrs = self.image_attrs(image)
        return attrs["Id"] if attrs else None

    def registry_knows(self, image: str) -> None:
        """Ask the image's registry (through the engine) whether it has the image: GpuspaceError
        with the registry's words when it does not, or cannot be asked."""
        try:
            self.api.inspect_distribution(image)
        except docker.errors.APIError as error:
            raise GpuspaceError(str(error)) from None

    def wait(self, name: str) -> int:
        """Block until the container ends; its exit code (1 when the engine gives none). A
        signal's KeyboardInterrupt comes through, for the caller to pass it on."""
        return int(self.api.wait(name).get("StatusCode", 1))

    def stop_within(self, name: str, seconds: float) -> None:
        """SIGTERM to the container's command, SIGKILL after `seconds`; nothing if it is gone."""
        try:
            self.api.stop(name, timeout=math.ceil(seconds))
        except docker.errors.APIError:
            pass

    def image_attrs(self, image: str) -> dict | None:
        """The engine's inspect of a local image; None when there is none of that name."""
        try:
            return self.api.inspect_image(image)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as error:
            if error.status_code == 400:  # the engine's word on the reference itself
                raise UsageError(f"'{image}' is not a valid image reference ({_explain(error)})",
                                 hint="name an image as NAME[:TAG] or NAME@DIGEST, e.g. pytorch/pytorch:2.7.0-"
                                 "cuda12.6-cudnn9-runtime") from None
            raise _translate(error, f"cannot look up image '{image}'") from None

    def image_file(self, image: str, path: str, limit: int = 1 << 20) -> bytes | None:
        """A small regular file of `image` (its /etc/passwd), read from a container made for it and
        never started; None when the image has no such file."""
        try:
            created = self.api.create_container(image, command=["true"], entrypoint=[],
                                                host_config=self.api.create_host_config(network_mode="none"))
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot read {path} of {image}") from None
        try:
            stream, _ = self.api.get_archive(created["Id"], path)
            archive = io.BytesIO()
            for chunk in stream:
                archive.write(chunk)
                if archive.tell() > limit + (1 << 16):
                    return None
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                member = tar.next()
                handle = tar.extractfile(member) if member is not None and member.isreg() else None
                return handle.read(limit) if handle is not None else None
        except (docker.errors.NotFound, tarfile.TarError):
            return None
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot read {path} of {image}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(created["Id"], force=True)

    def pull(self, image: str, progress=sys.stderr, platform: str | None = None) -> None:
        """Pull (for `platform`, `os/arch[/variant]`, when given) with one progress line per layer
        change; a failure is ImageUnavailable."""
        repository, tag = docker.utils.parse_repository_tag(image)
        print(f"Pulling {image} ...", file=progress, flush=True)
        shown: dict[str, str] = {}
        try:
            for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True, platform=platform):
                if "error" in event:
                    raise ImageUnavailable(
                        f"cannot pull image '{image}': {event['error'].strip()}", hint=_PULL_HINT
                    )
                line = _pull_line(event)
                layer = event.get("id", "")
                if line and shown.get(layer) != line:  # one line per change, not per chunk
                    shown[layer] = line
                    print(f"  {line}", file=progress, flush=True)
        except docker.errors.APIError as error:
            raise ImageUnavailable(f"cannot pull image '{image}': {_explain(error)}", hint=_PULL_HINT) from None

    def build(self, context: Path, dockerfile: Path, tag: str, args: dict[str, str], progress=sys.stderr,
              what: str | None = None, **options) -> None:
        """Build with the engine, showing its output; a failure is ImageUnavailable. `options`:
        the SDK's build() arguments (target, cache_from, labels, extra_hosts, ...)."""
        what = what or str(dockerfile)
        print(f"Building {tag} from {what} ...", file=progress, flush=True)
        try:
            for event in self.api.build(path=str(context), dockerfile=str(dockerfile), tag=tag, buildargs=args,
                                        rm=True, forcerm=True, decode=True,  # forcerm: a failed step leaves no container
                                        **{key: value for key, value in options.items() if value}):
                if "error" in event:
                    raise ImageUnavailable(f"building {what} failed: {event['error'].strip()}")
                if event.get("stream", "").strip():
                    print(f"  {event['stream'].rstrip()}", file=progress, flush=True)
        except docker.errors.APIError as error:
            raise ImageUnavailable(f"building {what} failed: {_explain(error)}") from None

    def volume_attrs(self, name: str) -> dict | None:
        """The engine's inspect of a volume; None when there is none of that name."""
        try:
            return self.api.inspect_volume(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot look up volume '{name}'") from None

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        try:
            self.api.create_volume(name, labels=labels)
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot create volume '{name}'") from None

    def remove_volume(self, name: str) -> None:
        try:
            self.api.remove_volume(name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot remove volume '{name}'") from None

    def never_started(self, name: str) -> bool:
        """Made but not started yet (`add --no-start`): its first start is still to come."""
        try:
            started = self.api.inspect_container(name)["State"].get("StartedAt") or ""
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot inspect container '{name}'") from None
        return started.startswith("0001-01-01")

    def container_env(self, name: str) -> dict[str, str]:
        """The container's environment (the image's and ours), for `${containerEnv:VAR}`."""
        try:
            pairs = self.api.inspect_container(name)["Config"].get("Env") or []
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot inspect container '{name}'") from None
        return dict(pair.split("=", 1) for pair in pairs if "=" in pair)

    def ensure_image(self, image: str, platform: str | None = None) -> None:
        """Pulled when missing, or, as `docker run --platform` does, when the one here is for
        another platform."""
        attrs = self.image_attrs(image)
        if attrs is None:
            self.pull(image, platform=platform)
        elif platform and not for_platform(attrs, platform):
            try:
                self.pull(image, platform=platform)
            except ImageUnavailable as error:
                here = "/".join(part for part in (attrs.get("Os"), attrs.get("Architecture"), attrs.get("Variant")) if part)
                raise ImageUnavailable(f"image '{image}' does not match the specified platform: wanted {platform}, "
                                       f"the one here is for {here}, and pulling it for {platform} failed ({error})",
                                       hint=error.hint) from None

    def create(self, spec: ContainerSpec) -> None:
        user, identity_env, tmpfs = identity() if not spec.user_has_your_uid else (None, {}, None)
        options, host_options = spec.container_options, dict(spec.host_options)
        # one limit per name, the last written winning as with `docker run --ulimit`; a trusted
        # file's (host_options: rtprio, nice) after the others
        ulimits = dict(text.split("=", 1) for text in [*options.get("ulimits", []), *host_options.pop("ulimits", [])])
        host_config = self.api.create_host_config(
            mounts=[
                Mount(target=spec.workspace, source=str(spec.worktree), type="bind"),
                *(Mount(target=target, source=source, type="bind", read_only=read_only)
                  for source, target, read_only in spec.binds),
                *(Mount(target=target, source=source or None, type=kind, read_only=read_only)
                  for kind, source, target, read_only in spec.volumes),
            ],
            port_bindings={f"{p.container_port}/tcp": (p.address, p.host_port) for p in spec.ports},
            device_requests=[DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])]
            if spec.gpus
            else None,
            init=options.get("init", True),  # false: the command is PID 1 (services.ENTRYPOINT ends in exec sleep)
            ulimits=[_ulimit(name, limits) for name, limits in ulimits.items()] or None,
            extra_hosts=list(options["extra_hosts"]) if options.get("extra_hosts") else None,
            # back after a reboot or an engine restart, however the engine went down ("unless-stopped"
            # stays down after an engine killed with SIGKILL); `git gpuspace stop` sets "no"
            restart_policy={"Name": "always" if spec.restart else "no"},
            mem_limit=spec.limits.memory_bytes,
            nano_cpus=int(spec.limits.cpus * 1e9) if spec.limits.cpus else None,
            shm_size=spec.limits.shm_bytes,
            tmpfs=tmpfs,
            **host_options,
        )
        try:
            self.api.create_container(
                spec.image,
                command=spec.command,
                name=spec.name,
                # ours last: a file's label never stands in for one that says who holds a GPU
                labels={**options.get("labels", {}), **spec.labels},
                hostname=options.get("hostname"),
                platform=options.get("platform"),
                working_dir=spec.workdir,
                user=user or spec.user,
                environment={**identity_env, **spec.env},
                ports=[port.container_port for port in spec.ports],
                host_config=host_config,
                detach=True,
            )
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot create container '{spec.name}'") from None

    def create_claim(self, name: str, image: str, labels: dict[str, str]) -> str:
        """Create a container that is never started, only named: its id, or NameInUse when a
        container of that name exists. `image` must be present (nothing is pulled here)."""
        host_config = self.api.create_host_config(network_mode="none")  # no restart policy, no mounts
        try:
            # a command of its own: the image's CMD may be empty, and it never runs anyway
            created = self.api.create_container(image, command=["true"], name=name, labels=labels,
                                                host_config=host_config, detach=True)
        except docker.errors.APIError as error:
            if error.status_code == 409:
                raise NameInUse(name) from None
            raise _translate(error, f"cannot create the container '{name}'") from None
        return created["Id"]

    def labels_of(self, name: str) -> tuple[str, dict[str, str]] | None:
        """(id, labels) of the container of that name; None when there is none."""
        try:
            attrs = self.api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot inspect container '{name}'") from None
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return attrs.get("Id", ""), labels if isinstance(labels, dict) else {}

    def remove_id(self, container_id: str) -> None:
        """Delete that exact container (by id, not name: a name may be someone else's by now).
        Gone already is fine."""
        try:
            self.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if "already in progress" not in str(error):
                raise _translate(error, f"cannot remove container {container_id[:12]}") from None

    def start(self, name: str) -> None:
        from ..devcontainer import compose

        compose.start(name)  # the bound service of a Compose project: the project's services too
        try:
            self.api.start(name)
        except docker.errors.APIError as error:
            raise _translate(error, f"container '{name}' failed to start") from None

    def keep_up(self, name: str, wanted: bool) -> None:
        """Whether the engine brings the container back when it (or the machine) starts again."""
        try:
            self.api.update_container(name, restart_policy={"Name": "always" if wanted else "no"})
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot update container '{name}'") from None

    def exec(self, name: str, command: list[str], env: dict[str, str], output=None, stdin=None,
             user: str | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        """Run `command` in the container's working dir, without a TTY; stream or capture its output.

        With `output` (a pair of binary streams for stdout and stderr) the output goes there as it
        comes and the returned bytes are empty; otherwise stdout and stderr are captured together.
        With `stdin` (a binary stream) the command reads it, and sees its end, as `docker exec -i`.
        With `timeout` (seconds), output that has not ended by then is a GpuspaceError: what the
        container runs decides when it ends, and the host must not wait for it forever.
        """
        try:
            created = self.api.exec_create(name, command, environment=env, stdin=stdin is not None,
                                           user=user or "")
            captured = bytearray()
            if stdin is not None:
                frames = self._exec_with_input(created["Id"], stdin)
            elif timeout is not None:
                frames = self._exec_bounded(created["Id"], timeout, name)
            else:
                frames = self.api.exec_start(created["Id"], stream=True, demux=True)
            for out, err in frames:
                if output is None:
                    captured += (out or b"") + (err or b"")
                    continue
                for data, stream in ((out, output[0]), (err, output[1])):
                    if data:
                        stream.write(data)
                        stream.flush()
            code = self.api.exec_inspect(created["Id"])["ExitCode"]
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot run a command in '{name}'") from None
        return (code if code is not None else 1), bytes(captured)

    def _exec_with_input(self, exec_id: str, stdin) -> Iterator[tuple[bytes | None, bytes | None]]:
        """exec_start on a socket: `stdin` is copied in by a thread (then the write side is shut,
        which is the command's EOF) while the output frames come back here."""
        sock = self.api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)

        # From the file descriptor where there is one: a daemon thread blocked in a buffered
        # read holds that buffer's lock, which aborts the interpreter at exit
        try:
            fd = stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None

        def chunk() -> bytes:
            if fd is not None:
                return os.read(fd, 65536)
            return stdin.read1(65536) if hasattr(stdin, "read1") else stdin.read(65536)

        def feed() -> None:
            try:
                while data := chunk():
                    raw.sendall(data)
            except OSError:
                pass  # the command exited without reading it all
            finally:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_WR)

        threading.Thread(target=feed, name="stdin", daemon=True).start()
        try:
            for stream, data in frames_iter(sock, tty=False):
                yield (data, None) if stream == STDOUT else (None, data)
        finally:
            sock.close()

    def _exec_bounded(self, exec_id: str, seconds: float, name: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        """exec_start on a socket, its frames read by a thread (the SDK's reads wait without a
        bound); at the deadline the socket is shut, which ends that thread's read."""
        import queue
        import time

        sock = self.api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        frames: queue.Queue = queue.Queue(maxsize=64)
        done = object()

        def pump() -> None:
            try:
                for frame in frames_iter(sock, tty=False):
                    frames.put(frame)
            except (OSError, ValueError):
                pass  # shut or closed at the deadline
            finally:
                frames.put(done)

        threading.Thread(target=pump, name="exec-output", daemon=True).start()
        deadline = time.monotonic() + seconds
        try:
            while True:
                try:
                    frame = frames.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise GpuspaceError(f"the command in container '{name}' did not finish within {seconds:g} s "
                                        f"(left running there)") from None
                if frame is done:
                    return
                stream, data = frame
                yield (data, None) if stream == STDOUT else (None, data)
        finally:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            sock.close()

    def logs(self, name: str, follow: bool, tail: int | str, output) -> None:
        try:
            for chunk in self.api.logs(name, stream=True, follow=follow, tail=tail):
                output.write(chunk)
                output.flush()
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot read the logs of '{name}'") from None

    def info(self) -> dict:
        return self.api.info()

    def gpu_probe(self, image: str, uuid: str) -> str | None:
        """Run `true` with one GPU requested: None when the engine can give GPUs, else why not."""
        try:
            self.client.containers.run(
                image, ["true"], remove=True, entrypoint=[],
                device_requests=[DeviceRequest(device_ids=[uuid], capabilities=[["gpu"]])],
            )
        except docker.errors.ContainerError as error:
            return f"the probe container failed: {error}"
        except docker.errors.APIError as error:
            return str(_translate(error, "GPU probe"))
        return None

    def wait_stopped(self, name: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the container's process to end; True once it has
        (or the container is gone)."""
        try:
            self.api.wait(name, timeout=timeout, condition="not-running")
        except docker.errors.NotFound:
            pass
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as error:
            if "timed out" not in str(error).lower() and not isinstance(error, requests.exceptions.Timeout):
                raise
            return False  # it still runs
        return True

    def run_times(self, name: str) -> tuple[datetime | None, datetime | None]:
        """When the container's process started and ended, as the engine recorded them (None:
        not yet, or no such container)."""
        try:
            found = self.api.inspect_container(name).get("State") or {}
        except docker.errors.NotFound:
            return None, None
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot inspect container '{name}'") from None
        return _moment(found.get("StartedAt")), _moment(found.get("FinishedAt"))

    def state_of(self, name: str) -> str | None:
        """The engine's word for the container's state; None when there is no such container."""
        return next((c.state for c in self.list_managed() if c.name == name), None)

    def require_owner(self, name: str, owner: tuple[str, str]) -> None:
        """A container is stopped or removed for a binding only when its labels say it is that
        repo's (common dir) and worktree's: the name comes from a file a container could write."""
        try:
            labels = self.api.inspect_container(name)["Config"].get("Labels") or {}
        except docker.errors.NotFound:
            return
        if (labels.get(LABEL_REPO), labels.get(LABEL_WORKTREE)) != owner:
            raise StateError(f"container '{name}' does not belong to {owner[1]} (its labels say otherwise); "
                             f"left alone", hint="the state file names a container that is not ours: fix the entry")

    def stop(self, name: str, owner: tuple[str, str] | None = None) -> None:
        if owner is not None:
            self.require_owner(name, owner)
        try:
            self.api.stop(name, timeout=STOP_TIMEOUT_S)
        except docker.errors.APIError as error:
            raise _translate(error, f"cannot stop container '{name}'") from None
        from ..devcontainer import compose

        compose.stop(name)  # the bound service of a Compose project: its shutdownAction says for the others

    def remove(self, name: str, owner: tuple[str, str] | None = None, graceful: bool = True) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after a grace period; at once when not
        `graceful`) and delete. Gone is fine. `owner`: (repo, worktree) its labels must name.
        The bound service of a Compose project takes the project's other services with it."""
        if owner is not None:
            self.require_owner(name, owner)
        try:
            if graceful:
                self.api.stop(name, timeout=STOP_TIMEOUT_S)
        except docker.errors.NotFound:
            pass  # gone already; its Compose project may not be
        except docker.errors.APIError:
            pass  # not running, or stuck: remove(force) below settles it
        try:
            # v: its anonymous volumes too (a devcontainer.json mount without a source), as
            # `docker run --rm` does; named volumes are kept
            self.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if "already in progress" not in str(error):
                raise _translate(error, f"cannot remove container '{name}'") from None
        from ..devcontainer import compose

        compose.down(name)  # none recorded for `name` (a stat): nothing to do


def _engine_calls(method: Callable) -> Callable:
    """`method` with the engine out of reach (a refused socket, a dropped connection, also in the
    middle of a stream) as one sentence with a fix, EngineUnavailable."""
    @functools.wraps(method)
    def mapped(self: Engine, *args, **kwargs):
        with _engine_errors(self.base_url):
            return method(self, *args, **kwargs)
    return mapped


for _name, _method in list(vars(Engine).items()):
    if not _name.startswith("_") and callable(_method):
        setattr(Engine, _name, _engine_calls(_method))


def _moment(text: object) -> datetime | None:
    """The engine's RFC 3339 time ('2026-12-06T17:00:01.123456789Z', nanoseconds), None for its
    zero time (0001-01-01: not yet)."""
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", str(text or ""))
    if found is None or found.group(1).startswith("0001-"):
        return None
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    return datetime.fromisoformat(f"{found.group(1)}.{(found.group(2) or '0')[:6].ljust(6, '0')}{zone}")


def for_platform(attrs: dict, platform: str) -> bool:
    """Whether an image (the engine's inspect) is for `platform` (`os[/arch[/variant]]`); an
    image that names no variant is taken for any."""
    wanted = platform.lower().split("/")
    have = [attrs.get("Os", ""), attrs.get("Architecture", ""), attrs.get("Variant", "")]
    return all(not want or not got or want == got.lower() for want, got in zip(wanted, have))


def _ulimit(name: str, limits: str) -> Ulimit:
    """`soft:hard` as devcontainer.py writes it (-1: unlimited)."""
    soft, _, hard = limits.partition(":")
    return Ulimit(name=name, soft=int(soft), hard=int(hard or soft))


def _exit_code(status: str) -> int | None:
    """'Exited (3) 2 seconds ago' -> 3."""
    found = re.match(r"Exited \((-?\d+)\)", status)
    return int(found.group(1)) if found else None


def _pull_line(event: dict) -> str:
    """'layer: Downloading 50%' in quarter steps; other statuses as the engine words them."""
    status, layer = event.get("status", ""), event.get("id", "")
    detail = event.get("progressDetail") or {}
    if status in ("Downloading", "Extracting"):
        if not detail.get("total"):
            return ""
        quarter = min(100, 25 * (4 * detail.get("current", 0) // detail["total"]))
        status = f"{status} {quarter}% of {detail['total'] >> 20} MiB"
    return f"{layer}: {status}" if layer and status else status


_PULL_HINT = "check the image name and tag; for a private registry run `docker login` first"
_NO_RUNTIME = 'could not select device driver "" with capabilities: [[gpu]]'


def _explain(error: docker.errors.APIError) -> str:
    return (getattr(error, "explanation", None) or str(error)).strip()


def _translate(error: docker.errors.APIError, context: str) -> GpuspaceError:
    text = _explain(error)
    if "could not select device driver" in text:
        return NoNvidiaRuntime(
            "the Docker engine has no NVIDIA runtime, so it cannot give a container GPUs",
            hint="install nvidia-container-toolkit and restart dockerd, or use --gpus none",
        )
    if "port is already allocated" in text or "address already in use" in text:
        return PortTaken(f"{context}: a host port is already in use ({text})", hint="free it, or let git-gpuspace choose")
    if isinstance(error, docker.errors.ImageNotFound) or "No such image" in text:
        return ImageUnavailable(f"{context}: {text}", hint=_PULL_HINT)
    return GpuspaceError(f"{context}: {text}")
