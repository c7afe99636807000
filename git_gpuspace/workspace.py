"""What makes a container a place to work: data that outlives it, shared caches, services
(Jupyter, SSH, TensorBoard) behind secrets only the user can read, experiment context."""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

import platformdirs

from .config import APP_NAME
from .errors import UsageError
from .model import Binding, PortMap

DATA_MOUNT = "/data"
CACHE_MOUNT = "/cache"
PRIVATE = ".gpuspace"  # in the data dir, mode 0700: tokens, keys, service state
# Shared by every worktree of the user, so a 10 GB model is downloaded once.
CACHES = {"huggingface": "HF_HOME", "pip": "PIP_CACHE_DIR", "torch": "TORCH_HOME"}
SERVICE_PORTS = {"jupyter": 8888, "ssh": 22, "tensorboard": 6006}


def default_data_root() -> Path:
    return platformdirs.user_data_path(APP_NAME) / "workspaces"


def cache_root() -> Path:
    return platformdirs.user_cache_path(APP_NAME) / "shared"


def create_data_dir(root: Path, name: str) -> tuple[Path, bool]:
    """The binding's data dir (checkpoints/, logs/, a private .gpuspace/); True if made now."""
    path = root / name
    made = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # the user's alone, like their home
    for sub in ("checkpoints", "logs"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    private = path / PRIVATE
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    return path, made


def ensure_caches() -> Path:
    root = cache_root()
    for name in CACHES:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def jupyter_token(data_dir: Path) -> str:
    """A random token, kept in a 0600 file in the data dir (never in labels or the engine's env)."""
    path = data_dir / PRIVATE / "jupyter-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_hex(24)
    _write_private(path, token + "\n")
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
    _write_private(data_dir / PRIVATE / "authorized_keys", "\n".join(keys) + "\n")


def accounts(data_dir: Path, uid: int, gid: int) -> tuple[Path, Path]:
    """passwd/group naming the user's uid: sshd refuses users it cannot look up."""
    passwd, group = data_dir / PRIVATE / "passwd", data_dir / PRIVATE / "group"
    user = os.environ.get("USER", "gpuspace") or "gpuspace"
    passwd.write_text(f"root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{gid}:{user}:/home/gpuspace:/bin/sh\n")
    group.write_text(f"root:x:0:\n{user}:x:{gid}:\n")
    return passwd, group


# The container's first process (under docker-init): start the services asked for, then idle.
ENTRYPOINT = r"""
state=/data/.gpuspace
warn() { echo "git-gpuspace: $*" >&2; }
if [ -n "${GPUSPACE_JUPYTER_PORT:-}" ]; then
  if command -v jupyter >/dev/null 2>&1; then
    JUPYTER_TOKEN=$(cat "$state/jupyter-token") jupyter lab --ip=0.0.0.0 --port="$GPUSPACE_JUPYTER_PORT" \
      --no-browser --allow-root --ServerApp.root_dir=/workspace >>/data/logs/jupyter.log 2>&1 &
  else warn "jupyter is not in this image: pip install jupyterlab, then git gpuspace restart"; fi
fi
if [ -n "${GPUSPACE_SSH_PORT:-}" ]; then
  sshd=$(command -v sshd || echo /usr/sbin/sshd)
  if [ -x "$sshd" ]; then
    [ -f "$state/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/ssh_host_ed25519_key"
    "$sshd" -D -e -p "$GPUSPACE_SSH_PORT" -h "$state/ssh_host_ed25519_key" -o PidFile="$state/sshd.pid" \
      -o AuthorizedKeysFile="$state/authorized_keys" -o PasswordAuthentication=no \
      -o KbdInteractiveAuthentication=no -o PermitEmptyPasswords=no -o UsePAM=no \
      -o StrictModes=no >>/data/logs/sshd.log 2>&1 &
  else warn "sshd is not in this image: install openssh-server, then git gpuspace restart"; fi
fi
if [ -n "${GPUSPACE_TENSORBOARD_PORT:-}" ]; then
  if command -v tensorboard >/dev/null 2>&1; then
    tensorboard --logdir /data/logs --bind_all --port "$GPUSPACE_TENSORBOARD_PORT" >>/data/logs/tensorboard.log 2>&1 &
  else warn "tensorboard is not in this image: pip install tensorboard, then git gpuspace restart"; fi
fi
exec sleep infinity
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
    (data_dir / PRIVATE / "context.env").write_text(text)


def urls(binding: Binding) -> dict[str, str]:
    """How to reach each published port, e.g. Jupyter's full URL with its token."""
    found = {}
    for port in binding.ports:
        host = port.address if port.address not in ("0.0.0.0", "::") else "127.0.0.1"
        if port.name == "jupyter" and binding.data_dir:
            token_file = Path(binding.data_dir) / PRIVATE / "jupyter-token"
            token = token_file.read_text().strip() if token_file.exists() else ""
            found[port.name] = f"http://{host}:{port.host_port}/lab?token={token}"
        elif port.name == "ssh":
            found[port.name] = f"ssh -p {port.host_port} {os.environ.get('USER') or 'root'}@{host}"
        else:
            found[port.name] = f"http://{host}:{port.host_port}/"
    return found


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
