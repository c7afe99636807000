"""Steps shared by commands, hooks and reconcile: plan a binding, bind, unbind, recreate."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import allocate, config, devcontainer, gpus, workspace, worktrees
from .containers import ContainerInfo, ContainerSpec, Engine, container_name, labels_for
from .errors import GpuspaceError, UsageError
from .faults import checkpoint
from .locking import host_gpu_lock
from .model import Binding, Gpu, GpuRequest, Limits, PortMap, PortRequest
from .specs import MIN_MEMORY, parse_address, parse_cpus, parse_gpus, parse_limit, parse_port, parse_size
from .state import State


class Rollback:
    """Undo steps pushed as work proceeds; run newest first if the block fails (Ctrl-C too)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, kind, error, trace) -> bool:
        if error is not None:
            for what, step in reversed(self._steps):
                try:
                    step()
                except BaseException as failure:  # report, and keep undoing the rest
                    print(f"warning: could not undo ({what}): {failure}", file=sys.stderr)
        return False


@dataclass(frozen=True)
class Settings:
    """Validated container settings: everything checked before anything is created."""

    image: str
    gpu_spec: str
    request: GpuRequest
    limits: Limits
    share: bool = False
    ports: tuple[PortRequest, ...] = ()
    address: str = "127.0.0.1"
    data_root: str | None = None  # where a new binding's data dir goes
    data_dir: str | None = None  # an existing binding's own data dir, kept
    ssh_keys: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[str, ...] = ()  # "source:target[:ro]"
    post_create: object = None  # devcontainer.json postCreateCommand: run once, after the first start
    host_options: dict = field(default_factory=dict)
    build: object = None  # devcontainer.Build: the image is built, not pulled


def settings_from(repo_defaults: dict, flags: dict, share: bool, dev: "devcontainer.Devcontainer | None" = None) -> Settings:
    """Merge the layers (built-in < user < repo < devcontainer < flags) and validate them."""
    layer = dict(dev.layer) if dev else {}
    if dev and dev.image:
        layer["image"] = dev.image
    merged = config.effective(repo_defaults, flags, layer)
    extra: dict = {}
    if dev:
        merged["gpus"] = devcontainer.gpu_spec(dev.gpu, str(merged["gpus"]),
                                               len(gpus.inventory()) if dev.gpu == "optional" else 0,
                                               from_flag=flags.get("gpus") is not None)
        extra = dict(ports=dev.ports, env=dict(dev.env), mounts=tuple(dev.mounts), post_create=dev.post_create,
                     host_options=dict(dev.host_options), build=dev.build if flags.get("image") is None else None)
    image = str(merged["image"]).strip()
    if not image:
        raise UsageError("the image name is empty", hint="pass --image NAME[:TAG]")
    limits = Limits(
        memory_bytes=parse_limit(str(merged["memory"]), "--memory", MIN_MEMORY) if merged.get("memory") else None,
        cpus=parse_cpus(str(merged["cpus"])) if merged.get("cpus") else None,
        shm_bytes=parse_size(str(merged["shm_size"]), "--shm-size") if merged.get("shm_size") else None,
    )
    ports = [*extra.pop("ports", ()), *_service_ports(merged), *(parse_port(text) for text in flags.get("ports") or ())]
    names = [port.name for port in ports]
    if len(set(names)) != len(names):
        raise UsageError(f"port name {next(n for n in names if names.count(n) > 1)!r} is given twice")
    hosts = [port.host_port for port in ports if port.host_port is not None]
    if len(set(hosts)) != len(hosts):
        raise UsageError("the same host port is asked for twice")
    return Settings(
        image=image,
        gpu_spec=str(merged["gpus"]),
        request=parse_gpus(str(merged["gpus"])),
        limits=limits,
        share=share,
        ports=tuple(ports),
        address=parse_address(str(merged.get("publish_address") or "127.0.0.1")),
        data_root=str(merged["data_root"]) if merged.get("data_root") else None,
        ssh_keys=tuple(flags.get("ssh_keys") or ()),
        **extra,
    )


def _service_ports(merged: dict) -> list[PortRequest]:
    """--jupyter / --ssh / --tensorboard, each true or the host port wanted."""
    found = []
    for name, container_port in workspace.SERVICE_PORTS.items():
        value = merged.get(name)
        if value is None or value is False or str(value).lower() in ("false", "no", "0", ""):
            continue
        host = None if value is True or str(value).lower() in ("true", "yes") else parse_port(f"{name}={container_port}:{value}").host_port
        found.append(PortRequest(name, container_port, host))
    return found


def settings_of(binding: Binding) -> Settings:
    """A binding's own settings: to claim again what a pending binding asked for."""
    spec = binding.gpu_request or (",".join(binding.gpus) if binding.gpus else "none")
    return Settings(
        image=binding.image,
        gpu_spec=spec,
        request=parse_gpus(spec),
        limits=binding.limits,
        share=binding.share,
        ports=tuple(PortRequest(p.name, p.container_port, p.host_port or None) for p in binding.ports),
        address=binding.ports[0].address if binding.ports else "127.0.0.1",
        data_dir=binding.data_dir,
        env=dict(binding.env),
        mounts=tuple(binding.mounts),
        host_options=dict(binding.host_options),
    )


def settings_for_worktree(
    info: worktrees.RepoInfo, repo_defaults: dict, flags: dict, share: bool, worktree: worktrees.Worktree,
    devcontainer_name: str | None = None, trust: bool = False,
) -> Settings:
    """Settings with the worktree's devcontainer.json as a layer; its notices go to stderr."""
    path = devcontainer.locate(worktree.path, devcontainer_name)
    dev = devcontainer.load(path, worktree.path, info.anchor, trust) if path else None
    for notice in dev.notices() if dev else []:
        print(f"git-gpuspace: {notice}", file=sys.stderr)
    return settings_from(repo_defaults, flags, share, dev)


@dataclass
class Plan:
    """An engine that answered, an image that is there, and GPUs that looked free."""

    settings: Settings
    engine: Engine
    inventory: list[Gpu]


def prepare(settings: Settings, engine: Engine | None = None) -> Plan:
    """Connect, check the GPUs could be had, and pull the image: all before creating anything.

    The GPU check here only refuses early; the claim in `bind_worktree` is the one that counts.
    """
    engine = engine or Engine()
    plan = Plan(settings, engine, gpus.inventory() if not settings.request.none else [])
    allocate.choose(settings.request, plan.inventory, leases(engine.list_managed()), settings.share)
    if settings.build is not None:
        tag = settings.build.tag()
        if not engine.has_image(tag):
            engine.build(settings.build.context, settings.build.dockerfile, tag, settings.build.args)
        plan.settings = replace(settings, image=tag)
    else:
        engine.ensure_image(settings.image)
    return plan


def leases(containers: list[ContainerInfo]) -> allocate.Leases:
    held: allocate.Leases = {}
    for container in containers:
        for uuid in container.gpus:
            held.setdefault(uuid, []).append(container.holder)
    return held


def bind_worktree(
    info: worktrees.RepoInfo,
    plan: Plan,
    state: State,
    worktree: worktrees.Worktree,
    *,
    start: bool,
    undo: Rollback,
    replacing: Binding | None = None,
) -> tuple[Binding, list[Gpu]]:
    """Claim GPUs and ports, create (and maybe start) the container, record the binding.

    `replacing`: a binding whose container gives way to this one (its GPUs pass over).
    """
    settings = plan.settings
    name = container_name(info.name, worktree.path, info.common_dir)
    data_dir = _data_dir(settings, name, undo)
    binds = _workspace_binds(settings, data_dir)
    old = replacing.container if replacing else None
    chosen, ports = _claim_and_create(info, plan, name, worktree, data_dir, binds, undo, old)
    checkpoint("after-container-create")
    workspace.write_context(data_dir, workspace.context(worktree.path, worktree.branch, worktree.head))
    if start:
        plan.engine.start(name)
        checkpoint("after-container-start")
    binding = Binding(
        path=str(worktree.path),
        container=name,
        image=settings.image,
        branch=worktree.branch,
        gpus=[gpu.uuid for gpu in chosen],
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
        ports=ports,
        data_dir=str(data_dir),
        env=dict(settings.env),
        mounts=list(settings.mounts),
        host_options=dict(settings.host_options),
    )
    state.bindings = [b for b in state.bindings if b is not replacing and b.path != binding.path]
    state.bindings.append(binding)  # (a pending binding for this worktree is replaced too)
    state.save()
    return binding, chosen


def _data_dir(settings: Settings, name: str, undo: Rollback) -> Path:
    if settings.data_dir:
        path, made = workspace.create_data_dir(Path(settings.data_dir).parent, Path(settings.data_dir).name)
    else:
        root = Path(os.path.expanduser(settings.data_root)) if settings.data_root else workspace.default_data_root()
        path, made = workspace.create_data_dir(root, name)
    if made:
        undo.push(f"remove data dir {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    names = {port.name for port in settings.ports}
    if "jupyter" in names:
        workspace.jupyter_token(path)
    if "ssh" in names:
        workspace.install_ssh_keys(path, [Path(key) for key in settings.ssh_keys] or None)
    return path


def _workspace_binds(settings: Settings, data_dir: Path) -> list[tuple[str, str, bool]]:
    caches = workspace.ensure_caches()
    binds = [(str(data_dir), workspace.DATA_MOUNT, False)]
    binds += [(str(caches / cache), f"{workspace.CACHE_MOUNT}/{cache}", False) for cache in workspace.CACHES]
    if any(port.name == "ssh" for port in settings.ports) and os.getuid() != 0:
        passwd, group = workspace.accounts(data_dir, os.getuid(), os.getgid())
        binds += [(str(passwd), "/etc/passwd", True), (str(group), "/etc/group", True)]
    for mount in settings.mounts:
        source, target, *mode = mount.split(":")
        binds.append((source, target, mode == ["ro"]))
    return binds


def _claim_and_create(
    info: worktrees.RepoInfo,
    plan: Plan,
    name: str,
    worktree: worktrees.Worktree,
    data_dir: Path,
    binds: list[tuple[str, str, bool]],
    undo: Rollback,
    replacing: str | None = None,
) -> tuple[list[Gpu], list[PortMap]]:
    """Atomic across every repo on the host: the host claim lock is held from reading the
    leases (container labels) until the new labelled container exists."""
    settings, engine = plan.settings, plan.engine
    with host_gpu_lock():
        managed = engine.list_managed()
        # `name` taken by a container of ours means no binding claims it (an interrupted command).
        for gone in {name, replacing} & {container.name for container in managed}:
            engine.remove(gone)
        managed = [container for container in managed if container.name not in (name, replacing)]
        chosen = allocate.choose(settings.request, plan.inventory, leases(managed), settings.share)
        ports: list[PortMap] = []
        if settings.ports:
            reserved = {port.host_port for container in managed for port in container.ports}
            ports = allocate.choose_ports(
                list(settings.ports), reserved | engine.published_ports(), settings.address,
                workspace.host_port_free, str(worktree.path),
            )
        uuids = [gpu.uuid for gpu in chosen]
        engine.create(
            ContainerSpec(
                name=name,
                image=settings.image,
                worktree=worktree.path,
                common_dir=info.common_dir,
                labels=labels_for(info.common_dir, worktree.path, worktree.branch, uuids, settings.share, ports),
                gpus=uuids,
                limits=settings.limits,
                ports=ports,
                env={**workspace.environment(ports, workspace.context(worktree.path, worktree.branch, worktree.head)),
                     **settings.env},
                binds=binds,
                command=workspace.command(),
                host_options=settings.host_options,
            )
        )
        undo.push(f"remove container {name}", lambda: engine.remove(name))
    return chosen, ports


def record_pending(state: State, info: worktrees.RepoInfo, worktree: worktrees.Worktree, settings: Settings, reason: str) -> Binding:
    """The worktree should have a container but cannot yet: keep the wish and the reason."""
    binding = Binding(
        path=str(worktree.path),
        container=container_name(info.name, worktree.path, info.common_dir),
        image=settings.image,
        branch=worktree.branch,
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
        pending=reason,
        ports=[PortMap(p.name, p.container_port, p.host_port or 0, settings.address) for p in settings.ports],
        data_dir=settings.data_dir,
        env=dict(settings.env),
        mounts=list(settings.mounts),
        host_options=dict(settings.host_options),
    )
    state.remove(binding.path)
    state.bindings.append(binding)
    state.save()
    return binding


def recreate(info: worktrees.RepoInfo, engine: Engine, state: State, binding: Binding, worktree: worktrees.Worktree) -> Binding:
    """A new container for a binding (worktree moved, container lost), with the same GPUs,
    ports and data dir.

    The old container goes inside the same host claim lock that claims its GPUs again, so no
    other repo can take them in between.
    """
    same_gpus = ",".join(binding.gpus) or "none"
    settings = replace(settings_of(binding), gpu_spec=binding.gpu_request or same_gpus, request=parse_gpus(same_gpus))
    engine.ensure_image(binding.image)
    plan = Plan(settings, engine, gpus.inventory() if binding.gpus else [])
    with Rollback() as undo:
        new, _ = bind_worktree(info, plan, state, worktree, start=True, undo=undo, replacing=binding)
    return new


def unbind(engine: Engine, state: State, binding: Binding) -> None:
    """Forget the binding, then stop and delete the container (releasing its GPUs).

    In this order a crash in between leaves a container no binding claims, which the next
    reconcile removes; the other order would leave a binding whose container is gone.
    """
    state.remove(binding.path)
    state.save()
    checkpoint("after-unbind-save")
    engine.remove(binding.container)


def resolve_worktree(info: worktrees.RepoInfo, target: str | None) -> worktrees.Worktree:
    """A worktree named by path, by directory name or by branch; default: the one we are in."""
    known = worktrees.list_worktrees(info)
    if target is None:
        here = Path.cwd().resolve()
        inside = [w for w in known if not w.prunable and (here == w.path.resolve() or w.path.resolve() in here.parents)]
        if inside:
            return max(inside, key=lambda w: len(str(w.path)))
        raise UsageError("not inside a worktree", hint="name the worktree by path, directory name or branch")
    found = worktrees.find_worktree(info, Path(target))
    if found is not None:
        return found
    matches = [w for w in known if target in (w.path.name, w.branch)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        paths = ", ".join(str(w.path) for w in matches)
        raise UsageError(f"'{target}' names several worktrees: {paths}", hint="give the path")
    raise UsageError(f"no worktree '{target}' in this repository", hint="`git gpuspace status` lists them")


def default_worktree_path(info: worktrees.RepoInfo, branch: str) -> Path:
    """The usual convention: ../worktrees/<branch> beside the main worktree."""
    return info.anchor.parent / "worktrees" / branch.replace("/", "-")


def absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def require_unbound(state: State, path: Path) -> None:
    existing = state.find(path)
    if existing is not None and not existing.pending:
        raise GpuspaceError(f"'{path}' is already bound", hint="see `git gpuspace status`")


def run_post_create(engine: Engine, binding: Binding, command: object) -> None:
    """devcontainer.json's postCreateCommand, once, after the first start. A failure warns:
    the container is up and the user can fix and rerun it by hand."""
    if not command:
        return
    steps = list(command.values()) if isinstance(command, dict) else [command]
    for step in steps:
        argv = ["sh", "-c", step] if isinstance(step, str) else [str(part) for part in step]
        print(f"Running postCreateCommand: {' '.join(argv) if not isinstance(step, str) else step}", file=sys.stderr)
        code, _ = engine.exec(binding.container, argv, {}, output=(sys.stderr.buffer, sys.stderr.buffer))
        if code != 0:
            print(f"git-gpuspace: warning: postCreateCommand exited with {code}", file=sys.stderr)
