"""Defaults in layers: built-in < user config < repo defaults (.git/gpuspace.toml) < flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import platformdirs

from .errors import StateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "git-gpuspace"

BUILT_IN: dict[str, Any] = {
    "image": "pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime",
    "gpus": "1",
    # Docker's 64 MB /dev/shm kills PyTorch DataLoader workers; shared memory only costs what is used.
    "shm_size": "8g",
}
KEYS = ("image", "gpus", "memory", "cpus", "shm_size")


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


def effective(repo_defaults: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Merge the layers; a flag left unset (None) does not override."""
    merged: dict[str, Any] = dict(BUILT_IN)
    for layer in (load_user(), repo_defaults, flags):
        merged.update({key: value for key, value in layer.items() if key in KEYS and value is not None})
    return {key: str(value) if not isinstance(value, str) else value for key, value in merged.items()}
