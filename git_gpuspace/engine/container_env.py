"""The environment a container's commands get: the user's shared caches (a model downloaded
once for every worktree), the services' ports and the experiment's context."""

from __future__ import annotations

import shlex
from pathlib import Path

import platformdirs

from ..config import APP_NAME
from ..data_dirs import write_private
from ..model import PortMap
from ..services import SERVICE_PORTS


CACHE_MOUNT = "/cache"


# Shared by every worktree of the user, so a 10 GB model is downloaded once.
CACHES = {"huggingface": "HF_HOME", "pip": "PIP_CACHE_DIR", "torch": "TORCH_HOME"}


def cache_root() -> Path:
    return platformdirs.user_cache_path(APP_NAME) / "shared"


def ensure_caches() -> Path:
    root = cache_root()
    for name in CACHES:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


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
    write_private(data_dir, "context.env", text)
