"""What the hook's shell fast path (hooks/gpuspace-hook) reads instead of parsing the state
file on every checkout and commit. State.save writes it beside that file, from the same
bindings and checks, so the two never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .atomic import atomic_write

PATHS_NAME = "gpuspace.paths"  # the bound worktrees' paths, one per line
GITDIRS_NAME = "gpuspace.gitdirs"  # their containers' private git dirs (their reflogs say when a container committed)
PENDING_NAME = "gpuspace.pending"  # while any binding waits for its container
ON_COMMIT_NAME = "gpuspace.verify-on-commit"  # a check runs on each commit: the post-commit hook queues it


def write(common_dir: Path, bindings: Iterable[Any], checks: dict[str, Any]) -> None:
    """The index for these bindings (model.Binding) and checks, in the common git dir."""
    from .git.private_git_dirs import for_container

    bindings = list(bindings)
    paths = "".join(f"{b.path}\n" for b in bindings if "\n" not in b.path)
    atomic_write(common_dir / PATHS_NAME, paths.encode())
    homes = "".join(f"{for_container(b.container).home}\n" for b in bindings if not b.pending)
    atomic_write(common_dir / GITDIRS_NAME, homes.encode())
    for name, wanted in ((PENDING_NAME, any(b.pending for b in bindings)),
                         (ON_COMMIT_NAME, any(c.get("on_commit") for c in checks.values()))):
        marker = common_dir / name
        if wanted:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
