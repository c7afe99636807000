"""`git-gpuspace _slurm-task RUN`: what a Slurm job runs on its node (see runs/slurm.py). It
starts the run's container on the node's engine with exactly the GPUs Slurm allocated to the
job, waits for it, and exits with its exit code; the output and that code are in the run's data
dir already (the wrapper of dispatch.py writes them)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import gpus, state, verify, worktrees
from ..containers import LABEL_RUN, Engine
from ..errors import GpuspaceError
from ..lifecycle import Rollback, RunSpec, prepare, start_run
from ..runs import slurm
from ..runs import store as run_store
from ..runs.dispatch import container_command
from ..runs.store import now
from ..settings import settings_from


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    found = run_store.load(info.common_dir).find(args.run)
    if found is None:
        raise GpuspaceError(f"no run '{args.run}' in {info.common_dir}")
    worktree = worktrees.find_worktree(info, Path(found.worktree))
    if worktree is None:
        raise GpuspaceError(f"the worktree of {found.id}, {found.worktree}, is not on this node")
    defaults = state.load(info.common_dir).defaults
    # Slurm is the allocator here: the GPUs it gave the job, by index on this node, and no others
    given = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS") or ""
    by_index = {str(gpu.index): gpu.uuid for gpu in gpus.inventory()} if given else {}
    missing = [index for index in given.split(",") if index and index not in by_index]
    if missing:
        raise GpuspaceError(f"Slurm gave GPU {', '.join(missing)}, which this node's driver does not list")
    chosen_ids = ",".join(by_index[index] for index in given.split(",") if index)  # by UUID: "1" alone is a count
    flags = {**found.flags, "gpus": chosen_ids or "none", "data_root": str(slurm.data_root(defaults, found))}
    engine = Engine()
    plan = prepare(settings_from(defaults, flags, False), engine)
    spec = RunSpec(container_command(found.command), run_store.params_env(found), {LABEL_RUN: found.id})
    with Rollback() as undo:
        name, chosen, data_dir = start_run(info, plan, worktree, spec, undo)
    with run_store.locked(info.common_dir) as queue:
        current = queue.find(found.id)
        current.state, current.started, current.reason = "running", now(), None
        current.container, current.gpus, current.data_dir = name, [gpu.uuid for gpu in chosen], str(data_dir)
        queue.save()
    print(f"{found.id}: container {name} on GPUs {given or 'none'} of {os.uname().nodename}", file=sys.stderr)
    try:
        code = int(engine.api.wait(name).get("StatusCode", 1))
    finally:
        engine.remove(name, graceful=False)
    with run_store.locked(info.common_dir) as queue:  # when it ended, as the node saw it
        current = queue.find(found.id)
        if current.state == "running" and current.reason != "stopping":
            current.state, current.exit_code, current.finished = ("succeeded" if code == 0 else "failed"), code, now()
            if current.check:  # a `verify` check: its verdict is a git note, as for a local run, written
                image = plan.settings.image  # before the run reads as ended, so whoever sees it end finds the note
                verify.record(info, current, f"{image} ({engine.api.inspect_image(image).get('Id', '?')})")
            queue.save()
    return code
