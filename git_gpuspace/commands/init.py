"""`git gpuspace init`: record repo defaults and install the hooks, so plain git drives it all."""

from __future__ import annotations

import argparse

from ..git import hooks, worktrees
from .. import state
from ..settings import settings_from


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    flags = {key: getattr(args, key) for key in ("image", "gpus", "memory", "cpus", "shm_size")}
    with state.locked(info.common_dir) as current:
        given = {key: value for key, value in flags.items() if value is not None}
        settings_from({**current.defaults, **given}, {}, share=False)  # refuse bad defaults now
        current.defaults.update(given)
        current.auto_bind = True
        changes = [] if args.no_hooks else hooks.install(info)
        current.save()
    for line in changes:
        print(line)
    shown = ", ".join(f"{key}={value}" for key, value in sorted(current.defaults.items())) or "built-in defaults"
    print(f"Repo defaults: {shown}")
    if not args.no_hooks:
        print("`git worktree add` now binds each new worktree to its own container.")
    return 0
