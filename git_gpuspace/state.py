"""`.git/gpuspace.toml`: read, validate, migrate, lock and write atomically.

The file lives in the common git dir, so every worktree of a repo sees the same bindings.
Every change happens under `locked()`: load, mutate, `save()`, release.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import StateError
from .locking import file_lock
from .model import Binding, Limits, PortMap, name_digest

from .installation import tomllib

SCHEMA_VERSION = 1
FILE_NAME = "gpuspace.toml"
LOCK_NAME = "gpuspace.lock"
ORIGINS_NAME = "gpuspace.origins"  # where the repository was when its containers were named (State._write_origins)


@dataclass
class State:
    path: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)
    auto_bind: bool = False  # set by `init`: the hook binds worktrees made by `git worktree add`
    checks: dict[str, Any] = field(default_factory=dict)  # `verify add`: name -> command, gpus, image, on_commit
    pre_push: list[str] = field(default_factory=list)  # checks a pushed commit must pass (`hooks install --pre-push`)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know: kept as they are

    def find(self, worktree: str | Path) -> Binding | None:
        key = str(worktree)
        return next((b for b in self.bindings if b.path == key), None)

    def remove(self, worktree: str | Path) -> None:
        self.bindings = [b for b in self.bindings if b.path != str(worktree)]

    def save(self) -> None:
        document: dict[str, Any] = {**self.extra, "schema": SCHEMA_VERSION}
        if self.auto_bind:
            document["auto_bind"] = True
        if self.defaults:
            document["defaults"] = dict(self.defaults)
        if self.checks:
            document["checks"] = dict(self.checks)
        if self.pre_push:
            document["pre_push"] = list(self.pre_push)
        document["bindings"] = [_binding_to_toml(b) for b in self.bindings]
        import tomli_w

        from . import hook_index  # here: a command that only reads the state imports no writer
        from .atomic import atomic_write

        atomic_write(self.path, tomli_w.dumps(document).encode())
        hook_index.write(self.path.parent, self.bindings, self.checks)
        self._write_origins()

    def _write_origins(self) -> None:
        """Where this repository is, and was while a binding's container was named, each with
        the user's keyed hash: after the repository is moved (and `git worktree repair`), its
        containers' names and labels still say the old place, which this file vouches for."""
        here = str(self.path.parent)
        places = [here, *sorted({b.repo for b in self.bindings if b.repo and b.repo != here})]
        content = "".join(f"{_origin_mac(p)} {p}\n" for p in places if "\n" not in p).encode()
        target = self.path.parent / ORIGINS_NAME
        with contextlib.suppress(OSError):
            if target.read_bytes() == content:
                return  # most saves: written already, and a write (with its fsync) costs every command
        from .atomic import atomic_write

        atomic_write(target, content)



def state_path(common_dir: Path) -> Path:
    return common_dir / FILE_NAME


def load(common_dir: Path) -> State:
    """Read the state; a missing file is an empty state. Never repairs a bad file."""
    path = state_path(common_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return State(path=path)
    except OSError as error:
        raise StateError(f"cannot read {path}: {error.strerror}") from None
    return parse(path, raw)


@contextlib.contextmanager
def locked(common_dir: Path) -> Iterator[State]:
    """Hold the repo's state lock and yield the current state; call `save()` to commit."""
    with file_lock(common_dir / LOCK_NAME):
        yield load(common_dir)


@contextlib.contextmanager
def locked_if_free(common_dir: Path) -> Iterator[State | None]:
    """Like `locked`, but yields None at once while another command holds the lock."""
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(file_lock(common_dir / LOCK_NAME, wait=False))
        except StateError:  # a read-only git dir: nothing can be changed, which is all this lock is for
            held = False
        yield load(common_dir) if held else None


def parse(path: Path, raw: bytes) -> State:
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise StateError(f"{path} is not UTF-8 text (byte {error.start})", hint=_FIX_HINT) from None
    except tomllib.TOMLDecodeError as error:
        raise StateError(f"{path}: {_where(error, raw)}", hint=_FIX_HINT) from None
    schema = document.get("schema", SCHEMA_VERSION)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise StateError(f"{path}: 'schema' must be an integer", hint=_FIX_HINT)
    if schema < 1:
        raise StateError(f"{path}: 'schema' must be 1 or more, not {schema}", hint=_FIX_HINT)
    if schema > SCHEMA_VERSION:
        raise StateError(
            f"{path} has schema {schema}, newer than this git-gpuspace understands ({SCHEMA_VERSION})",
            hint="upgrade git-gpuspace (pip install -U git-gpuspace)",
        )
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise StateError(f"{path}: [defaults] must be a table", hint=_FIX_HINT)
    entries = document.get("bindings", [])
    if not isinstance(entries, list):
        raise StateError(f"{path}: 'bindings' must be an array of tables", hint=_FIX_HINT)
    earlier = _Origins(path.parent)
    bindings = [_binding_from_toml(path, i, entry, earlier) for i, entry in enumerate(entries)]
    auto_bind = _require(path, "auto_bind", document.get("auto_bind", False), bool, "true or false")
    checks = _require(path, "checks", document.get("checks", {}), dict, "a table of checks")
    for name, check in checks.items():
        _require(path, f"checks.{name}", check, dict, "a table")
        command = _require(path, f"checks.{name}.command", check.get("command"), list, "a list of strings")
        if not command or not all(isinstance(word, str) for word in command):
            raise StateError(f"{path}: checks.{name}.command must be a list of strings", hint=_FIX_HINT)
        for key in ("gpus", "image"):
            if key in check:
                _require(path, f"checks.{name}.{key}", check[key], str, "a string")
        _require(path, f"checks.{name}.on_commit", check.get("on_commit", False), bool, "true or false")
    pre_push = _require(path, "pre_push", document.get("pre_push", []), list, "a list of check names")
    if not all(isinstance(name, str) for name in pre_push):
        raise StateError(f"{path}: pre_push must be a list of check names", hint=_FIX_HINT)
    extra = {key: value for key, value in document.items() if key not in _TOP_LEVEL}
    return State(path=path, defaults=defaults, bindings=bindings, auto_bind=auto_bind, checks=checks,
                 pre_push=list(pre_push), extra=extra)


_TOP_LEVEL = {"schema", "defaults", "bindings", "auto_bind", "checks", "pre_push"}
_BINDING_KEYS = {"path", "container", "image", "branch", "gpus", "limits", "share", "created", "worktree_id",
                 "gpu_request", "pending", "data_dir", "devcontainer", "ports", "env", "mounts", "host_options",
                 "workspace", "workdir", "container_user", "remote_user", "override_command", "container_options",
                 "remote_env", "user_env_probe"}
# what a trusted devcontainer.json's runArgs may ask for (devcontainer.py), and nothing else
HOST_OPTIONS = {"privileged": bool, "cap_add": list, "network_mode": str, "ipc_mode": str, "pid_mode": str,
                "devices": list, "security_opt": list, "ulimits": list}
# what any devcontainer.json may set, as it stays in the container (devcontainer.py)
CONTAINER_OPTIONS = {"ulimits": list, "extra_hosts": list, "labels": dict, "hostname": str, "platform": str,
                     "init": bool}


_OPTIONAL_STRINGS = ("worktree_id", "gpu_request", "pending", "data_dir", "devcontainer", "workspace", "workdir",
                     "container_user", "remote_user", "user_env_probe")
_FIX_HINT = "fix or move the file by hand; git-gpuspace will not overwrite it"


def _where(error: Exception, raw: bytes) -> str:
    """tomllib puts the position in its message; 'end of document' gets the last line."""
    message = str(error)
    if "end of document" in message:
        lines = raw.decode("utf-8", "replace").split("\n")
        return f"{message.replace('(at end of document)', '').strip()} at line {len(lines)}, column {len(lines[-1]) + 1} (end of file)"
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if found:
        return f"{message[:found.start()].strip()} at line {found.group(1)}, column {found.group(2)}"
    return message


def _require(path: Path, where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise StateError(f"{path}: {where} must be {what}", hint=_FIX_HINT)
    return value


def _container_options(path: Path, where: str, options: Any) -> dict[str, Any]:
    """A binding's container_options, each of its kind; a label may not be one of ours (they
    say who holds which GPU), as devcontainer.json's may not."""
    _require(path, f"{where}.container_options", options, dict, "a table")
    for key, value in options.items():
        if key not in CONTAINER_OPTIONS:
            raise StateError(f"{path}: {where}.container_options.{key} is not an option git-gpuspace sets "
                             f"({', '.join(sorted(CONTAINER_OPTIONS))}); nothing was done", hint=_FIX_HINT)
        kind = CONTAINER_OPTIONS[key]
        _require(path, f"{where}.container_options.{key}", value, kind,
                 {bool: "true or false", list: "a list of strings", str: "a string", dict: "a table of strings"}[kind])
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        if not all(isinstance(item, str) for _, item in items):
            raise StateError(f"{path}: {where}.container_options.{key} must hold strings only", hint=_FIX_HINT)
    if any(label.lower().startswith("gpuspace.") for label in options.get("labels", {})):
        raise StateError(f"{path}: {where}.container_options.labels sets a gpuspace.* label, which only "
                         f"git-gpuspace writes; nothing was done", hint=_FIX_HINT)
    return dict(options)


def _binding_from_toml(path: Path, index: int, entry: Any, earlier: "_Origins | None" = None) -> Binding:
    where = f"bindings[{index}]"
    _require(path, where, entry, dict, "a table")
    for key in ("path", "container", "image"):
        if key not in entry:
            raise StateError(f"{path}: {where} lacks '{key}'", hint=_FIX_HINT)
        _require(path, f"{where}.{key}", entry[key], str, "a string")
    branch = entry.get("branch")
    if branch is not None:
        _require(path, f"{where}.branch", branch, str, "a string")
    gpus = _require(path, f"{where}.gpus", entry.get("gpus", []), list, "a list of GPU UUIDs")
    for gpu in gpus:
        _require(path, f"{where}.gpus", gpu, str, "a list of GPU UUIDs")
    limits = _require(path, f"{where}.limits", entry.get("limits", {}), dict, "a table")
    for key in ("memory", "shm_size"):
        if key in limits:
            _require(path, f"{where}.limits.{key}", limits[key], int, "an integer (bytes)")
    if "cpus" in limits:
        _require(path, f"{where}.limits.cpus", limits["cpus"], (int, float), "a number")
    share = _require(path, f"{where}.share", entry.get("share", False), bool, "true or false")
    override_command = _require(path, f"{where}.override_command", entry.get("override_command", True), bool,
                                "true or false")
    created = entry.get("created")
    if created is not None:
        _require(path, f"{where}.created", created, _dt.datetime, "a date-time")
    optional: dict[str, Any] = {}
    for key in _OPTIONAL_STRINGS:
        if entry.get(key) is not None:
            optional[key] = _require(path, f"{where}.{key}", entry[key], str, "a string")
    ports = []
    for text in _require(path, f"{where}.ports", entry.get("ports", []), list, "a list of port mappings"):
        port = PortMap.from_label(text) if isinstance(text, str) else None
        if port is None:
            raise StateError(f"{path}: {where}.ports has a bad entry {text!r} (name=container:host@address)", hint=_FIX_HINT)
        ports.append(port)
    env = _require(path, f"{where}.env", entry.get("env", {}), dict, "a table of strings")
    if not all(isinstance(value, str) for value in env.values()):
        raise StateError(f"{path}: {where}.env must be a table of strings", hint=_FIX_HINT)
    remote_env = _require(path, f"{where}.remote_env", entry.get("remote_env", {}), dict, "a table of strings")
    if not all(isinstance(value, str) for value in remote_env.values()):
        raise StateError(f"{path}: {where}.remote_env must be a table of strings", hint=_FIX_HINT)
    mounts = _require(path, f"{where}.mounts", entry.get("mounts", []), list, "a list of strings")
    if not all(isinstance(mount, str) for mount in mounts):
        raise StateError(f"{path}: {where}.mounts must be a list of strings", hint=_FIX_HINT)
    host_options = _require(path, f"{where}.host_options", entry.get("host_options", {}), dict, "a table")
    for key, value in host_options.items():
        if key not in HOST_OPTIONS:
            raise StateError(f"{path}: {where}.host_options.{key} is not an option git-gpuspace sets "
                             f"({', '.join(sorted(HOST_OPTIONS))}); nothing was done", hint=_FIX_HINT)
        _require(path, f"{where}.host_options.{key}", value, HOST_OPTIONS[key],
                 {bool: "true or false", list: "a list", str: "a string"}[HOST_OPTIONS[key]])
    container_options = _container_options(path, where, entry.get("container_options", {}))
    optional.update(ports=ports, env=dict(env), remote_env=dict(remote_env), mounts=list(mounts), host_options=dict(host_options),
                    container_options=container_options,
                    extra={key: value for key, value in entry.items() if key not in _BINDING_KEYS})
    # Only a name we would give this worktree's container: `remove` and `prune` delete it.
    named_under = _named_under(path, where, entry, earlier)
    binding = Binding(
        path=entry["path"],
        container=entry["container"],
        image=entry["image"],
        branch=branch,
        gpus=list(gpus),
        limits=Limits(
            memory_bytes=limits.get("memory"),
            cpus=float(limits["cpus"]) if "cpus" in limits else None,
            shm_bytes=limits.get("shm_size"),
        ),
        share=share,
        override_command=override_command,
        repo=str(named_under) if named_under is not None else None,
        **optional,
    )
    if created is not None:
        binding.created = created
    return binding


def _named_under(path: Path, where: str, entry: dict[str, Any], earlier: "_Origins | None") -> Path | None:
    """Where the repository was when the binding's container was named and labelled: None for
    here, or a place this repository was before it was moved (`git worktree repair` mends git's
    links, not a container's name). Any other name is refused: `remove` and `prune` delete it."""
    def named_in(repo: Path) -> bool:
        return bool(re.fullmatch(r"gpuspace-[a-zA-Z0-9_.-]*-" + name_digest(repo, Path(entry["path"])),
                                 entry["container"]))

    if named_in(path.parent):
        return None
    for place, refusal in earlier.places() if earlier is not None else ():
        if named_in(place):
            if refusal:
                raise StateError(f"{path}: {where}.container {entry['container']!r} was named when this repository "
                                 f"was at {place}, which {refusal}; nothing was done", hint=_FIX_HINT)
            return place
    raise StateError(f"{path}: {where}.container {entry['container']!r} is not the name of this worktree's "
                     f"container; nothing was done", hint=_FIX_HINT)


class _Origins:
    """The places `gpuspace.origins` says this repository was, read only when a binding's name
    is not from here. A place counts when the user's key vouches for it (their git-gpuspace
    wrote it) and it no longer holds a git dir, or is this very dir: a copied repository, or a
    line copied from another one, names none of that repository's containers."""

    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self._places: list[tuple[Path, str | None]] | None = None

    def places(self) -> list[tuple[Path, str | None]]:
        """(place, None) when it counts, (place, why not) when it does not."""
        if self._places is None:
            self._places = [(Path(place), self._refusal(mac, place)) for mac, place in self._lines()]
        return self._places

    def _lines(self) -> list[tuple[str, str]]:
        try:
            with open(self.common_dir / ORIGINS_NAME, "rb") as handle:
                text = handle.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return []
        lines = (line.partition(" ") for line in text.splitlines())
        return [(mac, place) for mac, _, place in lines if os.path.isabs(place) and place != str(self.common_dir)]

    def _refusal(self, mac: str, place: str) -> str | None:
        if not hmac.compare_digest(mac.encode(), _origin_mac(place).encode()):
            return f"{ORIGINS_NAME} does not vouch for (its keyed hash is not your git-gpuspace's)"
        from .folders import provably_absent

        try:
            same = os.path.samefile(place, self.common_dir)
        except OSError:
            same = False
        if not same and not provably_absent(place):
            return "still holds a git dir: its containers are that repository's (a copy, not a move?)"
        return None


def _origin_mac(place: str) -> str:
    from .data_dirs import user_mac  # read only when a binding or a save needs it

    return user_mac(f"gpuspace.origin\0{place}")


def _binding_to_toml(binding: Binding) -> dict[str, Any]:
    entry: dict[str, Any] = {**binding.extra, "path": binding.path}
    if binding.branch is not None:
        entry["branch"] = binding.branch
    entry.update(
        container=binding.container,
        image=binding.image,
        gpus=list(binding.gpus),
        share=binding.share,
        created=binding.created,
    )
    for key in _OPTIONAL_STRINGS:
        if getattr(binding, key) is not None:
            entry[key] = getattr(binding, key)
    if binding.ports:
        entry["ports"] = [port.label() for port in binding.ports]
    if binding.env:
        entry["env"] = dict(binding.env)
    if binding.remote_env:
        entry["remote_env"] = dict(binding.remote_env)
    if binding.mounts:
        entry["mounts"] = list(binding.mounts)
    if binding.host_options:
        entry["host_options"] = dict(binding.host_options)
    if binding.container_options:
        entry["container_options"] = dict(binding.container_options)
    if not binding.override_command:
        entry["override_command"] = False
    limits = {
        key: value
        for key, value in (
            ("memory", binding.limits.memory_bytes),
            ("cpus", binding.limits.cpus),
            ("shm_size", binding.limits.shm_bytes),
        )
        if value is not None
    }
    if limits:
        entry["limits"] = limits
    return entry
