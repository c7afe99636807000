"""`git gpuspace config get|set|unset|list [--user|--repo]`: the layered settings."""

from __future__ import annotations

import argparse

from .. import config, state
from ..git import worktrees
from ..errors import GpuspaceError, UsageError
from ..runs import backend as backends
from ..settings import settings_from


def run(args: argparse.Namespace) -> int:
    if args.action != "list" and args.key not in config.KEYS:
        raise UsageError(f"unknown setting '{args.key}'", hint=f"settings: {', '.join(config.KEYS)}")
    scope = "user" if args.user else "repo" if args.repo else None
    info = None
    try:
        info = worktrees.discover()
    except GpuspaceError:
        if args.repo:
            raise
    if args.action in ("set", "unset") and scope is None:
        scope = "repo" if info is not None else "user"  # as `git config`: the repo when in one
    repo_defaults = state.load(info.common_dir).defaults if info else {}
    user = config.load_user()

    if args.action == "list":
        layers = [("built-in", config.built_in()), ("user", user), ("repo", repo_defaults)]
        for key in config.KEYS:
            origin, value = next(((name, layer[key]) for name, layer in reversed(layers) if key in layer), (None, None))
            if scope and origin != scope:
                continue
            if value is not None:
                print(f"{key} = {config.render(value)}  ({origin})")
        return 0
    if args.action == "get":
        layer = {"user": user, "repo": repo_defaults}.get(scope) if scope else config.effective(repo_defaults, {})
        if args.key not in layer:
            return 1  # like `git config`: unset is exit 1 and no output
        print(config.render(layer[args.key]))
        return 0

    value = config.coerce(args.key, args.value) if args.action == "set" else None
    if scope == "user":
        updated = {**user, args.key: value} if value is not None else {k: v for k, v in user.items() if k != args.key}
        _validate(updated, repo_defaults)
        config.save_user(updated)
    else:
        with state.locked(info.common_dir) as current:
            if value is None:
                current.defaults.pop(args.key, None)
            else:
                current.defaults[args.key] = value
            _validate(user, current.defaults)
            current.save()
    return 0


def _validate(user: dict, repo_defaults: dict) -> None:
    """Refuse a value that would make every later add (or run) fail."""
    merged = {**user, **repo_defaults}
    settings_from(merged, {}, share=False)
    if "backend" in merged:
        backends.named(str(merged["backend"]))
    if merged.get("slurm.container") not in (None, "", "docker", "pyxis"):
        raise UsageError(f"slurm.container must be docker or pyxis, not '{merged['slurm.container']}'",
                         hint="pyxis runs the container with srun --container-image; docker with the node's engine")
