"""`git gpuspace bind [<worktree>]`: give an existing worktree (made by git) its container."""

from __future__ import annotations

import argparse

from .. import allocate, config, gpus, state, worktrees
from ..containers import Engine
from ..errors import UsageError
from ..lifecycle import Rollback, bind_worktree, leases, require_unbound, resolve_worktree
from .add import flag_settings, parse_settings, report


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktree = resolve_worktree(info, args.worktree)
    if worktree.prunable:
        raise UsageError(f"'{worktree.path}' no longer exists", hint="`git worktree prune` forgets it")
    with state.locked(info.common_dir) as current:
        settings = config.effective(current.defaults, flag_settings(args))
        request, limits = parse_settings(settings)
        require_unbound(current, worktree.path)
        engine = Engine()
        inventory = gpus.inventory() if not request.none else []
        allocate.choose(request, inventory, leases(engine.list_managed()), args.share)
        engine.ensure_image(settings["image"])
        with Rollback() as undo:
            binding, chosen = bind_worktree(
                info, engine, current, worktree,
                image=settings["image"], request=request, inventory=inventory,
                limits=limits, share=args.share, start=not args.no_start, undo=undo,
            )
    report(binding, chosen, started=not args.no_start)
    return 0
