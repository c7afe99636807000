"""A Compose-based devcontainer.json (`dockerComposeFile`, `service`), made and taken down by
Compose itself (the `docker-compose` CLI), as the reference implementation does
(devcontainers/cli src/spec-node/dockerCompose.ts): the repository's Compose files, then an
override file of ours that gives the bound service what our own container would get (the
worktree and its git dir layout, /data, the caches, our labels, the exclusive GPUs, the
environment, our command), all run as one Compose project per worktree.

The project's name is derived from our container name, so two worktrees' services never meet,
and the bound service's container has exactly that container name, so status, stop, remove and
reconcile find it as they find any binding's container. What the project needs to be taken
down again (the override and the project as Compose resolved it) is kept in our private state,
never in the worktree: `remove` and a `git worktree remove` still take the whole project down
when the repository's Compose files are gone or changed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from ..config import APP_NAME
from ..engine.container_user import identity
from ..errors import GpuspaceError, UsageError

COMPOSE = "docker-compose"
LABEL_COMPOSE = "gpuspace.compose"  # on the bound service's container: the name of its Compose project
SHUTDOWN_ACTIONS = ("none", "stopCompose")
PROJECT_FILE = "project.yml"  # the project as Compose resolved it (our override included): what `down` reads
SETTINGS_FILE = "settings.json"  # what the devcontainer.json said that outlives the command: shutdownAction
OVERRIDE_FILE = "gpuspace-override.json"  # JSON is YAML: Compose reads it as one of its files
STOP_TIMEOUT_S = 10  # as containers.STOP_TIMEOUT_S: a service's grace period before SIGKILL
# Host-config options a trusted devcontainer.json may ask for, by the Compose key each becomes
_HOST_OPTIONS = {"privileged": "privileged", "cap_add": "cap_add", "security_opt": "security_opt",
                 "network_mode": "network_mode", "ipc_mode": "ipc", "pid_mode": "pid", "devices": "devices"}


@dataclass(frozen=True)
class ComposeConfig:
    """What a Compose-based devcontainer.json asks for (its paths resolved)."""

    files: tuple[str, ...]  # dockerComposeFile, in order: later files extend earlier ones
    service: str  # the service bound to the worktree
    run_services: tuple[str, ...] = ()  # runServices: the services started (all when empty), the bound one always
    shutdown_action: str = "stopCompose"


def project_name(container: str) -> str:
    """The Compose project of a binding's container: its name as Compose (1.21 and later)
    writes project names. Container names end in a digest of the worktree's path, so two
    worktrees' projects never share a name."""
    return re.sub(r"[^-_a-z0-9]", "", container.lower())


def record_dir(container: str) -> Path:
    """Where the project of `container`'s binding keeps its override and resolved project file."""
    return platformdirs.user_state_path(APP_NAME) / "compose" / project_name(container)


def recorded(container: str) -> bool:
    return (record_dir(container) / PROJECT_FILE).is_file()


def parse(path: Path, document: dict, repo_root: Path, worktree: Path) -> ComposeConfig:
    """dockerComposeFile (a path or a list of them, relative to the devcontainer.json's folder,
    inside the repository: trusting the file is trusting what the repository holds), service,
    runServices and shutdownAction, as the reference's schema says."""
    from ..folders import inside

    names = document.get("dockerComposeFile")
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise UsageError(f"{path}: 'dockerComposeFile' must be a path or a non-empty list of paths")
    files = []
    for name in names:
        where = (path.parent / name).resolve()
        if not inside(where, repo_root, worktree):
            raise UsageError(f"{path}: dockerComposeFile {name} is outside the repository")
        if not where.is_file():
            raise UsageError(f"{path}: dockerComposeFile {name} does not exist ({where})")
        files.append(str(where))
    service = document.get("service")
    if not isinstance(service, str) or not service.strip():
        raise UsageError(f"{path}: a Compose-based configuration needs 'service', the service bound to the worktree")
    run_services = document.get("runServices") or []
    if not isinstance(run_services, list) or not all(isinstance(name, str) and name for name in run_services):
        raise UsageError(f"{path}: 'runServices' must be a list of service names")
    action = document.get("shutdownAction", "stopCompose")
    if action not in SHUTDOWN_ACTIONS:
        raise UsageError(f"{path}: 'shutdownAction' of a Compose-based configuration must be one of "
                         f"{', '.join(SHUTDOWN_ACTIONS)}, not {action!r}")
    return ComposeConfig(tuple(files), service, tuple(run_services), action)


def prepare(config: ComposeConfig, container: str, image_present) -> str:
    """Check the project as Compose reads it (the service is there; no service asks for GPUs
    itself) and build what it builds, before any GPU is claimed: the bound service's image,
    present now. `image_present(name)`: whether the engine has that image."""
    project = project_name(container)
    resolved = _compose(config, project, "config", what="reading the Compose files")
    services = _services(resolved)
    if config.service not in services:
        raise UsageError(f"service '{config.service}' (devcontainer.json 'service') is not in the Compose files "
                         f"({', '.join(sorted(services)) or 'no services'}); nothing was made")
    unknown = [name for name in config.run_services if name not in services]
    if unknown:
        raise UsageError(f"runServices names {', '.join(unknown)}, not in the Compose files; nothing was made")
    asking = [name for name, fields in services.items() if fields["gpus"]]
    if asking:
        raise UsageError(f"the Compose files give GPUs to {', '.join(asking)} themselves; GPUs come from the exclusive "
                         f"allocation, to the bound service only; nothing was made",
                         hint="drop the GPU reservation (deploy.resources.reservations.devices, runtime: nvidia, "
                              "NVIDIA_VISIBLE_DEVICES) from the Compose files; --gpus chooses how many the "
                              f"'{config.service}' service gets")
    wanted = _started(config)
    built = [name for name in (wanted or list(services)) if services[name]["build"]]
    if built:
        _compose(config, project, "build", *built, what="building the Compose services", capture=False)
    image = services[config.service]["image"] or f"{project}_{config.service}"
    if not image_present(image):
        _compose(config, project, "pull", config.service, what=f"pulling the image of service '{config.service}'",
                 capture=False)
    return image


def up(config: ComposeConfig, spec: Any) -> None:
    """The project made, not started (the bound container's start starts it: `start`), with
    our override for the bound service; `spec`: the containers.ContainerSpec our own container
    would have been made from. A failure takes the project down again: nothing half made."""
    project = project_name(spec.name)
    if recorded(spec.name):  # left by an interrupted command: its services go first
        down(spec.name)
    folder = record_dir(spec.name)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    override = folder / OVERRIDE_FILE
    override.write_text(json.dumps(_override(config, spec, project), indent=2))
    try:
        # the intent first: what `down` reads exists before any container of the project does
        resolved = _compose(config, project, "config", extra=(str(override),), what="reading the Compose files")
        (folder / PROJECT_FILE).write_text(_for_down(resolved, project))
        (folder / SETTINGS_FILE).write_text(json.dumps({"shutdownAction": config.shutdown_action,
                                                        "services": _started(config)}))
        _compose(config, project, "up", "--no-start", *_started(config), extra=(str(override),),
                 what="making the Compose services", capture=False)
    except BaseException:
        down(spec.name)
        raise


def start(container: str) -> None:
    """The project of `container`'s binding started (its services in their dependency order,
    the bound one with them), when there is one."""
    if recorded(container):
        # `up`, not `start`: Compose 1.29's start exits 0 when a service fails to start
        _recorded(container, "up", "-d", "--no-recreate", "--no-build", *_settings(container).get("services", []),
                  what="starting the Compose services")


def stop(container: str) -> None:
    """With shutdownAction stopCompose (the default), stopping the bound service stops the
    project's others too, as closing the editor does in the reference; none: they stay up."""
    if recorded(container):
        if _settings(container).get("shutdownAction", "stopCompose") == "stopCompose":
            _recorded(container, "stop", "-t", str(STOP_TIMEOUT_S), what="stopping the Compose services")


def _settings(container: str) -> dict:
    try:
        found = json.loads((record_dir(container) / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _recorded(container: str, *args: str, what: str) -> None:
    folder = record_dir(container)
    _run(["-p", project_name(container), "-f", str(folder / PROJECT_FILE), *args], what, cwd=folder)


def down(container: str) -> None:
    """The project of `container`'s binding taken down (`docker-compose down`: its containers
    and networks; named volumes are kept, as Compose keeps them), from what was recorded when
    it was made. Nothing recorded: nothing to do."""
    if recorded(container):
        _recorded(container, "down", "--remove-orphans", "-t", str(STOP_TIMEOUT_S),
                  what=f"taking down Compose project {project_name(container)}")
    shutil.rmtree(record_dir(container), ignore_errors=True)


def _started(config: ComposeConfig) -> list[str]:
    """runServices and the bound service; none named: Compose starts them all."""
    if not config.run_services:
        return []
    return [*config.run_services, *([config.service] if config.service not in config.run_services else [])]


def _compose(config: ComposeConfig, project: str, *args: str, extra: tuple[str, ...] = (), what: str,
             capture: bool = True) -> str:
    # Compose's project directory is the first file's folder (its .env, its relative paths), also
    # for the copies of files that name their project (_without_name)
    directory = Path(config.files[0]).parent
    with tempfile.TemporaryDirectory(prefix="gpuspace-compose-") as copies:
        files = [_without_name(Path(file), Path(copies) / f"{index}-{Path(file).name}")
                 for index, file in enumerate(config.files)]
        arguments = [arg for file in (*files, *extra) for arg in ("-f", file)]
        return _run(["-p", project, "--project-directory", str(directory), *arguments, *args], what, cwd=directory,
                    capture=capture)


def _without_name(path: Path, copy: Path) -> str:
    """The Compose file to give Compose: `path`, or when it names its project (the top-level
    `name:` of Compose v2, which 1.x refuses) a copy without that name, since the project is
    named per worktree (`-p`, which wins over `name:` in v2 as well)."""
    import yaml

    from ..untrusted_files import read_bytes

    try:
        text = read_bytes(path, follow_symlinks=True)
        if not re.search(rb"(?m)^name\s*:", text):
            return str(path)
        document = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return str(path)  # Compose says what is wrong with it
    if not isinstance(document, dict) or "name" not in document:
        return str(path)
    del document["name"]
    copy.write_text(json.dumps(document, default=str))  # JSON is YAML
    return str(copy)


def _run(args: list[str], what: str, cwd: Path, capture: bool = True) -> str:
    binary = shutil.which(COMPOSE)
    if binary is None:
        raise UsageError(f"{what}: {COMPOSE} is not installed, and a Compose-based devcontainer.json needs it",
                         hint="install it (Debian: apt-get install docker-compose)")
    # its progress (build steps) goes where ours goes, stderr; its errors are read for the one line we say
    result = subprocess.run([binary, *args], cwd=cwd, stdin=subprocess.DEVNULL, text=True,
                            stdout=subprocess.PIPE if capture else _progress(), stderr=subprocess.PIPE)
    if not capture and result.returncode == 0 and result.stderr:
        print(result.stderr, end="", file=sys.stderr, flush=True)
    if result.returncode != 0:
        raise GpuspaceError(f"{what} failed: {_error_of(result.stderr or '') or f'exit {result.returncode}'}")
    return result.stdout or ""


def _error_of(stderr: str) -> str:
    """Compose's error in one line. Errors of services say it per container and again per
    service (`ERROR: for db ...`): the last one says it. A file it cannot read is a paragraph
    (the file, then what is wrong: "invalid because: ... 'name' does not match any of the
    regexes", or a YAML error and where), followed by advice: that first paragraph."""
    lines = [line.strip() for line in stderr.splitlines() if not line.startswith("WARNING:")]
    errors = [" ".join(line.removeprefix("ERROR:").split()) for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1]
    text = "\n".join(lines).strip()
    return " ".join(text.split("\n\n", 1)[0].split())


def _progress() -> Any:
    try:
        sys.stderr.flush()
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind it (captured)
        return subprocess.DEVNULL


def _project(resolved: str) -> dict[str, Any]:
    """`docker-compose config`'s output: the project, every file merged and interpolated."""
    import yaml  # here: only Compose configurations pay for its import

    try:
        project = yaml.safe_load(resolved)
    except yaml.YAMLError as error:
        raise GpuspaceError(f"docker-compose config gave what is not YAML: {error}") from None
    return project if isinstance(project, dict) else {}


def _services(resolved: str) -> dict[str, dict[str, Any]]:
    """What we need of each service: its image, whether it is built, whether it asks for GPUs
    itself (a device reservation, the NVIDIA runtime or NVIDIA_VISIBLE_DEVICES)."""
    services = {}
    for name, service in (_project(resolved).get("services") or {}).items():
        service = service if isinstance(service, dict) else {}
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        environment = service.get("environment") or {}
        names = environment if isinstance(environment, dict) else [str(item).split("=", 1)[0] for item in environment]
        services[str(name)] = {"image": service.get("image"), "build": "build" in service,
                               "gpus": bool(devices or service.get("device_requests")
                                            or service.get("runtime") == "nvidia" or "NVIDIA_VISIBLE_DEVICES" in names)}
    return services


def _for_down(resolved: str, project: str) -> str:
    """The resolved project as `down` needs it once the worktree may be gone: without what
    Compose checks on the file system when it reads a file (build contexts, env files); a built
    service keeps the name of its image instead."""
    document = _project(resolved)
    for name, service in (document.get("services") or {}).items():
        if not isinstance(service, dict):
            continue
        if service.pop("build", None) is not None and not service.get("image"):
            service["image"] = f"{project}_{name}"
        service.pop("env_file", None)
    import yaml

    return yaml.safe_dump(document, sort_keys=False)


def _escaped(value: Any) -> Any:
    """Every string as Compose reads it literally: `$` is Compose's interpolation, `$$` a dollar."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    return value


def _override(config: ComposeConfig, spec: Any, project: str) -> dict:
    """Our part of the bound service, from the container spec: mounts (merged by target, so
    ours replace the file's at the same path), labels, GPUs, environment, limits, ports, user,
    command, and the host options a trusted file asked for."""
    # an account of the image given your uid runs as itself (as containers.py makes it)
    user, identity_env, tmpfs = identity() if not spec.user_has_your_uid else (None, {}, None)
    volumes: list[dict] = [{"type": "bind", "source": str(spec.worktree), "target": spec.workspace}]
    volumes += [{"type": "bind", "source": source, "target": target, "read_only": read_only}
                for source, target, read_only in spec.binds]
    named: dict[str, dict] = {}
    for kind, source, target, read_only in spec.volumes:
        volumes.append({"type": kind, **({"source": source} if source else {}), "target": target,
                        **({"read_only": True} if read_only else {})})
        if kind == "volume" and source:
            named[source] = {"name": source}  # that exact volume, not one prefixed with the project's name
    options, host_options = dict(getattr(spec, "container_options", {})), dict(spec.host_options)
    service: dict[str, Any] = {
        "container_name": spec.name,
        # the service's image, or what is made from it: features installed, an account given your uid
        "image": spec.image,
        # ours last: a file's label never stands in for one that says who holds a GPU
        "labels": {**options.pop("labels", {}), **spec.labels, LABEL_COMPOSE: project},
        "init": options.pop("init", True),
        "restart": "always" if spec.restart else "no",
        "working_dir": spec.workdir,
        "environment": {**identity_env, **spec.env},
        "volumes": volumes,
    }
    if user or spec.user:
        service["user"] = user or spec.user
    if tmpfs:
        service["tmpfs"] = [f"{path}:{options}" for path, options in tmpfs.items()]
    if spec.command is not None:  # overrideCommand: our entrypoint is the service's first process
        service["entrypoint"] = []
        service["command"] = list(spec.command)
    if spec.gpus:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"capabilities": ["gpu"], "device_ids": list(spec.gpus)}]}}}
    if spec.ports:
        service["ports"] = [f"{port.address}:{port.host_port}:{port.container_port}" for port in spec.ports]
    if spec.limits.memory_bytes:
        service["mem_limit"] = spec.limits.memory_bytes
    if spec.limits.cpus:
        service["cpus"] = spec.limits.cpus
    if spec.limits.shm_bytes:
        service["shm_size"] = spec.limits.shm_bytes
    ulimits = dict(text.split("=", 1) for text in [*options.pop("ulimits", []), *host_options.pop("ulimits", [])])
    for name, limits in ulimits.items():  # "soft:hard" as devcontainer.py writes them
        soft, _, hard = limits.partition(":")
        service.setdefault("ulimits", {})[name] = {"soft": int(soft), "hard": int(hard or soft)}
    for key in ("extra_hosts", "hostname", "platform"):
        if options.get(key):
            service[key] = list(options.pop(key)) if key == "extra_hosts" else options.pop(key)
    for key, value in host_options.items():
        if key not in _HOST_OPTIONS:
            raise UsageError(f"{key} (from the devcontainer.json) is not supported with a Compose-based configuration; "
                             f"nothing was made", hint="set it on the service in the Compose file instead")
        service[_HOST_OPTIONS[key]] = value
    override: dict[str, Any] = {}
    version = _version(config.files[0])
    if version:  # Compose wants the files of one project alike
        override["version"] = version
    override["services"] = {config.service: _escaped(service)}
    if named:
        override["volumes"] = _escaped(named)
    return override


def _version(path: str) -> str | None:
    """The first Compose file's `version:`, which the reference repeats in its override too."""
    import yaml

    from ..untrusted_files import read_bytes

    try:
        document = yaml.safe_load(read_bytes(Path(path), follow_symlinks=True))
    except (OSError, yaml.YAMLError):
        return None  # `docker-compose config` says what is wrong with it
    version = document.get("version") if isinstance(document, dict) else None
    return str(version) if version is not None else None
