"""`git gpuspace data list|rm`: the data dirs (checkpoints, logs) that outlive their bindings.

A data dir is in use while a binding or a run of the repository it was made for names it;
otherwise it is orphaned (its binding was removed, or its repository is gone). `rm` deletes
orphaned ones only: one in use goes with `remove --purge` or `runs clean --purge`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import data_dirs, output, state
from ..errors import StateError, UsageError
from ..runs import store as run_store
from ..specs import format_size


@dataclass(frozen=True)
class DataDir:
    path: Path
    size: int
    repo: Path | None  # the common dir it was made for; None when unknown (made by an older version)
    worktree: Path | None
    used_by: str | None  # "binding <worktree>" or "run <id>"; None when orphaned (or unknown)

    @property
    def orphaned(self) -> bool:
        return self.repo is not None and self.used_by is None


def run(args: argparse.Namespace) -> int:
    found = survey()
    if args.action == "list":
        if args.json:
            json.dump([{"path": str(d.path), "size_bytes": d.size, "repo": str(d.repo) if d.repo else None,
                        "worktree": str(d.worktree) if d.worktree else None, "used_by": d.used_by,
                        "orphaned": d.orphaned} for d in found], sys.stdout, indent=2)
            print()
            return 0
        rows = [[str(d.path), format_size(d.size), str(d.worktree or "?"),
                 d.used_by or ("orphaned" if d.orphaned else "unknown")] for d in found]
        print(output.table(["DATA DIR", "SIZE", "MADE FOR", "USED BY"], rows) if rows else "No data dirs.")
        return 0
    if not args.dirs:
        raise UsageError("name the data dirs to delete", hint="`git gpuspace data list` shows them")
    chosen = [_pick(found, name) for name in args.dirs]  # everything checked before anything is deleted
    for data_dir in chosen:
        shutil.rmtree(data_dir.path)
        print(f"Deleted data dir {data_dir.path} ({format_size(data_dir.size)})")
    return 0


def orphaned() -> list[DataDir]:
    return [data_dir for data_dir in survey() if data_dir.orphaned]


def survey() -> list[DataDir]:
    found = []
    users: dict[Path, dict[str, str] | None] = {}
    for path in data_dirs.data_dirs():
        origin = data_dirs.origin_of(path)
        repo, worktree = origin if origin else (None, None)
        if repo is not None and repo not in users:
            users[repo] = _users_in(repo)
        known = users.get(repo, {})
        used_by = known.get(str(path)) if known is not None else "unknown (its repository's state cannot be read)"
        found.append(DataDir(path, _size(path), repo, worktree, used_by))
    return found


def _users_in(common_dir: Path) -> dict[str, str] | None:
    """Data dir -> who uses it, from the repository's bindings and runs (read only); None when
    they cannot be read (then nothing there counts as orphaned)."""
    users: dict[str, str] = {}
    if not common_dir.is_dir():
        return users  # the repository is gone
    try:
        for binding in state.load(common_dir).bindings:
            if binding.data_dir:
                users[binding.data_dir] = f"binding {binding.path}"
        for each in run_store.load(common_dir).runs:
            if each.data_dir:
                users.setdefault(each.data_dir, f"run {each.id}")
    except (StateError, OSError):
        return None
    return users


def _pick(found: list[DataDir], name: str) -> DataDir:
    wanted = Path(os.path.abspath(os.path.expanduser(name)))
    match = [d for d in found if d.path == wanted or d.path.name == name]
    if not match:
        raise UsageError(f"'{name}' is not a data dir of git-gpuspace", hint="`git gpuspace data list` shows them")
    data_dir = match[0]
    if data_dir.used_by:
        raise UsageError(f"{data_dir.path} is in use by {data_dir.used_by}",
                         hint="`git gpuspace remove --purge` (or `runs clean --purge`) deletes it with its user")
    if data_dir.repo is None:
        raise UsageError(f"{data_dir.path} was made by an older version: which binding uses it is unknown",
                         hint="delete it by hand if nothing uses it")
    return data_dir


def _size(path: Path) -> int:
    """Bytes on disk, as du counts them; files we cannot read are left out."""
    total = 0
    for directory, dirs, files in os.walk(path, onerror=lambda error: None):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total
