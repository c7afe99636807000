"""What every part of this installation agrees on: where a worktree is in its container, the
TOML reader this Python has, and how to run our own console script."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["WORKSPACE", "console_script", "tomllib"]

WORKSPACE = "/workspace"  # the worktree, in its container (unless devcontainer.json moves it)
SCRIPT_NAME = "git-gpuspace"


def console_script() -> Path | None:
    """Our console script as installed beside the interpreter that runs us now (by path, never
    `python -m` from a worktree, whose files could shadow the package), else the one on PATH;
    None when there is none."""
    beside = Path(sys.executable).parent / SCRIPT_NAME
    if beside.exists():
        return beside
    found = shutil.which(SCRIPT_NAME)
    return Path(found).resolve() if found else None
