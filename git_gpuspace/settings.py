"""Container settings: the layers merged (built-in < user < repo < devcontainer.json < flags),
validated before anything is created, or read back from a binding."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import boundary, config, data_dirs, folders, gpus, services, trust
from .devcontainer import parser as devcontainer, features
from .git import worktrees
from .errors import StateError, UsageError
from .model import Binding, GpuRequest, Limits, PortRequest, mount_parts, mount_text
from .output import escape
from .specs import MIN_MEMORY, parse_address, parse_cpus, parse_gpus, parse_limit, parse_port


@dataclass(frozen=True)
class Settings:
    """Validated container settings: everything checked before anything is created."""

    image: str
    gpu_spec: str
    request: GpuRequest
    limits: Limits
    share: bool = False
    pack: tuple[str, int] | None = None  # (group, K): runs of one sweep, K to a GPU
    ports: tuple[PortRequest, ...] = ()
    address: str = "127.0.0.1"
    data_root: str | None = None  # where a new binding's data dir goes
    data_dir: str | None = None  # an existing binding's own data dir, kept
    ssh_keys: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[str, ...] = ()  # as model.mount_text writes them
    lifecycle: dict = field(default_factory=dict)  # a trusted devcontainer.json's commands, by LIFECYCLE key
    host_options: dict = field(default_factory=dict)
    build: object = None  # devcontainer.Build: the image is built, not pulled
    features: tuple = ()  # features.Feature: installed into an image derived from `image` (or the build)
    devcontainer: str | None = None  # the devcontainer.json used, relative to the worktree
    trusted: bool = False  # the devcontainer.json is trusted
    trusted_mounts: tuple[str, ...] = ()  # mounts a trusted devcontainer.json asks for (a volume may be any)
    override_command: bool = True  # False: the image's own command runs (devcontainer.json overrideCommand)
    workspace: str | None = None  # where the worktree is mounted, when not /workspace
    workdir: str | None = None  # where commands start, when not the workspace
    container_user: str | None = None
    remote_user: str | None = None
    remote_env: dict = field(default_factory=dict)  # name -> value (None: unset), for commands run in it
    user_env_probe: str | None = None
    initialize: tuple | None = None  # a trusted initializeCommand and the worktree it runs in, on the host
    user_has_your_uid: bool = False  # container_user is an account of the image given your uid (user_uid.py)
    container_options: dict = field(default_factory=dict)  # devcontainer.json's ulimits, labels, hostname, ...
    compose: object = None  # compose.ComposeConfig: a trusted Compose-based devcontainer.json's project


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
        own_image = flags.get("image") is None  # --image replaces the file's image, build and features
        extra = dict(ports=dev.ports, env=dict(dev.env), mounts=tuple(dev.mounts), lifecycle=dict(dev.lifecycle),
                     host_options=dict(dev.host_options), build=dev.build if own_image else None,
                     features=tuple(dev.features) if own_image else (), trusted=dev.trusted,
                     trusted_mounts=tuple(dev.mounts) if dev.trusted else (),
                     override_command=dev.override_command, workspace=dev.workspace, workdir=dev.workdir,
                     container_user=dev.container_user, remote_user=dev.remote_user,
                     remote_env=dict(dev.remote_env), user_env_probe=dev.user_env_probe,
                     initialize=(dev.initialize_command, dev.worktree) if dev.initialize_command is not None else None,
                     container_options=dict(dev.container_options))
        if dev.compose is not None:
            extra["compose"] = dev.compose
    image = str(merged["image"]).strip()
    if not image:
        raise UsageError("the image name is empty", hint="pass --image NAME[:TAG]")
    memory_name, memory_hint = _limit_origin("memory", "--memory", flags, dev)
    shm_name, shm_hint = _limit_origin("shm_size", "--shm-size", flags, dev)
    limits = Limits(
        memory_bytes=parse_limit(str(merged["memory"]), memory_name, MIN_MEMORY, memory_hint)
        if merged.get("memory") else None,
        cpus=parse_cpus(str(merged["cpus"])) if merged.get("cpus") else None,
        shm_bytes=parse_limit(str(merged["shm_size"]), shm_name, hint=shm_hint) if merged.get("shm_size") else None,
    )
    services = _service_ports(merged)
    if services and not extra.get("override_command", True):
        raise UsageError(f"devcontainer.json sets overrideCommand to false, so the image's own command runs and "
                         f"{', '.join(port.name for port in services)} cannot be started with it",
                         hint="drop --jupyter/--ssh/--tensorboard, or start the service from the image's command")
    # a forwarded port a service already publishes is that service's (--jupyter and forwardPorts [8888])
    served = {port.container_port for port in services}
    forwarded = [port for port in extra.pop("ports", ()) if port.container_port not in served]
    ports = [*forwarded, *services, *(parse_port(text) for text in flags.get("ports") or ())]
    names = [port.name for port in ports]
    if len(set(names)) != len(names):
        raise UsageError(f"port name {next(n for n in names if names.count(n) > 1)!r} is given twice")
    hosts = [port.host_port for port in ports if port.host_port is not None]
    if len(set(hosts)) != len(hosts):
        raise UsageError("the same host port is asked for twice")
    if ports and extra.get("host_options", {}).get("network_mode") == "host":
        raise UsageError(f"ports ({', '.join(names)}) cannot be published with runArgs --network host: the "
                         f"container uses the host's ports directly", hint="drop one of them from devcontainer.json "
                         "(or the --jupyter/--ssh/--port flags)")
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


def _limit_origin(key: str, flag: str, flags: dict, dev: "devcontainer.Devcontainer | None") -> tuple[str, str | None]:
    """How a limit is named in an error, and its hint: by the repository's file when the file
    gave it (a flag wins over the file)."""
    if dev is not None and key in dev.layer and flags.get(key) is None:
        return f"{dev.path.name} runArgs {flag}", f"pass {flag} SIZE to override the file; nothing was made"
    return flag, None


def _service_ports(merged: dict) -> list[PortRequest]:
    """--jupyter / --ssh / --tensorboard, each true or the host port wanted."""
    found = []
    for name, container_port in services.SERVICE_PORTS.items():
        value = merged.get(name)
        if value is None or value is False or str(value).lower() in ("false", "no", "0", ""):
            continue
        host = None if value is True or str(value).lower() in ("true", "yes") else _host_port(name, value)
        found.append(PortRequest(name, container_port, host))
    return found


def _host_port(name: str, value: object) -> int:
    """--jupyter=PORT and friends: the host port, in the user's own words when it is wrong."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"--{name} {value}: not a host port (1-65535)", hint=f"write --{name} or --{name}=PORT")
    return int(text)


def settings_of(binding: Binding) -> Settings:
    """A binding's own settings, as the state file says; `checked_settings` before using them."""
    spec = binding.gpu_request or (",".join(binding.gpus) if binding.gpus else "none")
    return Settings(
        image=binding.image,
        gpu_spec=spec,
        request=parse_gpus(spec),
        limits=binding.limits,
        share=binding.share,
        ports=tuple(PortRequest(p.name, p.container_port, p.host_port or None, p.origin) for p in binding.ports),
        address=binding.ports[0].address if binding.ports else "127.0.0.1",
        data_dir=binding.data_dir,
        env=dict(binding.env),
        mounts=tuple(binding.mounts),
        host_options=dict(binding.host_options),
        devcontainer=binding.devcontainer,
        override_command=binding.override_command,
        workspace=binding.workspace,
        workdir=binding.workdir,
        container_user=binding.container_user,
        remote_user=binding.remote_user,
        remote_env=dict(binding.remote_env),
        user_env_probe=binding.user_env_probe,
        container_options=dict(binding.container_options),
    )


def checked_settings(info: worktrees.RepoInfo, state_path: Path, index: int, binding: Binding,
                     worktree: worktrees.Worktree) -> Settings:
    """A binding's settings to make its container again. The state file is data, not authority:
    what widens access is re-checked against the trust record, mounts are resolved now (a source
    swapped for a symlink since is caught), and the data dir must be one we made. A state file
    that asks for more is refused, naming the key; nothing is done."""
    where = f"{state_path}: bindings[{index}]"
    hint = "the state file asks for more than you allowed: fix the entry, or trust the devcontainer.json that asks for it"
    allowed = trusted_devcontainer(info, binding, worktree) if binding.host_options or binding.mounts else None
    for key, value in binding.host_options.items():
        if allowed is None or allowed.host_options.get(key) != value:
            raise StateError(f"{where}.host_options.{key} = {value!r} is not asked for by a trusted "
                             f"devcontainer.json; nothing was done", hint=hint)
    mounts = []
    protected = protected_paths(info, worktree)
    for mount in binding.mounts:
        kind, source, target, read_only = mount_parts(mount)
        if kind != "bind":
            mounts.append(mount)
            continue
        resolved = os.path.realpath(source)
        if (not folders.inside(Path(resolved), info.anchor, worktree.path)
                or boundary.exposes(Path(resolved), protected)) and (
                allowed is None or mount not in allowed.mounts):
            raise StateError(f"{where}.mounts: {source} resolves to {resolved}, outside the repository or into its "
                             f"git dir, and no trusted devcontainer.json asks for it; nothing was done", hint=hint)
        mounts.append(mount_text(kind, resolved, target, read_only))
    if binding.data_dir:
        data_dirs.checked_data_dir(binding.data_dir, binding.container, where)
    return replace(settings_of(binding), mounts=tuple(mounts), trusted=allowed is not None,
                   trusted_mounts=tuple(m for m in mounts if allowed is not None and m in allowed.mounts))


def trusted_devcontainer(info: worktrees.RepoInfo, binding: Binding, worktree: worktrees.Worktree):
    """The worktree's devcontainer.json as a trusted file asks, or None when it is not trusted now."""
    path = worktree.path / binding.devcontainer if binding.devcontainer else devcontainer.locate(worktree.path, None)
    if path is None or not path.is_file():
        return None
    content = devcontainer.read(path, worktree.path, info.anchor)
    if not trust.is_trusted(info.common_dir, trust.coverage(path, content, worktree.path, info.anchor)):
        return None
    return devcontainer.load(path, content, worktree.path, info.anchor, True, fetch=features.cached_feature,
                             protected=protected_paths(info, worktree))


def protected_paths(info: worktrees.RepoInfo, worktree: worktrees.Worktree) -> tuple[Path, ...]:
    """boundary.protected_paths of this worktree (core.hooksPath as git reads it, where there is a git dir)."""
    hooks_path = worktrees.config_value(info, "core", "hooksPath") if (info.common_dir / "HEAD").is_file() else None
    return boundary.protected_paths(worktree.path, info.common_dir, info.anchor, hooks_path)


def settings_for_worktree(
    info: worktrees.RepoInfo, repo_defaults: dict, flags: dict, share: bool, worktree: worktrees.Worktree,
    devcontainer_name: str | None = None, trust_it: bool = False, notices: bool = True,
) -> Settings:
    """Settings with the worktree's devcontainer.json as a layer, as far as the user trusts it
    (`trust_it`: --trust, which records that trust); its notices go to stderr."""
    path = devcontainer.locate(worktree.path, devcontainer_name)
    if path is None:
        named = sorted(p.parent.name for p in (worktree.path / ".devcontainer").glob("*/devcontainer.json"))
        if named and notices:  # only named configurations: none is taken unless one is chosen
            print(f"git-gpuspace: .devcontainer has configurations {', '.join(named)} and no default one; "
                  f"none was used (--devcontainer {named[0]} chooses one)", file=sys.stderr)
        return settings_from(repo_defaults, flags, share)
    content = devcontainer.read(path, worktree.path, info.anchor)
    covered = trust.coverage(path, content, worktree.path, info.anchor)
    dev = devcontainer.load(path, content, worktree.path, info.anchor,
                            trust_it or trust.is_trusted(info.common_dir, covered),
                            protected=protected_paths(info, worktree))
    made = settings_from(repo_defaults, flags, share, dev)  # refused in one line, before any notice
    granted = trust_it and trust.grant(info.common_dir, covered)  # recorded once the file is known to be usable
    for notice in dev.notices() if notices else []:
        print(f"git-gpuspace: {notice}", file=sys.stderr)
    # what it would run, or now runs, that trusting it does not cover
    if notices and covered.not_covered() and (granted or (dev.skipped and not dev.trusted)):
        print(f"git-gpuspace: {escape(covered.not_covered())}", file=sys.stderr)
    replaced = [what for what, asked in (("image", dev.image), ("build", dev.build), ("features", dev.features)) if asked]
    if flags.get("image") is not None and replaced and notices:
        print(f"git-gpuspace: --image {flags['image']} replaces the {path.name}'s {', '.join(replaced)}", file=sys.stderr)
    if notices and _asks_for_gpus(dev, flags):
        print(f"git-gpuspace: {path.name} is not trusted and asks for {dev.gpu} GPUs (hostRequirements.gpu), so "
              f"{made.request.count} will be claimed; pass --gpus N to claim fewer, or review the file and run "
              f"`git gpuspace trust {worktree.path}` to accept it", file=sys.stderr)
    return replace(made, devcontainer=str(path.relative_to(worktree.path)))


def _asks_for_gpus(dev: devcontainer.Devcontainer, flags: dict) -> bool:
    """An untrusted file that takes more than one GPU from everyone else (a --gpus flag wins)."""
    count = dev.gpu
    return (not dev.trusted and flags.get("gpus") is None and isinstance(count, int) and not isinstance(count, bool)
            and count > 1)
