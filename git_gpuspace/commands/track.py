"""`git gpuspace ui`: MLflow's UI for the repo's runs; `git-gpuspace _track [--once]`: the
repo's tracker, which the dispatcher starts in the background (see tracking.py)."""

from __future__ import annotations

import argparse

from .. import tracking, worktrees


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    if args.verb == "ui":
        return tracking.serve_ui(info, args.port)
    return tracking.run_tracker(info, once=args.once)
