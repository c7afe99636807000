"""Who holds each GPU: our containers' labels on the engine, and processes outside gpuspace;
and the release of a GPU whose worktree is provably gone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import allocate, gpus, untrusted_files
from . import state as state_module
from .engine.containers import LABEL_REPO, LABEL_WORKTREE, ContainerInfo, Engine
from .errors import GpuspaceError
from .folders import provably_absent
from .model import Holder, current_user


def release_vanished(engine: Engine, containers: list[ContainerInfo]) -> list[ContainerInfo]:
    """Containers (of any repo) that hold GPUs for a worktree that is gone, for git too, are
    removed and said so: nothing can use them and no command of that repo may come to clean up.
    Only root removes another user's: to anyone else it stays held by that user (ask them).
    Their data dirs are kept. The others are returned."""
    kept = []
    for container in containers:
        if container.gpus and _releasable_by_us(container) and _worktree_vanished(container):
            try:
                engine.remove(container.name)
            except GpuspaceError:
                kept.append(container)
                continue
            print(f"git-gpuspace: released {', '.join(container.gpus)} held by {container.name}: its worktree "
                  f"{container.labels[LABEL_WORKTREE]} is gone, for git too (its data dir is kept)", file=sys.stderr)
            continue
        kept.append(container)
    return kept


def _releasable_by_us(container: ContainerInfo) -> bool:
    """Ours (by its user label, else its repository's owner), or we are root. A name nobody
    can tell ("?": an unreadable repository of an unlabelled container) is not ours."""
    return os.getuid() == 0 or container.holder.user == current_user()


def _worktree_vanished(container: ContainerInfo) -> bool:
    """Its directory is provably gone and its repository no longer has it (nor a binding that
    moved with it). Anything that cannot be read counts as still there; a repository's main
    worktree is never gone (its git dir went with it: nothing tells a deleted repository from a
    drive not mounted now)."""
    worktree, repo = container.labels.get(LABEL_WORKTREE), container.labels.get(LABEL_REPO)
    if not worktree or not repo or not os.path.isabs(worktree) or not os.path.isabs(repo):
        return False
    common_dir = Path(repo)
    if common_dir.name == ".git" and common_dir.parent == Path(worktree):
        return False
    if not provably_absent(worktree):
        return False
    if provably_absent(repo):
        return True
    try:
        try:
            admin_dirs = [Path(entry.path) for entry in os.scandir(common_dir / "worktrees")]
        except FileNotFoundError:
            admin_dirs = []
        for admin_dir in admin_dirs:
            try:  # a FIFO there is refused (GpuspaceError): the worktree counts as still there
                gitdir = untrusted_files.read_text(admin_dir / "gitdir", limit=1 << 16).strip()
            except FileNotFoundError:
                gitdir = ""
            if gitdir and os.path.dirname(gitdir) == worktree:
                return False  # git still has it (a drive not mounted now, say)
        binding = state_module.load(common_dir).find(worktree)
    except (OSError, GpuspaceError):
        return False
    moved = binding is not None and binding.worktree_id and (common_dir / "worktrees" / binding.worktree_id).is_dir()
    return not moved


def leases(containers: list[ContainerInfo]) -> allocate.Leases:
    """Who holds each GPU: our containers (of any repo, by their labels), and processes outside
    gpuspace that compute on a GPU (a GPU in use is not handed out, whoever uses it)."""
    held: allocate.Leases = {}
    for container in containers:
        for uuid in container.gpus:
            held.setdefault(uuid, []).append(container.holder)
    for uuid, pids in gpus.busy_outside({c.id for c in containers if c.id}).items():
        held.setdefault(uuid, []).append(Holder(repo="", worktree=f"a process outside gpuspace (pid {', '.join(map(str, pids))})",
                                                branch=None, container="", share=False))
    return held
