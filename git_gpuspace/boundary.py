"""What of the repository's git a container sees, and how: nothing of the host's git dir is
writable from any container.

- The common dir is mounted read-only, as a directory, at its own absolute path: the private
  git dir's alternates name its `objects/` (valid on both sides), and the container's git
  fetches the host's branches from it. A file the host replaces by rename (git's `config.lock`
  -> `config`) shows up read-only too, which a mount of the single file would not.
- A bound container's git works on a private git dir of its own (private_git.py), mounted
  writable; `<workspace>/.git` points at it (a read-only file over a linked worktree's `.git`;
  the main worktree's `.git` is that dir itself in the container).
- A run's container (a pinned commit) gets no writable git at all: the worktree's `.git` file
  read-only, naming the read-only admin dir.
- The state lock is masked by /dev/null (a read-only file can still be flock'ed).
- A `core.hooksPath` inside the worktree is read-only: the host's git runs those hooks.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .installation import WORKSPACE

LOCK_NAME = "gpuspace.lock"

Bind = tuple[str, str, bool]  # (host path, container path, read-only)


def git_binds(worktree: Path, common_dir: Path, main: bool, private, hooks_path: str | None = None,
              workspace: str = WORKSPACE) -> list[Bind]:
    """The mounts that give a container this worktree's git, as above. `private`: the binding's
    PrivateGit (None for a run); `workspace`: where the worktree is mounted."""
    dot_git = f"{workspace}/.git"
    if Path(dot_git) == common_dir:
        raise UsageError(f"the workspace folder {workspace} is the repository's own path: the container's git "
                         f"and the repository's would be one", hint="choose another workspaceFolder")
    binds: list[Bind] = [(str(common_dir), str(common_dir), True)]
    if (common_dir / LOCK_NAME).exists():
        binds.append(("/dev/null", str(common_dir / LOCK_NAME), True))
    if private is None:
        binds.append((str(common_dir) if main else str(worktree / ".git"), dot_git, True))
    elif main:
        binds.append((str(private.repo), dot_git, False))
    else:
        binds += [(str(private.repo), str(private.repo), False), (str(private.dot_git), dot_git, True)]
    hooks = _hooks_inside(worktree, hooks_path)
    if hooks is not None:
        hooks.mkdir(parents=True, exist_ok=True)
        binds.append((str(hooks), f"{workspace}/{hooks.relative_to(worktree)}", True))
    return binds


def admin_dir(common_dir: Path, admin_id: str | None) -> Path:
    """`worktrees/<id>`, refusing an id that would lead out of it (it is read from the worktree)."""
    path = common_dir / "worktrees" / (admin_id or "")
    if admin_id is None or admin_id in ("", ".", "..") or "/" in admin_id or not path.is_dir() or path.is_symlink():
        from .errors import WorktreeError

        raise WorktreeError(f"the worktree's admin dir '{path}' is not a directory of this repository",
                            hint="`git worktree repair` fixes a worktree whose .git file points elsewhere")
    return path


def protected_paths(worktree: Path, common_dir: Path, anchor: Path, hooks_path: str | None) -> tuple[Path, ...]:
    """What an extra mount must not expose writable (it would bypass the layout above): the git
    dir, each `.git` (a worktree's root holds one) and a hooks dir inside the worktree."""
    hooks = _hooks_inside(worktree, hooks_path)
    return (common_dir.resolve(), *dot_git(worktree, anchor), *((hooks,) if hooks else ()))


def dot_git(*roots: Path) -> tuple[Path, ...]:
    """Each root's `.git`: the git dir in a main worktree, the file pointing at it in a linked one."""
    return tuple(root / ".git" for root in roots)


def exposes(path: Path, protected: tuple[Path, ...]) -> bool:
    """`path` is one of them, lies inside one, or holds one."""
    return ".git" in path.parts or any(path == p or p in path.parents or path in p.parents for p in protected)


def _hooks_inside(worktree: Path, hooks_path: str | None) -> Path | None:
    """`core.hooksPath` when it lies in the worktree (relative paths are, as git reads them)."""
    if not hooks_path:
        return None
    path = Path(os.path.expanduser(hooks_path))
    path = Path(os.path.normpath(worktree / path))
    return path if worktree in path.parents else None
