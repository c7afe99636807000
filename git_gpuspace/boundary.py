"""What of the repository's git dir a container sees, and how: git works inside, but nothing the
host's git executes or trusts can be changed from there.

The host's git runs hooks from `hooks/` (or `core.hooksPath`) and commands named in `config`
(`core.fsmonitor`, filters, `core.sshCommand`); git-gpuspace trusts its state file. So:

- the common dir is mounted read-only *as a directory*: a file the host replaces by rename
  (git's `config.lock` -> `config`, the state writer's temp file -> `gpuspace.toml`) shows up
  read-only too, which a mount of the single file would not (it would keep the old inode);
- `objects/`, `refs/` and `logs/` are mounted writable over it, and so is this worktree's own
  admin dir (`worktrees/<id>`: HEAD, index, its lock files), so status, add, commit, branch and
  log work;
- in that admin dir, `commondir` and `gitdir` (which say where the repo and the worktree are),
  `config.worktree` and the hooks and config of submodule git dirs are read-only again, and the
  worktree's `.git` file too, so a container cannot point the host's git elsewhere;
- the state lock is masked by /dev/null, so a container cannot hold the host's lock;
- a `core.hooksPath` inside the worktree is read-only.

In the main worktree's container git can read but not commit: its HEAD and index live in the
common dir itself (see docs/SECURITY.md).
"""

from __future__ import annotations

import os
from pathlib import Path

WORKSPACE = "/workspace"
WRITABLE = ("objects", "refs", "logs")  # what git writes outside a worktree's admin dir
PINNED = ("commondir", "gitdir", "config.worktree")  # in the admin dir: where git looks, and config
LOCK_NAME = "gpuspace.lock"

Bind = tuple[str, str, bool]  # (host path, container path, read-only)


def git_binds(worktree: Path, common_dir: Path, main: bool, admin_id: str | None,
              hooks_path: str | None = None, workspace: str = WORKSPACE) -> list[Bind]:
    """The mounts that give a container this worktree's git, protected as above.

    `admin_id`: a linked worktree's admin dir name under `worktrees/`; `workspace`: where the
    worktree is mounted.
    """
    target = Path(workspace, ".git") if main else common_dir
    binds: list[Bind] = [(str(common_dir), str(target), True)]
    for name in WRITABLE:
        path = common_dir / name
        path.mkdir(exist_ok=True)  # git makes logs/ with the first reflog entry; it must exist to be mounted
        binds.append((str(path), str(target / name), False))
    if (common_dir / LOCK_NAME).exists():
        binds.append(("/dev/null", str(target / LOCK_NAME), True))
    if not main:
        admin = admin_dir(common_dir, admin_id)
        binds.append((str(admin), str(admin), False))
        (admin / "config.worktree").touch()  # exists, so that it is mounted read-only (git ignores it unless enabled)
        binds += [(str(admin / name), str(admin / name), True) for name in PINNED if (admin / name).is_file()]
        binds += _module_binds(admin / "modules")
        binds.append((str(worktree / ".git"), f"{workspace}/.git", True))
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


def _module_binds(modules: Path) -> list[Bind]:
    """Submodule git dirs of a linked worktree (`worktrees/<id>/modules/...`): hooks and config."""
    binds: list[Bind] = []
    if not modules.is_dir() or modules.is_symlink():
        return binds
    for root, dirs, _files in os.walk(modules):
        here = Path(root)
        if (here / "HEAD").is_file():
            binds += [(str(here / name), str(here / name), True) for name in ("hooks", "config", "info")
                      if (here / name).exists() and not (here / name).is_symlink()]
            dirs[:] = [d for d in dirs if d == "modules"]  # nested submodules only
    return binds


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
