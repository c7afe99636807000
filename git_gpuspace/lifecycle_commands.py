"""A devcontainer's lifecycle commands (onCreateCommand ... postAttachCommand), run in the bound
container at each start, and who they (and `exec`) run as."""

from __future__ import annotations

import os
import shlex
import sys

from .devcontainer import parser as devcontainer, image_metadata, remote_env
from .engine.containers import Engine
from .model import Binding
from .settings import Settings


def file_commands(settings: Settings) -> dict | None:
    """The lifecycle commands `run_lifecycle` takes from the settings' devcontainer.json: its own
    when trusted (none without a file); None when it is not trusted."""
    return settings.lifecycle if settings.trusted or not settings.devcontainer else None


def run_lifecycle(engine: Engine, binding: Binding, commands: dict | None, first_start: bool) -> bool:
    """The lifecycle commands in the spec's order: onCreateCommand, updateContentCommand and
    postCreateCommand after the first start, postStartCommand and postAttachCommand after every
    start; at each stage
    the image's devcontainer.metadata ones (the base image's, then each feature's, in install
    order) before the file's. `commands`: the trusted file's (see `file_commands`); None: the
    file is not trusted, and neither are the commands of the image it names. As remoteUser,
    with the probed environment and remoteEnv, `${containerEnv:VAR}` from the container. A
    failure stops the ones after it and returns False: the container stays up, for the user to
    fix and rerun them by hand."""
    keys = devcontainer.LIFECYCLE if first_start else devcontainer.EVERY_START
    attrs = engine.image_attrs(binding.image) or {}
    from_image = image_metadata.merge(image_metadata.entries_of((attrs.get("Config") or {}).get("Labels"))).lifecycle
    if commands is None:
        named = [key for key in keys if from_image.get(key)]
        if named:
            print(f"git-gpuspace: the image's devcontainer.metadata asks for {', '.join(named)}: not run, as the "
                  f"devcontainer.json is not trusted (`git gpuspace trust {binding.path}` allows them)", file=sys.stderr)
        return True
    wanted = [(key, command) for key in keys for command in [*from_image.get(key, []), commands.get(key)] if command]
    if not wanted:
        return True
    container_env = engine.container_env(binding.container)
    user = exec_user(binding)
    env = remote_env.environment(engine, binding, user)
    for key, command in wanted:
        command = devcontainer.container_substitute(command, container_env)
        for step in list(command.values()) if isinstance(command, dict) else [command]:
            argv = ["sh", "-c", step] if isinstance(step, str) else [str(part) for part in step]
            print(f"Running {key}: {step if isinstance(step, str) else shlex.join(argv)}", file=sys.stderr)
            code, _ = engine.exec(binding.container, argv, env, output=(sys.stderr.buffer, sys.stderr.buffer),
                                  user=user)
            if code != 0:
                print(f"git-gpuspace: error: {key} exited with {code}; the commands after it were not run (the "
                      f"container {binding.container} is up: fix the command and run it with `git gpuspace exec`)",
                      file=sys.stderr)
                return False
    return True


def exec_user(binding: Binding) -> str | None:
    """Who commands run as: remoteUser, unless the uid mapping runs everything as the invoking
    user (the reference's updateRemoteUserUID gives the remote user that uid too)."""
    return binding.remote_user if os.getuid() == 0 else None
