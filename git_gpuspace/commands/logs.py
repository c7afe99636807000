"""`git gpuspace logs [-f] [--tail N] <worktree>`: the container's output."""

from __future__ import annotations

import argparse
import sys

from .. import worktrees
from ..containers import Engine
from ..lifecycle import resolve_worktree
from .exec import running_binding


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    binding = running_binding(info, resolve_worktree(info, args.worktree))
    Engine().logs(binding.container, follow=args.follow, tail=args.tail if args.tail is not None else "all",
                  output=sys.stdout.buffer)
    return 0
