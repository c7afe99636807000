"""Installing our git hooks beside the user's, and what the hooks run.

A hook of ours is the shell template in hooks/gpuspace-hook with the path of our console
script baked in (never `python -m`, which would import from the worktree: a repo's tracked
files must not be able to run code through our hook). A hook that was there before is kept
as `<hook>.gpuspace-chained`, run first, and put back by uninstall, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

from .errors import GpuspaceError
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
    """Our entry point, as installed beside the interpreter that runs us now."""
    beside = Path(sys.executable).parent / "git-gpuspace"
    if beside.exists():
        return beside
    found = shutil.which("git-gpuspace")
    if found is None:
        raise GpuspaceError("cannot find the git-gpuspace script on PATH", hint="install the package with pip first")
    return Path(found).resolve()


def hook_text() -> str:
    template = resources.files("git_gpuspace.hook_templates").joinpath("gpuspace-hook").read_text()
    return template.replace("@GPUSPACE_BIN@", str(console_script()).replace("'", "'\\''"))


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")[:200]
    except OSError:
        return False


def install(info: RepoInfo) -> list[str]:
    """Install every hook; what changed, one line each. Running it twice changes nothing."""
    directory = hooks_dir(info)
    directory.mkdir(parents=True, exist_ok=True)
    text = hook_text()
    # Check all hooks first, so that a refusal leaves every hook as it was.
    for name in HOOK_NAMES:
        hook, chained = directory / name, directory / (name + CHAINED_SUFFIX)
        if (hook.exists() or hook.is_symlink()) and not is_ours(hook) and (chained.exists() or chained.is_symlink()):
            raise GpuspaceError(
                f"both {hook} and {chained} exist; installing would lose one of them",
                hint=f"merge them by hand, or remove {chained}, then install again",
            )
    changes = []
    for name in HOOK_NAMES:
        hook, chained = directory / name, directory / (name + CHAINED_SUFFIX)
        if is_ours(hook):
            if hook.read_text() == text:
                continue
            changes.append(f"updated {hook}")
        elif hook.exists() or hook.is_symlink():
            os.rename(hook, chained)  # kept as it is, and run by ours
            changes.append(f"installed {hook} (your hook is kept and still runs: {chained.name})")
        else:
            changes.append(f"installed {hook}")
        _write_executable(hook, text)
    return changes


def uninstall(info: RepoInfo) -> list[str]:
    directory = hooks_dir(info)
    changes = []
    for name in HOOK_NAMES:
        hook, chained = directory / name, directory / (name + CHAINED_SUFFIX)
        if not is_ours(hook):
            continue
        hook.unlink()
        if chained.exists() or chained.is_symlink():
            os.rename(chained, hook)
            changes.append(f"removed our {name} hook; yours is back in place")
        else:
            changes.append(f"removed {hook}")
    return changes


def installed(info: RepoInfo) -> bool:
    directory = hooks_dir(info)
    return all(is_ours(directory / name) for name in HOOK_NAMES)


def _write_executable(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)


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
