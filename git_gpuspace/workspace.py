"""What makes a container a place to work: data that outlives it, shared caches, services
(Jupyter, SSH, TensorBoard) behind secrets only the user can read, experiment context.

The data dir is mounted writable in the container, so everything in it is the container's to
change: the host opens what it writes or reads there without following symlinks, keeps files
it mounts elsewhere, and deletes a data dir only when it proves the dir is one it made.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import shlex
import shutil
from pathlib import Path

import platformdirs

from .config import APP_NAME, default_data_root
from .errors import GpuspaceError, StateError, UsageError
from .model import Binding, PortMap

DATA_MOUNT = "/data"
CACHE_MOUNT = "/cache"
PRIVATE = ".gpuspace"  # in the data dir, mode 0700: tokens, keys, service state
OWNER = "owner"  # in PRIVATE: a keyed hash of the data dir's path, proof that we made it
# Shared by every worktree of the user, so a 10 GB model is downloaded once.
CACHES = {"huggingface": "HF_HOME", "pip": "PIP_CACHE_DIR", "torch": "TORCH_HOME"}
SERVICE_PORTS = {"jupyter": 8888, "ssh": 22, "tensorboard": 6006}


def cache_root() -> Path:
    return platformdirs.user_cache_path(APP_NAME) / "shared"


ORIGIN = "origin"  # in PRIVATE: the repository (common dir) and worktree it was made for, for `data list`


def create_data_dir(root: Path, name: str, origin: tuple[Path, Path] | None = None) -> tuple[Path, bool]:
    """The binding's data dir (checkpoints/, logs/, a private .gpuspace/); True if made now.
    `origin`: (common dir, worktree) it is made for.

    A dir made now gets its owner mark first, so one left half-made (its undo failed too) is
    still provably ours. When the file system says no (full, over quota, read-only...), what was
    made now is undone and the error names the path and the cause."""
    path = root / name
    made = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)  # the user's alone, like their home
            made = True
        except FileExistsError:
            pass
        if made:
            _put_private(path, OWNER, _owner_mark(path))
        for sub in ("checkpoints", "logs"):
            (path / sub).mkdir(exist_ok=True)
        os.close(_private_dir(path))
        if origin is not None and read_private(path, ORIGIN) is None:
            _put_private(path, ORIGIN, f"{origin[0]}\n{origin[1]}\n")
    except BaseException as error:
        if made:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(error, OSError):
            verb = "make" if made or not path.is_dir() else "use"
            raise GpuspaceError(f"cannot {verb} the data dir {path}: {_cause(error)}", hint=_hint(error)) from None
        raise
    return path, made


# Less than this left counts as none: what failed to write may have freed a little since.
FULL_BYTES, FULL_INODES = 1 << 20, 16


def disk_trouble(data_dir: Path) -> str | None:
    """Why the data dir's file system takes no more, as `df` would show it: full, out of
    inodes or read-only; None when it has room (or cannot be asked)."""
    try:
        found = os.statvfs(data_dir)
    except OSError:
        return None
    if found.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if found.f_bavail * found.f_frsize < FULL_BYTES:
        return "no space left on device"
    if found.f_files and found.f_favail < FULL_INODES:  # f_files 0: the file system counts none
        return "no inodes left on device"
    return None


def _cause(error: OSError) -> str:
    """'No space left on device' -> 'no space left on device'."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def _hint(error: OSError) -> str:
    change = "or choose another data root: `git gpuspace config set data_root DIR`"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space on that disk, {change}"
    return f"check that you can write there, {change}"


def data_dirs() -> list[Path]:
    """Every data dir of ours in the user's data roots (made by us: our owner mark)."""
    found = []
    for root in trusted_roots():
        with contextlib.suppress(OSError):
            found += [entry for entry in sorted(root.iterdir()) if entry.is_dir() and not entry.is_symlink() and _marked(entry)]
    return found


def origin_of(data_dir: Path) -> tuple[Path, Path] | None:
    """(common dir, worktree) a data dir was made for; None for one made before this was kept.
    Written by us, in the private dir: still only shown and compared, never acted on."""
    lines = (read_private(data_dir, ORIGIN) or "").splitlines()
    return (Path(lines[0]), Path(lines[1])) if len(lines) >= 2 else None


def trusted_roots() -> list[Path]:
    """Data roots that come from the user, never from a repository: the default and the user
    config's `data_root`."""
    from .config import load_user

    roots = [default_data_root()]
    configured = load_user().get("data_root")
    if configured:
        roots.append(Path(os.path.expanduser(str(configured))))
    return [Path(os.path.realpath(root)) for root in roots]


def checked_data_dir(text: str, container: str, where: str) -> Path:
    """A data dir named by the state file, which is data: an absolute, symlink-free path that we
    made (its owner mark is ours), or that is still to be made in one of the user's data roots
    under the container's name. Anything else is refused, naming the key."""
    problem = data_dir_problem(text, container)
    if problem:
        raise StateError(f"{where}.data_dir {text!r} {problem}; nothing was done",
                         hint="the state file asks for more than git-gpuspace made: fix the entry by hand")
    return Path(text)


def data_dir_problem(text: str, container: str) -> str | None:
    """Why `text` is not provably a data dir of ours (see checked_data_dir), or None."""
    path = Path(text)
    if not path.is_absolute() or os.path.normpath(text) != text or ".." in path.parts:
        return "is not a plain absolute path"
    if os.path.realpath(text) != text:
        return f"leads through a symlink to {os.path.realpath(text)}"
    if path.exists():
        if not _marked(path) and not (path.name == container and path.parent in trusted_roots()):
            return "is not a data dir git-gpuspace made (it lacks our owner mark)"
    elif not (path.name == container and path.parent in trusted_roots()):
        return "is outside your data roots"
    return None


def _owner_mark(path: Path) -> str:
    return user_mac(str(path)) + "\n"


def user_mac(text: str) -> str:
    """A keyed hash of `text` with the user's secret: proof that this user's git-gpuspace wrote it."""
    return hmac.new(_mark_key(), text.encode(), hashlib.sha256).hexdigest()


def _marked(path: Path) -> bool:
    text = read_private(path, OWNER)
    return text is not None and hmac.compare_digest(text, _owner_mark(path))


def _mark_key() -> bytes:
    """A secret of the user's, outside every data dir: a container cannot forge a mark."""
    key_file = platformdirs.user_state_path(APP_NAME) / "owner.key"
    try:
        return key_file.read_bytes()
    except FileNotFoundError:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it first
            return key_file.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        return key_file.read_bytes()


def _private_dir(data_dir: Path) -> int:
    """An fd on `<data dir>/.gpuspace`, made 0700 if missing, refusing a symlink put there."""
    top = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir(PRIVATE, 0o700, dir_fd=top)
        except FileExistsError:
            pass
        try:
            fd = os.open(PRIVATE, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
        except OSError:
            raise GpuspaceError(f"{data_dir / PRIVATE} is not a directory (a symlink?); refusing to use it",
                                hint="something in the container replaced it: remove it by hand") from None
    finally:
        os.close(top)
    os.fchmod(fd, 0o700)
    return fd


def _write_private(data_dir: Path, name: str, text: str) -> None:
    """Write `.gpuspace/<name>` (0600) by rename inside the directory: a symlink the container
    put at that name is replaced, never followed. A full disk and the like are one line."""
    try:
        _put_private(data_dir, name, text)
    except OSError as error:
        raise GpuspaceError(f"cannot write {data_dir / PRIVATE / name}: {_cause(error)}", hint=_hint(error)) from None


def _put_private(data_dir: Path, name: str, text: str) -> None:
    directory = _private_dir(data_dir)
    temporary = f".{name}.{secrets.token_hex(4)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=directory)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)
        os.close(directory)


def remove_private(data_dir: Path, name: str) -> None:
    """Remove `.gpuspace/<name>` if it is there, following no symlink on the way."""
    try:
        directory = _private_dir(data_dir)
        try:
            os.unlink(name, dir_fd=directory)
        except FileNotFoundError:
            pass
        finally:
            os.close(directory)
    except OSError as error:
        raise GpuspaceError(f"cannot remove {data_dir / PRIVATE / name}: {_cause(error)}", hint=_hint(error)) from None


def read_private(data_dir: Path, name: str) -> str | None:
    """`.gpuspace/<name>` if it is a regular file (not a symlink, FIFO or device), else None."""
    from .untrusted_files import read_under

    found = read_under(data_dir, f"{PRIVATE}/{name}", 1 << 16)
    return None if found is None else found.decode(errors="replace")


def ensure_caches() -> Path:
    root = cache_root()
    for name in CACHES:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def jupyter_token(data_dir: Path) -> str:
    """A random token, kept in a 0600 file in the data dir (never in labels or the engine's env)."""
    existing = read_private(data_dir, "jupyter-token")
    if existing and existing.strip():
        return existing.strip()
    token = secrets.token_hex(24)
    _write_private(data_dir, "jupyter-token", token + "\n")
    return token


def install_ssh_keys(data_dir: Path, key_files: list[Path] | None) -> None:
    """authorized_keys from the user's public keys: SSH accepts keys only, never passwords."""
    candidates = key_files or sorted((Path.home() / ".ssh").glob("*.pub"))
    keys = []
    for key_file in candidates:
        try:
            text = key_file.read_text().strip()
        except OSError as error:
            raise UsageError(f"cannot read SSH public key {key_file}: {error.strerror}") from None
        if not text.startswith(("ssh-", "ecdsa-", "sk-")):
            raise UsageError(f"{key_file} is not an SSH public key", hint="pass the .pub file")
        keys.append(text)
    if not keys:
        raise UsageError("--ssh needs a public key, and ~/.ssh has no *.pub", hint="pass --ssh-key PATH, or run ssh-keygen")
    _write_private(data_dir, "authorized_keys", "\n".join(keys) + "\n")


def accounts(uid: int, gid: int) -> tuple[Path, Path]:
    """passwd/group naming the user's uid: sshd refuses users it cannot look up. Kept outside
    the data dir: they are mounted, and a container must not choose what the host mounts."""
    directory = platformdirs.user_state_path(APP_NAME) / "accounts"
    directory.mkdir(parents=True, exist_ok=True)
    passwd, group = directory / "passwd", directory / "group"
    user = os.environ.get("USER", "gpuspace") or "gpuspace"
    passwd.write_text(f"root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{gid}:{user}:/home/gpuspace:/bin/sh\n")
    group.write_text(f"root:x:0:\n{user}:x:{gid}:\n")
    return passwd, group


# The container's first process (under docker-init): start the services asked for, then idle.
ENTRYPOINT = r"""
state=/data/.gpuspace
rm -f "$state/service-"*
# why a service is not there, for `add` and `status` to say (one line in service-<name>)
warn() { echo "git-gpuspace: $2" >&2; echo "$2" > "$state/service-$1"; }
if [ -n "${GPUSPACE_JUPYTER_PORT:-}" ]; then
  if command -v jupyter >/dev/null 2>&1; then
    JUPYTER_TOKEN=$(cat "$state/jupyter-token") jupyter lab --ip=0.0.0.0 --port="$GPUSPACE_JUPYTER_PORT" \
      --no-browser --allow-root --ServerApp.root_dir="$PWD" >>/data/logs/jupyter.log 2>&1 &
  else warn jupyter "jupyter is not in this image"; fi
fi
if [ -n "${GPUSPACE_SSH_PORT:-}" ]; then
  sshd=$(command -v sshd || echo /usr/sbin/sshd)
  if [ -x "$sshd" ]; then
    [ -f "$state/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/ssh_host_ed25519_key"
    "$sshd" -D -e -p "$GPUSPACE_SSH_PORT" -h "$state/ssh_host_ed25519_key" -o PidFile="$state/sshd.pid" \
      -o AuthorizedKeysFile="$state/authorized_keys" -o PasswordAuthentication=no \
      -o KbdInteractiveAuthentication=no -o PermitEmptyPasswords=no -o UsePAM=no \
      -o StrictModes=no >>/data/logs/sshd.log 2>&1 &
  else warn ssh "sshd is not in this image"; fi
fi
if [ -n "${GPUSPACE_TENSORBOARD_PORT:-}" ]; then
  if command -v tensorboard >/dev/null 2>&1; then
    tensorboard --logdir /data/logs --bind_all --port "$GPUSPACE_TENSORBOARD_PORT" >>/data/logs/tensorboard.log 2>&1 &
  else warn tensorboard "tensorboard is not in this image"; fi
fi
# idle until stopped; as PID 1 (devcontainer.json `init: false`) a signal has no default action,
# so SIGTERM is handled here, and `stop` does not wait out its grace period
trap 'exit 0' TERM INT
sleep infinity &
wait $!
"""


def command() -> list[str]:
    return ["sh", "-c", ENTRYPOINT]


def environment(binding_ports: list[PortMap], context: dict[str, str]) -> dict[str, str]:
    env = {f"GPUSPACE_{port.name.upper()}_PORT": str(port.container_port) for port in binding_ports
           if port.name in SERVICE_PORTS}
    env.update({variable: f"{CACHE_MOUNT}/{name}" for name, variable in CACHES.items()})
    env.update(context)
    return env


def context(worktree_path: Path, branch: str | None, commit: str | None) -> dict[str, str]:
    """Experiment context for trackers (MLflow & co): refreshed by every exec and start."""
    return {
        "GPUSPACE_WORKTREE": str(worktree_path),
        "GPUSPACE_BRANCH": branch or "",
        "GPUSPACE_COMMIT": commit or "",
    }


def write_context(data_dir: Path, values: dict[str, str]) -> None:
    """Also in /data/.gpuspace/context.env, for processes that were started before a checkout."""
    text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(values.items()))
    _write_private(data_dir, "context.env", text)


def urls(binding: Binding) -> dict[str, str]:
    """How to reach each published port, e.g. Jupyter's full URL with its token."""
    found = {}
    for port in binding.ports:
        host = port.address if port.address not in ("0.0.0.0", "::") else "127.0.0.1"
        if port.name == "jupyter" and binding.data_dir:
            token = (read_private(Path(binding.data_dir), "jupyter-token") or "").strip()
            found[port.name] = f"http://{host}:{port.host_port}/lab?token={token}"
        elif port.name == "ssh":
            found[port.name] = f"ssh -p {port.host_port} {os.environ.get('USER') or 'root'}@{host}"
        else:
            found[port.name] = f"http://{host}:{port.host_port}/"
    return found


# what puts a missing service into an image (the worktree's container is made again from it)
SERVICE_FIX = {"jupyter": "pip install jupyterlab in the image, or use an image that has it (--image)",
               "ssh": "install openssh-server in the image, or use an image that has it (--image)",
               "tensorboard": "pip install tensorboard in the image, or use an image that has it (--image)"}


def service_state(binding: Binding, port: PortMap) -> str | None:
    """None when the service behind a published port answers; else why not, in a few words.

    Connecting is not enough: the engine's port proxy accepts on the host whatever listens in
    the container. ssh must send its banner; anything else must answer an HTTP request or keep
    the connection open (a service of another protocol)."""
    import socket

    missing = read_private(Path(binding.data_dir), f"service-{port.name}") if binding.data_dir else None
    if missing and missing.strip():  # the container wrote it: one printable line, shown, nothing more
        return "".join(c for c in missing.strip().splitlines()[0] if c.isprintable())[:200]
    host = port.address if port.address not in ("0.0.0.0", "::") else "127.0.0.1"
    try:
        with socket.create_connection((host, port.host_port), timeout=1.0) as connection:
            connection.settimeout(1.0)
            if port.name != "ssh":
                connection.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            try:
                first = connection.recv(4)
            except socket.timeout:
                return None if port.name != "ssh" else "sshd does not say hello"
    except OSError as error:
        return f"nothing answers on {host}:{port.host_port} ({error.strerror or error})"
    if not first:
        return f"nothing answers on port {port.container_port} in the container"
    return None if port.name != "ssh" or first.startswith(b"SSH-") else "what answers is not sshd"


def wait_for_services(binding: Binding, seconds: float | None = None) -> dict[str, str]:
    """The services we start for a binding (Jupyter, sshd, TensorBoard) that do not answer
    within `seconds` (GPUSPACE_SERVICE_WAIT, default 30): name -> why. One missing from the
    image is not waited for."""
    import time

    seconds = float(os.environ.get("GPUSPACE_SERVICE_WAIT", 30)) if seconds is None else seconds
    ports = [port for port in binding.ports if port.name in SERVICE_PORTS]
    deadline = time.monotonic() + seconds
    while True:
        down = {port.name: why for port in ports if (why := service_state(binding, port))}
        missing = {name for name in down if binding.data_dir and read_private(Path(binding.data_dir), f"service-{name}")}
        if not down or down.keys() == missing or time.monotonic() >= deadline:
            return down
        time.sleep(0.25)


def report_services(binding: Binding, down: dict[str, str]) -> None:
    """One warning per service that does not answer, with the fix where there is one."""
    import sys

    for name, why in down.items():
        fix = SERVICE_FIX[name] + "; then " if "not in this image" in why else ""
        print(f"git-gpuspace: warning: {name} does not answer: {why} (its log: {binding.data_dir}/logs/"
              f"{'sshd' if name == 'ssh' else name}.log)\nhint: {fix}`git gpuspace restart {binding.path}`",
              file=sys.stderr)


def host_port_free(address: str, port: int) -> bool:
    """Can `port` be bound on `address` right now (nothing on the host listens there)?"""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
