"""`git gpuspace exec <worktree> -- <cmd>` and `git gpuspace shell <worktree>`.

The exit code of the command is ours. Interactive sessions (a terminal on both ends) go
through the docker CLI, which owns TTY handling; everything else through the Docker SDK.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from ..engine import container_env
from ..devcontainer import remote_env
from .. import state
from ..git import private_git, worktrees
from ..engine.containers import Engine
from ..errors import GpuspaceError, UsageError
from ..lifecycle import not_bound, resolve_worktree
from ..lifecycle_commands import exec_user
from ..model import Binding

SHELL = ["sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]


def run(args: argparse.Namespace) -> int:
    command = SHELL if args.verb == "shell" else list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command given", hint="git gpuspace exec <worktree> -- <command> [args...]")
    worktree, binding, engine = running_container(args.worktree)
    worktree = _synced(worktree, binding, engine)
    user = exec_user(binding)
    # as an editor's terminal has it: the login shell's environment, remoteEnv, then where the worktree is
    env = {**remote_env.environment(engine, binding, user),
           **container_env.context(worktree.path, worktree.branch, worktree.head)}  # fresh: the branch may have moved
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    docker_cli = shutil.which("docker")
    if interactive and docker_cli:
        flags = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
        flags += ["--user", user] if user else []
        return subprocess.call([docker_cli, "exec", "-it", *flags, binding.container, *command])
    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer  # a pipe, a file, a heredoc
    code, _ = engine.exec(binding.container, command, env, output=(sys.stdout.buffer, sys.stderr.buffer), stdin=piped,
                          user=user)
    return code


def _synced(worktree: worktrees.Worktree, binding: Binding, engine: Engine) -> worktrees.Worktree:
    """The container's git and the host's agree before the command runs (commits either side made)."""
    info = worktrees.discover()
    found = private_git.sync_bindings(info, engine, [binding], [worktree], {binding.container}).get(binding.path)
    if found is None or not found.moved:
        return worktree
    return worktrees.find_worktree(info, worktree.path) or worktree  # its HEAD moved: the context says so


def running_container(target: str | None) -> tuple[worktrees.Worktree, Binding, Engine]:
    """The worktree named, its binding, and an engine on which its container is running."""
    info = worktrees.discover()
    worktree = resolve_worktree(info, target)
    binding = running_binding(info, worktree)
    engine = Engine()
    if engine.state_of(binding.container) != "running":
        raise GpuspaceError(f"container {binding.container} is not running", hint=f"git gpuspace start {worktree.path}")
    return worktree, binding, engine


def running_binding(info: worktrees.RepoInfo, worktree: worktrees.Worktree) -> Binding:
    binding = state.load(info.common_dir).find(worktree.path)
    if binding is None:
        raise not_bound(info, worktree, "exec")
    if binding.pending:
        raise GpuspaceError(f"'{worktree.path}' is pending: {binding.pending}", hint=f"git gpuspace start {worktree.path}")
    return binding
