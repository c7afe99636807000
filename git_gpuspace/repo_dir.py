"""The repository's common git dir as git itself finds it (GIT_DIR, safe.directory and all),
for a command that reads only the run store: `runs` lists without loading dulwich."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import NotARepository


def common_dir() -> Path:
    found = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if found.returncode != 0 or not found.stdout.strip():
        raise NotARepository(f"not a git repository: {Path.cwd()}",
                             hint="run this inside a git repository (or a worktree of one)")
    return Path(found.stdout.strip()).resolve()
