"""Installing our git hooks beside the user's, and what the hooks run.

A hook of ours is the shell template in hooks/gpuspace-hook with the path of our console
script baked in (never `python -m`, which would import from the worktree: a repo's tracked
files must not be able to run code through our hook). A hook that was there before is kept
as `<hook>.gpuspace-chained`, run first, and put back by uninstall, byte for byte.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .. import installation, untrusted_files
from ..atomic import replace_file
from ..errors import GpuspaceError, NotARegularFile
from .worktrees import RepoInfo, config_value

HOOK_NAMES = ("post-checkout", "post-commit", "post-merge")
MARKER = "git-gpuspace-hook"
CHAINED_SUFFIX = ".gpuspace-chained"


def hooks_dir(info: RepoInfo) -> Path:
    """Where git looks: core.hooksPath (relative to the worktree top) or <common dir>/hooks."""
    configured = config_value(info, "core", "hooksPath")
    if configured:
        path = Path(os.path.expanduser(configured))
        return path if path.is_absolute() else info.anchor / path
    return info.common_dir / "hooks"


def console_script() -> Path:
    """Our entry point, as installed beside the interpreter that runs us now (the hooks name it
    by its absolute path)."""
    found = installation.console_script()
    if found is None:
        raise GpuspaceError("cannot find the git-gpuspace script on PATH", hint="install the package with pip first")
    return found


def hook_text() -> str:
    template = resources.files("git_gpuspace.hook_templates").joinpath("gpuspace-hook").read_text()
    return template.replace("@GPUSPACE_BIN@", str(console_script()).replace("'", "'\\''"))


def _read(path: Path, limit: int | None = None) -> bytes | None:
    """A hook's bytes; None when it is missing or no regular file (a FIFO would block the read)."""
    try:
        return untrusted_files.read_bytes(path, limit, follow_symlinks=True)
    except (OSError, NotARegularFile):
        return None


def is_ours(path: Path) -> bool:
    return MARKER in (_read(path, 4096) or b"").decode(errors="replace")[:200]


def chained_hooks(directory: Path, name: str) -> list[Path]:
    """The hooks ours runs first, in order: `<hook>.gpuspace-chained`, then `.2`, `.3`... (a
    later one stood in ours' place when it was installed again: `git lfs update --force`)."""
    found, number = [], 1
    while True:
        path = directory / (name + CHAINED_SUFFIX + (f".{number}" if number > 1 else ""))
        if not (path.exists() or path.is_symlink()):
            return found
        found.append(path)
        number += 1


def install(info: RepoInfo, pre_push: bool = False) -> list[str]:
    """Install every hook; what changed, one line each. Running it twice changes nothing.

    A hook of someone else's that stands where ours goes is kept and run before ours, after the
    ones kept before it (nothing is lost, the order stays); one that is the same, byte for
    byte, as one already kept is not kept twice."""
    directory = hooks_dir(info)
    directory.mkdir(parents=True, exist_ok=True)
    text = hook_text()
    changes = []
    for name in HOOK_NAMES + (("pre-push",) if pre_push or is_ours(directory / "pre-push") else ()):
        hook = directory / name
        if is_ours(hook):
            if _read(hook) == text.encode():
                continue
            changes.append(f"updated {hook}")
        elif hook.exists() or hook.is_symlink():
            kept = chained_hooks(directory, name)
            if any(_same(hook, other) for other in kept):
                hook.unlink()
                changes.append(f"installed {hook} (the hook there is already kept and run: {kept[0].name})")
            else:
                chained = directory / (name + CHAINED_SUFFIX + (f".{len(kept) + 1}" if kept else ""))
                os.rename(hook, chained)  # kept as it is, and run by ours
                changes.append(f"installed {hook} (the hook there is kept and still runs: {chained.name})")
        else:
            changes.append(f"installed {hook}")
        _write_executable(hook, text)
    return changes


def uninstall(info: RepoInfo) -> list[str]:
    """Remove ours and put back the hook that stood there before it; hooks kept from earlier
    installs stay beside it, named, to be merged by hand."""
    directory = hooks_dir(info)
    changes = []
    for name in HOOK_NAMES + ("pre-push",):
        hook = directory / name
        if not is_ours(hook):
            continue
        hook.unlink()
        kept = chained_hooks(directory, name)
        if kept:
            os.rename(kept[-1], hook)
            changes.append(f"removed our {name} hook; yours is back in place")
            for older in kept[:-1]:
                changes.append(f"kept {older}: it ran before {name} until now; merge it into {hook} by hand")
        else:
            changes.append(f"removed {hook}")
    return changes


def installed(info: RepoInfo) -> bool:
    directory = hooks_dir(info)
    return all(is_ours(directory / name) for name in HOOK_NAMES)


def replaced(info: RepoInfo) -> list[Path]:
    """Hooks where ours stood (a chained one is kept) but another now stands: ours no longer runs."""
    directory = hooks_dir(info)
    return [directory / name for name in HOOK_NAMES
            if chained_hooks(directory, name) and (directory / name).exists() and not is_ours(directory / name)]


def _same(one: Path, other: Path) -> bool:
    first = _read(one)
    return first is not None and first == _read(other)


def _write_executable(path: Path, text: str) -> None:
    replace_file(path, text.encode(), mode=0o755)


def converge_in_background(info: RepoInfo) -> None:
    """What the hooks do when a binding waits: `_hook converge` in a process of its own (retries
    pending bindings; an image pull may take minutes), logging where the hooks log."""
    import subprocess

    old = os.umask(0o077)
    try:
        with open(info.common_dir / "gpuspace-hook.log", "ab") as log:
            subprocess.Popen([str(console_script()), "_hook", "converge"], cwd=info.anchor, stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except (OSError, GpuspaceError):
        pass  # a read-only git dir, no script: status still answers
    finally:
        os.umask(old)
