"""The Slurm backend: the same runs (a pinned worktree each, a container each), submitted through
Slurm's own commands. A sweep is one job array (`--array=0-N%max_parallel`) whose task index
picks the run; a run alone is one job. On the node the job runs `git-gpuspace _slurm-task RUN`,
which starts the run's container on that node's Docker engine with exactly the GPUs Slurm gave
the job (SLURM_JOB_GPUS) and waits for it; the exit code and the output go to the run's data
dir, so results do not depend on Slurm's accounting.

The queue file keeps each run's job id; `squeue` says what Slurm is doing with it, and a job
that left `squeue` ended: its data dir says how. Jobs carry the repo and run ids in their
comment, so a submitter that died is found again and nothing is submitted twice.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from .. import gpus, state, verify, worktrees
from ..config import effective
from ..containers import LABEL_RUN, Engine, container_name
from ..errors import GpuspaceError, UsageError
from ..faults import checkpoint
from ..lifecycle import Rollback, RunSpec, prepare, start_run
from ..settings import settings_from
from ..workspace import default_data_root
from . import store as run_store
from .progress import Progress
from .wrapper import container_command, exit_written
from .model import Run, now, params_env

SETTINGS = ("partition", "account", "time", "qos", "extra")


def command(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise GpuspaceError(f"{name} is not on PATH: this machine is not a Slurm submit host",
                            hint="install slurm-client, or use --backend local")
    return found


def mine() -> str:
    """The option that limits squeue/scancel to our own jobs: a cluster's queue holds everyone's,
    and another user's job may carry a comment that looks like ours (by uid: works before --me)."""
    return f"--user={os.getuid()}"


def slurm(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([command(args[0]), *args[1:]], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise GpuspaceError(f"{args[0]} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return result


def comment(info: worktrees.RepoInfo, runs: list[Run]) -> str:
    return f"gpuspace:{info.common_dir}:" + ",".join(run.id for run in runs)


def data_dir_of(info: worktrees.RepoInfo, run: Run, defaults: dict) -> str:
    """Where the task makes the run's data dir: the same place a local run's goes, or under
    slurm.workdir (a file system the cluster shares)."""
    return str(data_root(defaults, run) / container_name(info.name, Path(run.worktree), info.common_dir))


def data_root(defaults: dict, run: Run) -> Path:
    layers = effective(defaults, dict(run.flags))
    if layers.get("slurm.workdir"):
        return Path(os.path.expanduser(str(layers["slurm.workdir"]))) / "data"
    return Path(os.path.expanduser(str(layers["data_root"]))) if layers.get("data_root") else default_data_root()


def submit(info: worktrees.RepoInfo, ids: list[str], defaults: dict, max_parallel: int | None) -> str:
    """One job (or one array) for these queued runs, recorded before this returns."""
    runs = [run_store.load(info.common_dir).find(run_id) for run_id in ids]
    first = runs[0]
    layers = effective(defaults, dict(first.flags))
    settings = settings_from(defaults, dict(first.flags), False)
    logs = Path(data_dir_of(info, first, defaults)).parent / "slurm-logs"
    logs.mkdir(parents=True, exist_ok=True)
    script = _script(info, runs, layers.get("slurm.container") == "pyxis", settings.image,
                     [data_dir_of(info, run, defaults) for run in runs])
    options = [f"--job-name={first.sweep or first.id}", f"--comment={comment(info, runs)}", f"--chdir={info.anchor}",
               f"--output={logs}/%x-%A_%a.out" if len(runs) > 1 else f"--output={logs}/%x-%j.out", "--parsable"]
    count = settings.request.count or len(settings.request.ids)
    if count:
        options.append(f"--gres=gpu:{count}")
    if settings.limits.cpus:
        options.append(f"--cpus-per-task={max(1, int(settings.limits.cpus))}")
    if settings.limits.memory_bytes:
        options.append(f"--mem={max(1, settings.limits.memory_bytes >> 20)}M")
    for key in ("partition", "account", "time", "qos"):
        if layers.get(f"slurm.{key}"):
            options.append(f"--{key}={layers[f'slurm.{key}']}")
    if layers.get("slurm.extra"):
        options += shlex.split(str(layers["slurm.extra"]))
    if len(runs) > 1:
        options.append(f"--array=0-{len(runs) - 1}" + (f"%{max_parallel}" if max_parallel else ""))
    job = subprocess.run([command("sbatch"), *options], input=script, capture_output=True, text=True)
    if job.returncode != 0:
        raise GpuspaceError(f"sbatch refused the job: {job.stderr.strip()}", hint="see `sbatch --help`, slurm.extra")
    job_id = job.stdout.strip().split(";")[0]
    checkpoint("after-sbatch")  # a submitter that dies here: `runs resume` finds the job by its comment
    with run_store.locked(info.common_dir) as queue:
        for index, run in enumerate(runs):
            found = queue.find(run.id)
            found.job = f"{job_id}_{index}" if len(runs) > 1 else job_id
            found.data_dir = data_dir_of(info, run, defaults)
        queue.save()
    return job_id


def _script(info: worktrees.RepoInfo, runs: list[Run], pyxis: bool = False, image: str = "",
            data_dirs: list[str] | None = None) -> str:
    """The job: `_slurm-task` (the node's Docker engine), or with pyxis/enroot an `srun` that runs
    the container itself (`slurm.container = "pyxis"`), the worktree at /workspace and the data
    dir at /data, the command under the same wrapper (its output and exit code in the data dir)."""
    script = Path(sys.executable).parent / "git-gpuspace"
    binary = shlex.quote(str(script if script.exists() else shutil.which("git-gpuspace") or "git-gpuspace"))
    if pyxis:
        lines = []
        for run, data_dir in zip(runs, data_dirs or [run.data_dir or "" for run in runs]):
            mounts = f"{run.worktree}:/workspace,{data_dir}:/data"
            words = ["srun", f"--container-image={image}", f"--container-mounts={mounts}",
                     "--container-workdir=/workspace", *container_command(run.command)]
            lines.append(f"mkdir -p {shlex.quote(data_dir)}/.gpuspace && exec " + " ".join(shlex.quote(w) for w in words))
    else:
        lines = [f"exec {binary} _slurm-task {shlex.quote(run.id)}" for run in runs]
    if len(runs) == 1:
        body = lines[0]
    else:
        branches = "\n".join(f"  {index}) {line} ;;" for index, line in enumerate(lines))
        body = f'case "$SLURM_ARRAY_TASK_ID" in\n{branches}\n  *) exit 2 ;;\nesac'
    return f"#!/bin/sh\n# git-gpuspace runs of {info.common_dir}\n{body}\n"


def refresh(info: worktrees.RepoInfo) -> list[str]:
    """Bring the queue file's Slurm runs up to what Slurm and their data dirs say. Returns a line
    per change (started, ended)."""
    queue = run_store.load(info.common_dir)
    watched = [run for run in queue.runs if run.backend == "slurm" and run.job and run.state in ("queued", "running")]
    if not watched:
        return []
    listed = slurm("squeue", mine(), "--noheader", "--array", "--format=%i|%T|%r|%b", "--jobs",
                   ",".join(sorted({run.job.split("_")[0] for run in watched}))) if watched else None
    seen = {}
    for line in (listed.stdout if listed else "").splitlines():
        job, status, reason, _ = (line.split("|") + ["", "", "", ""])[:4]
        seen[job.strip()] = (status.strip(), reason.strip())
    events = []
    with run_store.locked(info.common_dir) as current:
        for run in current.runs:
            if run.backend != "slurm" or not run.job or run.state not in ("queued", "running"):
                continue
            status, reason = seen.get(run.job, ("", ""))
            if status == "PENDING":
                run.reason = f"PENDING ({reason})" if reason and reason != "None" else "PENDING"
            elif status in ("RUNNING", "COMPLETING", "CONFIGURING"):
                if run.state != "running":
                    run.state, run.started, run.reason = "running", run.started or now(), None
                    events.append(f"{run.id} running as job {run.job}")
            elif not status:  # gone from squeue: it ended; the data dir says how
                code = exit_written(run)
                run.finished, run.started = now(), run.started or now()
                if run.reason == "stopping":
                    run.state, run.reason = "stopped", None
                elif code is None:
                    run.state, run.reason = "failed", _how_it_ended(run.job)
                else:
                    run.state, run.exit_code, run.reason = ("succeeded" if code == 0 else "failed"), code, None
                events.append(f"{run.id} {run.state}" + (f" (exit {run.exit_code})" if run.exit_code is not None else ""))
        if events or watched:
            current.save()
    return events


def _how_it_ended(job: str) -> str:
    """Slurm's word for a job that ended without the run's exit code (it keeps ended jobs a few
    minutes: MinJobAge), e.g. TIMEOUT, CANCELLED, NODE_FAIL."""
    shown = subprocess.run([command("scontrol"), "show", "job", job], capture_output=True, text=True)
    words = shown.stdout.split()
    ours = any(word.startswith("UserId=") and word.endswith(f"({os.getuid()})") for word in words)
    found = next((word.split("=", 1)[1] for word in words if word.startswith("JobState=")), "") if ours else ""
    return f"{found} (the job ended without the run's exit code)" if found else \
        "the job ended without the run's exit code (cancelled, timed out or its node failed)"


def follow(info: worktrees.RepoInfo, wanted: set[str], out: TextIO = sys.stderr, poll: float = 1.0) -> list[Run]:
    """Watch the jobs until none of `wanted` is queued or running (Ctrl-C leaves them to Slurm)."""
    progress = Progress(out)
    try:
        while True:
            for line in refresh(info):
                progress.event(line)
            mine = [run for run in run_store.load(info.common_dir).runs if run.id in wanted]
            if not any(run.state in ("queued", "running") for run in mine):
                return mine
            progress.show(mine)
            time.sleep(poll)
    finally:
        progress.close()


def cancel(runs: list[Run]) -> None:
    jobs = [run.job for run in runs if run.job]
    if jobs:
        slurm("scancel", mine(), *jobs)  # a job id that is not ours (any more) is left alone


def find_submitted(info: worktrees.RepoInfo, run_ids: list[str]) -> dict[str, str]:
    """Jobs of this repo that Slurm knows (by their comment, and ours: anyone can write such a
    comment): run id -> job id. For a submitter that died between `sbatch` and writing the job
    id down."""
    listed = slurm("squeue", mine(), "--noheader", "--array", "--format=%i|%U|%k")
    found = {}
    prefix = f"gpuspace:{info.common_dir}:"
    for line in listed.stdout.splitlines():
        job, _, rest = line.partition("|")
        uid, _, text = rest.partition("|")
        if uid.strip() == str(os.getuid()) and text.startswith(prefix):
            ids = text[len(prefix):].split(",")
            array, _, index = job.strip().partition("_")
            if index.isdigit() and int(index) < len(ids):
                found[ids[int(index)]] = job.strip()
            elif len(ids) == 1:
                found[ids[0]] = job.strip()
    return {run_id: job for run_id, job in found.items() if run_id in run_ids}


def run_task(info: worktrees.RepoInfo, run_id: str) -> int:
    """On the node, inside the job: start the run's container on this node's engine with exactly
    the GPUs Slurm allocated to the job, wait for it, and return its exit code; the output and
    that code are in the run's data dir already (the wrapper writes them)."""
    found = run_store.load(info.common_dir).find(run_id)
    if found is None:
        raise GpuspaceError(f"no run '{run_id}' in {info.common_dir}")
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
    flags = {**found.flags, "gpus": chosen_ids or "none", "data_root": str(data_root(defaults, found))}
    engine = Engine()
    plan = prepare(settings_from(defaults, flags, False), engine)
    spec = RunSpec(container_command(found.command), params_env(found), {LABEL_RUN: found.id})
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


def check_backend(name: str) -> str:
    if name not in ("local", "slurm"):
        raise UsageError(f"unknown backend '{name}'", hint="local or slurm")
    return name
