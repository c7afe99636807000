"""`git gpuspace ui`: MLflow's UI for the repo's runs; `git-gpuspace _track [--once]`: the
repo's tracker, which the dispatcher starts in the background (see tracking.py)."""

from __future__ import annotations

import argparse
import os

from ..runs import tracking
from ..git import worktrees


BACKGROUND_NICE = 10  # the tracker started by a dispatcher yields the CPU to it and to the runs


def run(args: argparse.Namespace) -> int:
    if getattr(args, "background", False):
        # importing MLflow takes seconds of CPU: on a small machine not those of the runs' start
        os.nice(BACKGROUND_NICE)
    info = worktrees.discover()
    if args.verb == "ui":
        return tracking.serve_ui(info, args.port)
    return tracking.run_tracker(info, once=args.once)
