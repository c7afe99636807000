"""Defaults in layers: built-in < user config < repo defaults (.git/gpuspace.toml) < flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from .errors import StateError
from .atomic import atomic_write

from .installation import tomllib
from .setting_keys import KEYS

APP_NAME = "git-gpuspace"

BUILT_IN: dict[str, Any] = {
    "image": "pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime",
    "gpus": "1",
    # Docker's 64 MB /dev/shm kills PyTorch DataLoader workers; shared memory only costs what is used.
    "shm_size": "8g",
    "publish_address": "127.0.0.1",  # published ports are for this machine unless the user says otherwise
    "jupyter": False,
    "ssh": False,
    "tensorboard": False,
    "backend": "local",  # where runs, sweeps and verify run: local, or slurm
    "preemptible": False,  # runs of the repo may have their GPU taken (they checkpoint on SIGTERM and resume)
}


def default_data_root() -> Path:
    return platformdirs.user_data_path(APP_NAME) / "workspaces"


def built_in() -> dict[str, Any]:
    """The built-in layer, with the paths of this user."""
    return {**BUILT_IN, "data_root": str(default_data_root())}


def user_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def load_user() -> dict[str, Any]:
    path = user_config_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}", hint="fix or remove the file") from None
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise StateError(f"{path}: [defaults] must be a table", hint="fix or remove the file")
    return defaults


def effective(repo_defaults: dict[str, Any], flags: dict[str, Any], devcontainer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the layers; a flag left unset (None) does not override."""
    merged: dict[str, Any] = built_in()
    for layer in (load_user(), repo_defaults, devcontainer or {}, flags):
        merged.update({key: value for key, value in layer.items() if key in KEYS and value is not None})
    return merged


BOOLEAN_OR_PORT = ("jupyter", "ssh", "tensorboard")
BOOLEAN = ("preemptible",)
TRUE, FALSE = ("true", "yes", "on"), ("false", "no", "off")


def coerce(key: str, text: str) -> Any:
    """A value typed on the command line, as it is stored: services are true/false or a port,
    `preemptible` true or false."""
    if key in BOOLEAN:
        return boolean(key, text)
    if key in BOOLEAN_OR_PORT:
        lowered = text.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        if lowered.isdigit():
            return int(lowered)
        from .errors import UsageError

        raise UsageError(f"{key} must be true, false or a host port, not '{text}'")
    return text


def boolean(key: str, value: Any) -> bool:
    """A true/false setting, as typed or as a TOML file holds it (a hand-edited file may say "yes")."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in TRUE or lowered in FALSE:
        return lowered in TRUE
    from .errors import UsageError

    raise UsageError(f"{key} must be true or false, not '{value}'",
                     hint=f"git gpuspace config set {key} true (or false)")


DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", re.IGNORECASE)


def duration(text: str, flag: str, zero: bool = True) -> float:
    """`30`, `30s`, `5m`, `1h`, `1.5s` in seconds; anything else (negative, garbage; zero unless
    `zero`) is refused in one line that names the flag."""
    from .errors import UsageError

    found = DURATION.fullmatch(text)
    hint = "a duration such as 30, 30s, 1.5s, 5m or 1h"
    if not found:
        why = "a duration is not negative" if text.strip().startswith("-") else "not a duration"
        raise UsageError(f"invalid {flag} '{text}': {why}", hint=hint)
    seconds = float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2).lower()]
    if not zero and seconds == 0:
        raise UsageError(f"invalid {flag} '{text}': it must be more than 0", hint=hint)
    return seconds


def render(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def save_user(defaults: dict[str, Any]) -> None:
    """Rewrite the user config's [defaults], keeping any other table, atomically."""
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = {}
    document["defaults"] = defaults
    atomic_write(path, tomli_w.dumps(document).encode(), hint="free some space; the old file is unchanged")
