"""The environment commands run with in a container, as an editor's terminal would have it: the
user's login shell's environment (devcontainer.json `userEnvProbe`, by default a login interactive
shell: what `/etc/profile.d`, `~/.bashrc` put there, as nvm and conda do), then `remoteEnv` over it
(`${containerEnv:VAR}` read from the container).

The probe runs once per container start; its result is kept on the host, keyed by the container's
id and start time. What the probe returns is the container's own say about its own commands'
environment: data, passed back to the same container, never read by the host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import platformdirs

from . import parser as devcontainer
from ..atomic import replace_file
from ..config import APP_NAME
from ..engine.containers import Engine
from ..errors import GpuspaceError
from ..model import Binding

PROBES = {"loginInteractiveShell": "-lic", "interactiveShell": "-ic", "loginShell": "-lc", "none": None}
DEFAULT_PROBE = "loginInteractiveShell"
PROBE_TIMEOUT_S = 20.0
MAX_PROBE_BYTES = 1 << 20
MARKER = "8f3c2a-gpuspace-env"
# the shell's own bookkeeping, not the user's environment
_SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME", "PS1", "PS2", "LINES", "COLUMNS"}
# the user's shell from the image's passwd, else sh; the environment between two markers, so that
# what the shell's startup files print is not taken for it
_PROBE_SCRIPT = r"""u=$(id -un 2>/dev/null); s=$(awk -F: -v u="$u" '$1==u{print $7}' /etc/passwd 2>/dev/null)
case "$s" in */nologin|*/false|"") s=/bin/sh;; esac
[ -x "$s" ] || s=/bin/sh
exec "$s" FLAGS "printf %s MARK; cat /proc/self/environ; printf %s MARK" </dev/null"""


def environment(engine: Engine, binding: Binding, user: str | None) -> dict[str, str]:
    """What a command in the binding's container runs with beyond the container's own env."""
    probed = _probed(engine, binding, user)
    remote = devcontainer.container_substitute(dict(binding.remote_env), engine.container_env(binding.container))
    return {**probed, **{name: value for name, value in remote.items() if value is not None}}


def _probed(engine: Engine, binding: Binding, user: str | None) -> dict[str, str]:
    flags = PROBES.get(binding.user_env_probe or DEFAULT_PROBE)
    if flags is None:
        return {}
    started = engine.run_times(binding.container)[0]
    key = f"{binding.container}\0{started}\0{user}\0{flags}"
    cache = _cache_file(binding.container)
    try:
        kept = json.loads(cache.read_text())
        if kept.get("key") == key and isinstance(kept.get("env"), dict):
            return {str(k): str(v) for k, v in kept["env"].items()}
    except (OSError, ValueError):
        pass
    script = _PROBE_SCRIPT.replace("FLAGS", flags).replace("MARK", MARKER)
    try:
        code, output = engine.exec(binding.container, ["sh", "-c", script], {}, user=user, timeout=PROBE_TIMEOUT_S)
    except GpuspaceError:
        return {}  # a shell whose startup files hang or fail: commands run with the container's env
    env = parse(output[:MAX_PROBE_BYTES])
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        replace_file(cache, json.dumps({"key": key, "env": env}).encode())  # 0600: values may be secrets
    except OSError:
        pass  # probed again next time
    return env


def parse(output: bytes) -> dict[str, str]:
    """`NAME=value` pairs, NUL-separated, between the two markers."""
    text = output.decode("utf-8", "replace")
    parts = text.split(MARKER)
    if len(parts) < 3:
        return {}
    env = {}
    for item in parts[1].split("\0"):
        name, sep, value = item.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in _SHELL_OWN:
            env[name] = value
    return env


def forget(container: str) -> None:
    """The probe kept for a container that is gone."""
    try:
        _cache_file(container).unlink()
    except OSError:
        pass


def _cache_file(container: str) -> Path:
    return platformdirs.user_cache_path(APP_NAME) / "env-probe" / f"{container}.json"
