"""`git gpuspace hooks install|uninstall|status`."""

from __future__ import annotations

import argparse

from ..git import hooks, worktrees
from .. import state
from ..errors import UsageError


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    if args.action == "status":
        where = hooks.hooks_dir(info)
        print(f"{'installed' if hooks.installed(info) else 'not installed'} in {where}")
        for hook in hooks.replaced(info):
            print(f"{hook}: another hook replaced ours (git lfs update --force does); "
                  f"`git gpuspace hooks install` runs it again before ours")
        return 0
    if args.action == "install" and args.pre_push:
        with state.locked(info.common_dir) as current:
            for name in args.pre_push:
                if name not in current.checks:
                    raise UsageError(f"no check named '{name}'", hint="`git gpuspace verify add NAME -- CMD` names one")
            current.pre_push = list(dict.fromkeys([*current.pre_push, *args.pre_push]))
            current.save()
    changes = hooks.install(info, pre_push=bool(args.pre_push)) if args.action == "install" else hooks.uninstall(info)
    for line in changes:
        print(line)
    if not changes:
        print(f"Nothing to do: hooks already {'installed' if args.action == 'install' else 'absent'} in {hooks.hooks_dir(info)}")
    return 0
