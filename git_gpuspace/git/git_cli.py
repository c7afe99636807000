"""The git CLI, each call timed (see `git`), and the one question a command can ask of it
without loading dulwich: where the repository's common git dir is."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from pathlib import Path

from ..errors import NotARepository, WorktreeError


def own_env() -> dict[str, str]:
    """The environment without what names another repository to git (GIT_DIR and the like)."""
    return {key: value for key, value in os.environ.items()
            if key not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")}


GIT_TIMEOUT_ENV = "GPUSPACE_GIT_TIMEOUT"
# A cold `git status` over a big tree takes tens of seconds; a FIFO where git reads a file
# (a container can make one at `.gitignore`) takes forever.
DEFAULT_GIT_TIMEOUT_S = 60.0


def git_timeout() -> float:
    """`GPUSPACE_GIT_TIMEOUT` seconds when set to a finite number > 0, else the default."""
    try:
        value = float(os.environ.get(GIT_TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_GIT_TIMEOUT_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_GIT_TIMEOUT_S


def git(*args: str, cwd: Path | None = None, in_worktree: bool = False,
        timeout: float | None = None, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """The git CLI, for what must read exactly as git reads it (revision syntax with reflogs,
    the status `git worktree remove` checks, the committer identity). It sees the environment
    the user gave us (GIT_DIR and all), except `in_worktree`: then the worktree at `cwd`; or
    `env` when given. `input`: what git reads on stdin.

    git reads files a container can write (`.gitignore`, `.gitattributes` in the worktree), so
    it runs at most `timeout` seconds (git_timeout()); then git and all it started are killed
    and a WorktreeError names the path."""
    env = env if env is not None else own_env() if in_worktree else None
    limit = timeout if timeout is not None else git_timeout()
    try:
        # a session of its own: on time-out the whole group goes (git starts helpers)
        process = subprocess.Popen(["git", *args], cwd=cwd, env=env,
                                   stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   encoding="utf-8", errors="surrogateescape", start_new_session=True)
    except FileNotFoundError:
        if cwd is not None and not os.path.isdir(cwd):  # removed meanwhile (another command): git's failure
            return subprocess.CompletedProcess(["git", *args], 128, "", f"fatal: cannot change to '{cwd}'")
        raise WorktreeError("git is not on PATH", hint="install git") from None
    try:
        stdout, stderr = process.communicate(input, timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        where = os.path.abspath(cwd if cwd is not None else os.getcwd())
        command = next((arg for arg in args if not arg.startswith("-")), "")
        raise WorktreeError(
            f"`git {command}` in '{where}' did not finish in {limit:g} s",
            hint=f"something there blocks git (a FIFO or device where git reads a file?): "
                 f"look with `find '{where}' -type p`",
        ) from None
    except BaseException:  # interrupted: git must not outlive us, blocked in an open() forever
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=5)  # reaped; a helper that left the group may hold the pipes


def common_dir() -> Path:
    """The repository's common git dir as git itself finds it (GIT_DIR, safe.directory and
    all), for a command that reads only the run store: `runs` lists without loading dulwich."""
    found = git("rev-parse", "--path-format=absolute", "--git-common-dir")
    if found.returncode != 0 or not found.stdout.strip():
        raise NotARepository(f"not a git repository: {Path.cwd()}",
                             hint="run this inside a git repository (or a worktree of one)")
    return Path(found.stdout.strip()).resolve()
