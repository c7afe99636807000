"""The services a container starts for its user (Jupyter, SSH, TensorBoard) behind secrets only
the user can read: the container's first process, the ports' URLs, whether each answers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import platformdirs

from .config import APP_NAME
from .data_dirs import read_private, write_private
from .errors import UsageError
from .model import Binding, PortMap


SERVICE_PORTS = {"jupyter": 8888, "ssh": 22, "tensorboard": 6006}


def jupyter_token(data_dir: Path) -> str:
    """A random token, kept in a 0600 file in the data dir (never in labels or the engine's env)."""
    existing = read_private(data_dir, "jupyter-token")
    if existing and existing.strip():
        return existing.strip()
    token = secrets.token_hex(24)
    write_private(data_dir, "jupyter-token", token + "\n")
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
    write_private(data_dir, "authorized_keys", "\n".join(keys) + "\n")


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
