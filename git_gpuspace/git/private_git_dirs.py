"""Where each binding's private git dir lives on the host (the user's state dir, never in the
repository), and the files the host keeps beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..config import APP_NAME

GITDIRS = "gitdirs"


@dataclass(frozen=True)
class PrivateGit:
    """One binding's private git dir and the host's own notes about it (never mounted)."""

    home: Path  # <state dir>/gitdirs/<container name>, 0700

    @property
    def repo(self) -> Path:
        """The private git dir: mounted writable in the container, at this same path."""
        return self.home / "repo"

    @property
    def dot_git(self) -> Path:
        """`gitdir: <repo>`: mounted read-only over a linked worktree's `.git` in the container."""
        return self.home / "dotgit"

    @property
    def journal(self) -> Path:
        """`<old> <new>` while an import moves the branch and then the index (crash-safe)."""
        return self.home / "import"

    @property
    def host_head(self) -> Path:
        """What the host's worktree had checked out at the last look (`ref: ...` or a commit)."""
        return self.home / "host-head"

    @property
    def synced(self) -> Path:
        """Touched at each look; the hooks compare the private reflog's time with it."""
        return self.home / "synced"

    def exists(self) -> bool:
        return self.repo.is_dir()


def root() -> Path:
    return platformdirs.user_state_path(APP_NAME) / GITDIRS


def for_container(name: str) -> PrivateGit:
    return PrivateGit(root() / name)
