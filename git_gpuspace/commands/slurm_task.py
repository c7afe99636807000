"""`git-gpuspace _slurm-task RUN`: what a Slurm job runs on its node (see runs/slurm.py)."""

from __future__ import annotations

import argparse

from ..git import worktrees
from ..runs import slurm


def run(args: argparse.Namespace) -> int:
    return slurm.run_task(worktrees.discover(), args.run)
