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

import math
import os
import shlex
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from .. import data_dirs, gpus, state, untrusted_files, verify
from . import search, tracking
from ..git import worktrees
from ..config import effective
from ..engine.containers import LABEL_RUN, Engine, container_name
from ..errors import EngineUnavailable, GpusUnavailable, GpuspaceError, ImageUnavailable, UsageError
from ..faults import checkpoint
from ..installation import SCRIPT_NAME, console_script
from ..lifecycle import RunSpec, prepare, start_run
from ..rollback import Rollback
from ..settings import settings_for_worktree
from ..config import default_data_root
from . import store as run_store
from .output_stream import OutputStream
from .progress import Progress
from .sbatch import MAX_SIGNAL_TIME, Resources, options as sbatch_options
from .wrapper import EXIT_FILE, LOG, container_command, exit_time, exit_written
from . import model
from .model import ACTIVE, STOPPING, Run, params_env



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


def submit(info: worktrees.RepoInfo, ids: list[str], defaults: dict, max_parallel: int | None,
           after: str | None = None) -> str:
    """One job (or one array) for these queued runs, recorded before this returns. The runs of
    one submission share their settings: the first one's worktree says what they are. `after`:
    a job this one runs after, only if that one succeeded (else Slurm cancels this one)."""
    runs = [run for run in run_store.load(info.common_dir, ids=set(ids)).runs]
    first = runs[0]
    layers = effective(defaults, dict(first.flags))
    settings = _settings(info, defaults, first, dict(first.flags))
    logs = Path(data_dir_of(info, first, defaults)).parent / "slurm-logs"
    logs.mkdir(parents=True, exist_ok=True)
    script = _script(info, runs, layers.get("slurm.container") == "pyxis", settings.image,
                     [data_dir_of(info, run, defaults) for run in runs])
    resources = Resources(gpus=settings.request.count or len(settings.request.ids), cpus=settings.limits.cpus,
                          memory_bytes=settings.limits.memory_bytes, tasks=len(runs), max_parallel=max_parallel,
                          priority=first.priority, settings=layers, preemptible=first.preemptible, grace=first.grace)
    options = [*sbatch_options(first.sweep or first.id, resources), f"--comment={comment(info, runs)}",
               f"--chdir={info.anchor}", "--parsable",
               f"--output={logs}/%x-%A_%a.out" if len(runs) > 1 else f"--output={logs}/%x-%j.out"]
    if after:
        options += [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
    job = subprocess.run([command("sbatch"), *options], input=script, capture_output=True, text=True)
    if job.returncode != 0:
        raise GpuspaceError(f"sbatch refused the job: {job.stderr.strip()}", hint="see `sbatch --help`, slurm.extra")
    job_id = job.stdout.strip().split(";")[0]
    checkpoint("after-sbatch")  # a submitter that dies here: `runs resume` finds the job by its comment
    with run_store.locked(info.common_dir, ids=set(ids)) as queue:
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
    binary = shlex.quote(str(console_script() or SCRIPT_NAME))
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
    """Bring the store's Slurm runs up to what Slurm and their data dirs say, and submit anew
    the runs that failed with retries left. Returns a line per change (started, ended)."""
    watched = [run for run in run_store.load(info.common_dir, states=ACTIVE).runs if run.backend == "slurm" and run.job]
    if not watched:
        return []
    # all of our jobs, not `--jobs`: squeue refuses the whole list when one of them is no longer known
    listed = slurm("squeue", mine(), "--noheader", "--array", "--format=%i|%T|%r|%b")
    seen = {}
    for line in listed.stdout.splitlines():
        job, status, reason, _ = (line.split("|") + ["", "", "", ""])[:4]
        seen[job.strip()] = (status.strip(), reason.strip())
    checkpoint("slurm-listed")
    looked_at = {run.id: run.job for run in watched}
    events, again = [], []
    with run_store.locked(info.common_dir, ids=set(looked_at)) as current:
        for run in current.runs:
            if run.backend != "slurm" or not run.job or run.state not in ACTIVE:
                continue
            if run.job != looked_at.get(run.id):  # submitted again since squeue's look, which cannot
                continue  # know its new job: it is not gone; the next look sees it
            status, reason = seen.get(run.job, ("", ""))
            if status in REQUEUING and run.state == "running":  # Slurm preempts it: it goes back in line
                stopping = run.reason == STOPPING
                events.append(f"{run.id} preempted: job {run.job} is {status}")
                model.preempt(run, f"job {run.job} {status}")
                if stopping:
                    run.reason = STOPPING
            elif status == "PENDING":
                if run.state != "queued":  # it ran, and Slurm requeued its job (preempted, scontrol requeue)
                    events.append(_back_in_line(run, f"requeued by Slurm (job {run.job})"))
                if run.reason != STOPPING:  # asked to stop: it says so until Slurm has let it go
                    run.reason = f"PENDING ({reason})" if reason and reason != "None" else "PENDING"
            elif status in ("RUNNING", "COMPLETING", "CONFIGURING"):
                if run.state == "preempted":  # requeued and running again, between two looks
                    events.append(_back_in_line(run, f"requeued by Slurm (job {run.job})"))
                if run.state != "running":
                    model.start(run, STOPPING if run.reason == STOPPING else None)
                    events.append(f"{run.id} running as job {run.job}")
            elif status:
                pass  # SUSPENDED, RESIZING, ...: as it was
            elif run.state == "preempted":  # preempted, and its job is gone: not requeued by Slurm
                if run.reason == STOPPING:
                    model.drop(run, "stopped while it was preempted")
                    events.append(f"{run.id} stopped")
                else:
                    events.append(_back_in_line(run, f"job {run.job} ended when it was preempted", keep_job=False))
                    again.append(run)
            else:  # gone from squeue: it ended; the data dir says how
                code = exit_written(run)
                if code is not None and run.state == "queued" and run.preempted_at is not None \
                        and (exit_time(run) or run.preempted_at) <= run.preempted_at:
                    code = None  # what its command left before Slurm requeued it: not this attempt's end
                # no code, or one a signal gave (the command got Slurm's SIGTERM): Slurm says why
                how, why = _how_it_ended(run.job, code) if code is None or code > 128 else ("", "")
                if run.state == "queued" and why == "DependencyNeverSatisfied":  # after a failed one
                    model.drop(run, "not run: an earlier one failed")
                    events.append(f"{run.id} not run: an earlier one failed")
                    continue
                if run.state == "queued" and code is not None:  # it ran between two looks (pyxis: no
                    model.start(run, run.reason if run.reason == STOPPING else None)  # task records a start)
                if run.reason == STOPPING and code == 0:
                    run.reason = None  # its command ended on its own, succeeding, as the stop came
                # when it ended, not when we looked
                events.append(model.end(run, code, how or None, at=exit_time(run) if code is not None else None))
                if run.state == "queued":
                    again.append(run)
        current.save()
    if again:
        checkpoint("after-slurm-requeue")  # a watcher that dies here: `runs resume` submits them, once
    for run in again:  # a new job each; the runs of one sweep keep its limit
        if run.data_dir:  # the last try's exit code is not the next one's, should its job never run
            data_dirs.remove_private(Path(run.data_dir), EXIT_FILE)
        sweep = run_store.load(info.common_dir, ids=set()).sweeps.get(run.sweep or "")
        job = submit(info, [run.id], state.load(info.common_dir).defaults, sweep.max_parallel if sweep else None)
        events.append(f"{run.id} submitted again as job {job}")
    return events


REQUEUING = ("PREEMPTED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD")  # squeue's states of a job on its way back


def _back_in_line(run: Run, why: str, keep_job: bool = True) -> str:
    """A run whose job Slurm requeued (same job id: `keep_job`) or preempted: queued again, to
    restart in its worktree and data dir with GPUSPACE_RESUME=1; one asked to stop stays so."""
    stopping, job = run.reason == STOPPING, run.job
    if run.state == "running":
        model.preempt(run, why)
    line = model.back_in_line(run)
    if keep_job:
        run.job = job
    if stopping:
        run.reason = STOPPING
    return f"{line}: {why}"


def _how_it_ended(job: str, code: int | None = None) -> tuple[str, str]:
    """Slurm's word for a job that ended without the run's exit code, or with one a signal gave
    (it keeps ended jobs a few minutes: MinJobAge), e.g. TIMEOUT, CANCELLED, NODE_FAIL; and its
    reason."""
    shown = subprocess.run([command("scontrol"), "show", "job", job], capture_output=True, text=True)
    words = shown.stdout.split()
    ours = any(word.startswith("UserId=") and word.endswith(f"({os.getuid()})") for word in words)
    fields = dict(word.split("=", 1) for word in words if "=" in word) if ours else {}
    found = fields.get("JobState", "")
    if code is not None:  # its command ended on Slurm's signal: the job's state says whose
        return (found if found not in ("", "COMPLETED", "FAILED") else ""), fields.get("Reason", "")
    return (f"{found} (the job ended without the run's exit code)" if found else
            "the job ended without the run's exit code (cancelled, timed out or its node failed)", fields.get("Reason", ""))


def follow(info: worktrees.RepoInfo, wanted: set[str], out: TextIO = sys.stderr, poll: float = 1.0,
           stop_on_failure: bool = False, stream: OutputStream | None = None) -> list[Run]:
    """Watch the jobs until none of `wanted` is queued or running (Ctrl-C leaves them to Slurm).
    `stop_on_failure`: once one of them failed, those still queued are cancelled and dropped.
    `stream`: one run's output, from its data dir as the node writes it (a shared file system)."""
    progress = Progress(out, live=stream is None)
    try:
        while True:
            lines = refresh(info)
            if lines:
                tracking.ensure_tracker(info)  # a job started or ended: the repo's tracker logs it
            lines += search.step(info)  # a search's next trials submitted as its jobs end
            mine = run_store.load(info.common_dir, ids=wanted).runs
            if stream is not None:
                stream.pump(mine, drain=not any(run.id == stream.run_id and run.state in ACTIVE for run in mine))
            for line in lines:
                progress.event(line)
            if stop_on_failure and any(run.state == "failed" for run in mine):
                for line in _drop_queued(info, wanted):
                    progress.event(line)
                mine = run_store.load(info.common_dir, ids=wanted).runs
            if not any(run.state in ACTIVE for run in mine):
                return mine
            progress.show(mine)
            time.sleep(poll)
    finally:
        progress.close()


def _drop_queued(info: worktrees.RepoInfo, wanted: set[str]) -> list[str]:
    """The runs of `wanted` that have not started: their jobs cancelled, the runs dropped."""
    with run_store.locked(info.common_dir, ids=wanted) as current:
        queued = [run for run in current.runs if run.state == "queued"]
        for run in queued:
            model.drop(run, "not run: an earlier one failed")
        current.save()
    cancel(queued)
    return [f"{run.id} not run: an earlier one failed" for run in queued]


def cancel(runs: list[Run]) -> None:
    """A job id that is not ours is left alone (--user); one Slurm no longer knows has ended
    already, which is what was asked: only other refusals are errors."""
    jobs = [run.job for run in runs if run.job]
    if not jobs:
        return
    result = subprocess.run([command("scancel"), mine(), *jobs], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    trouble = [line for line in result.stderr.splitlines()
               if line.strip() and "Invalid job id" not in line and "already completing or completed" not in line]
    if result.returncode != 0 and trouble:
        raise GpuspaceError(f"scancel failed: {trouble[-1].strip()}")


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


def _settings(info: worktrees.RepoInfo, defaults: dict, run: Run, flags: dict):
    """The run's settings as a local run gets them: its worktree's devcontainer.json included."""
    worktree = worktrees.find_worktree(info, Path(run.worktree))
    if worktree is None:
        raise GpuspaceError(f"the worktree of {run.id}, {run.worktree}, is not on this node")
    return settings_for_worktree(info, defaults, flags, False, worktree, notices=False)


def run_task(info: worktrees.RepoInfo, run_id: str) -> int:
    """On the node, inside the job: start the run's container on this node's engine with exactly
    the GPUs Slurm allocated to the job, wait for it, and return its exit code. The output and
    that code are in the run's data dir (the wrapper writes them): the submitting side records
    the end from there once the job has left the queue, so nothing here decides it twice."""
    found = run_store.load(info.common_dir, ids={run_id}).find(run_id)
    if found is None:
        raise GpuspaceError(f"no run '{run_id}' in {info.common_dir}")
    found = _restarted(info, found)  # a requeued job: the run resumes (GPUSPACE_RESUME=1)
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
    worktree = worktrees.find_worktree(info, Path(found.worktree))
    plan = prepare(_settings(info, defaults, found, flags), engine)
    spec = RunSpec(container_command(found.command), {**params_env(found), **tracking.container_env(info, found)},
                   {LABEL_RUN: found.id})
    with Rollback() as undo:
        name, chosen, data_dir = start_run(info, plan, worktree, spec, undo)
    with run_store.locked(info.common_dir, ids={found.id}) as queue:
        current = queue.find(found.id)
        if current.state in ACTIVE:
            model.start(current, current.reason if current.reason == STOPPING else None, name,
                        [gpu.uuid for gpu in chosen], str(data_dir), [gpu.index for gpu in chosen])
            # a submitter killed between sbatch and writing the job id down left none: the job says
            # it here, so that `runs resume` never submits a run that ran (and left squeue) again
            current.job = current.job or _own_job()
            queue.save()
    print(f"{found.id}: container {name} on GPUs {given or 'none'} of {os.uname().nodename}", file=sys.stderr)
    try:
        code = _wait(engine, name, found)
    finally:
        engine.remove(name, graceful=False)
    if found.check:  # a `verify` check: its verdict is a git note, as for a local run, written
        ended = run_store.load(info.common_dir, ids={found.id}).find(found.id)  # before the job ends,
        if ended is not None and ended.state == "running" and ended.reason != STOPPING:  # so whoever sees
            model.end(ended, exit_written(ended))  # it end finds the note (a failure with retries left has none)
            image = plan.settings.image
            verify.record(info, ended, f"{image} ({engine.image_id(image) or '?'})")
    return code


def _restarted(info: worktrees.RepoInfo, found: Run) -> Run:
    """The job runs again after Slurm requeued it (SLURM_RESTART_COUNT): the run's record says so
    before its container starts, whether or not a watcher saw the requeue, so that its command
    gets GPUSPACE_RESUME=1 and GPUSPACE_RESTARTS."""
    count = os.environ.get("SLURM_RESTART_COUNT", "")
    if not count.isdigit() or int(count) <= found.restarts:
        return found
    with run_store.locked(info.common_dir, ids={found.id}) as queue:
        current = queue.find(found.id)
        if current.state in ("running", "preempted") and current.reason != STOPPING:
            _back_in_line(current, f"requeued by Slurm (job {current.job})")
        current.restarts = max(current.restarts, int(count))
        queue.save()
    return current


def _wait(engine: Engine, name: str, run: Run) -> int:
    """The container's exit code. SIGTERM to the job (Slurm preempts or requeues it, `scancel`,
    or `--signal=B:TERM@grace` before its time limit) goes on to the container, whose command has
    the run's grace to write a checkpoint before SIGKILL; a preemptible run near its time limit
    then asks Slurm to requeue its job, to go on where it left off."""
    try:
        return engine.wait(name)
    except KeyboardInterrupt as interrupt:
        if getattr(interrupt, "signum", None) != signal.SIGTERM:
            raise
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Slurm sends it again as it ends the job
    print(f"{run.id}: SIGTERM: passed to its container, {run.grace:g} s before SIGKILL", file=sys.stderr)
    engine.stop_within(name, run.grace)
    code = engine.wait(name)
    job = os.environ.get("SLURM_JOB_ID")
    if run.preemptible and job and _near_its_end(job, run.grace):
        subprocess.run([command("scontrol"), "requeue", job], capture_output=True, stdin=subprocess.DEVNULL)
    return code


def _own_job() -> str | None:
    """This task's job id as the store keeps it: `<array>_<index>` for a task of an array."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID")


def _near_its_end(job: str, grace: float) -> bool:
    """The job's time is nearly up (what `--signal=B:TERM@grace` announces), as opposed to a
    SIGTERM of Slurm's own requeue or preemption, or of `scancel`."""
    shown = subprocess.run([command("squeue"), "--noheader", "--jobs", job, "--format=%L"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL).stdout.strip()
    parts = shown.replace("-", ":").split(":")  # [days-]hours:minutes:seconds, or NOT_SET, UNLIMITED
    if not all(part.isdigit() for part in parts) or not 1 <= len(parts) <= 4:
        return False
    left = sum(int(part) * unit for part, unit in zip(reversed(parts), (1, 60, 3600, 86400)))
    return left <= grace + 120  # Slurm may signal up to 60 s early; the checkpoint took some of it


def gpus_per_node(partition: str | None) -> tuple[int, str]:
    """The most GPUs one node of the cluster (of `partition`) has, by Slurm's GRES, and the
    cluster's name: what a job can be given, wherever it is submitted from."""
    listed = slurm("sinfo", "--noheader", "--format=%G", *([f"--partition={partition}"] if partition else []))
    most = 0
    for entry in ",".join(listed.stdout.split()).split(","):
        fields = entry.split("(")[0].split(":")  # gpu[:type]:count[(S:0-1)]
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            most = max(most, int(fields[-1]))
    shown = subprocess.run([command("scontrol"), "show", "config"], capture_output=True, text=True).stdout
    name = next((line.split("=", 1)[1].strip() for line in shown.splitlines()
                 if line.replace(" ", "").startswith("ClusterName=")), "")
    return most, name or "?"


class SlurmBackend:
    """Slurm: the runs as jobs (a sweep as one array), each starting its container on its node
    with the GPUs Slurm gave the job; this side submits, watches `squeue`, and records."""

    name = "slurm"

    def preflight(self, info: worktrees.RepoInfo, asked, settings) -> None:
        command("sbatch")  # a submit host, before anything is made
        if asked.runs_per_gpu > 1:
            raise UsageError("--runs-per-gpu works on this machine's engine only: Slurm gives each job whole GPUs",
                             hint="run the sweep with --backend local, or ask the cluster for shared GPUs (MPS "
                             "or shards) in slurm.extra")
        if asked.time_slice is not None:
            raise UsageError("--time-slice works on this machine's engine only: on Slurm the cluster's own "
                             "preemption decides who yields", hint="drop --time-slice (--preemptible lets Slurm "
                             "requeue the run), or run with --backend local")
        if asked.preempt:
            raise UsageError("--preempt works on this machine's engine only: on Slurm the cluster's partitions "
                             "and QOS decide which job preempts which", hint="drop --preempt, or ask for a QOS "
                             "that may preempt (slurm.qos)")
        if asked.preemptible and math.ceil(asked.grace) > MAX_SIGNAL_TIME:
            raise UsageError(f"--grace {asked.grace:g}s is more than Slurm's --signal takes ({MAX_SIGNAL_TIME} s)",
                             hint="a shorter --grace")
        if asked.priority > 0 and os.getuid() != 0:
            raise UsageError(f"--priority {asked.priority} would be Slurm's --nice=-{asked.priority}, which only "
                             "a Slurm operator may give", hint="lower the others with a negative --priority instead")
        wanted = settings.request.count or len(settings.request.ids)
        if wanted:
            layers = effective(state.load(info.common_dir).defaults, dict(asked.flags))
            partition = layers.get("slurm.partition")
            most, cluster = gpus_per_node(str(partition) if partition else None)
            if wanted > most:
                where = f"partition {partition} of " if partition else ""
                raise GpusUnavailable(f"each run asks for {wanted} GPUs, but no node of {where}Slurm cluster "
                                      f"'{cluster}' has more than {most}", hint="lower --gpus")
        if settings.build is None:
            _check_image(settings.image)

    def launch(self, info: worktrees.RepoInfo, ids: list[str], max_parallel: int | None, detach: bool,
               stop_on_failure: bool = False) -> list[str]:
        defaults = state.load(info.common_dir).defaults
        if not (stop_on_failure and max_parallel == 1 and len(ids) > 1):
            job = submit(info, ids, defaults, max_parallel)
            return [f"Submitted to Slurm as job {job}" + (" (an array)" if len(ids) > 1 else "")]
        # one at a time, each only after the one before succeeded: Slurm itself stops the rest
        jobs = []
        for run_id in ids:
            jobs.append(submit(info, [run_id], defaults, 1, after=jobs[-1] if jobs else None))
        return [f"Submitted to Slurm as jobs {', '.join(jobs)}, each after the one before succeeded"]

    def poll(self, info: worktrees.RepoInfo) -> list[str]:
        return refresh(info)

    def wait(self, info: worktrees.RepoInfo, wanted: set[str] | None, stop_on_failure: bool = False,
             stream: OutputStream | None = None) -> list[Run]:
        if wanted is None:
            wanted = {run.id for run in run_store.load(info.common_dir, states=ACTIVE).runs if run.backend == "slurm"}
        return follow(info, wanted, stop_on_failure=stop_on_failure, stream=stream)

    def cancel(self, info: worktrees.RepoInfo, runs: list[Run]) -> list[str]:
        cancel(runs)
        lines = refresh(info)  # Slurm says when they are gone: recorded stopped then
        return [f"Cancelled {len(runs)} Slurm job{'s' if len(runs) > 1 else ''}: "
                + ", ".join(f"{run.id} ({run.job})" for run in runs if run.job), *lines]

    def recover(self, info: worktrees.RepoInfo) -> list[str]:
        """Runs queued for Slurm with no job: those whose job the dead submitter did submit are
        found by their comment; the rest are submitted now, once."""
        unsubmitted = [run for run in run_store.load(info.common_dir, states=ACTIVE).runs
                       if run.backend == "slurm" and not run.job and run.reason != model.PREPARING]
        if not unsubmitted:
            return []
        known = find_submitted(info, [run.id for run in unsubmitted])
        with run_store.locked(info.common_dir, ids=set(known)) as current:
            for run in current.runs:
                run.job = known[run.id]
            current.save()
        rest = [run for run in unsubmitted if run.id not in known]
        lines = [f"{run_id}: found its job {job}" for run_id, job in known.items()]
        sweeps = run_store.load(info.common_dir, ids=set()).sweeps
        for sweep in dict.fromkeys(run.sweep for run in rest):
            ids = [run.id for run in rest if run.sweep == sweep]
            limit = sweeps[sweep].max_parallel if sweep in sweeps else None
            lines.append(f"{', '.join(ids)}: submitted as job {submit(info, ids, state.load(info.common_dir).defaults, limit)}")
        return lines

    def follow_log(self, info: worktrees.RepoInfo, run: Run, tail: int | None) -> None:
        """The log in its data dir as it grows (the node's engine is not this machine's), until
        its job has ended and all of it is out."""
        offset = 0
        while True:
            refresh(info)
            current = run_store.load(info.common_dir, ids={run.id}).find(run.id)
            if current.data_dir:
                try:  # the container writes it: never a FIFO (it would block), never through a symlink
                    chunk = untrusted_files.read_bytes(Path(current.data_dir) / LOG, offset=offset)
                except FileNotFoundError:
                    chunk = b""
                offset += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            if current.state not in ACTIVE:
                return
            time.sleep(0.5)


def _check_image(image: str) -> None:
    """An image the nodes could not pull is refused before anything is submitted: it must be
    on this machine's engine (a cluster whose nodes share it) or known to its registry. A
    submit host without an engine cannot tell: the job says so then."""
    try:
        engine = Engine()
        if engine.has_image(image):
            return
        engine.registry_knows(image)
    except EngineUnavailable:
        return
    except GpuspaceError as error:
        raise ImageUnavailable(f"image '{image}' is not on this machine and its registry does not know it: "
                               f"Slurm's nodes could not pull it ({str(error).splitlines()[0][:200]})",
                               hint="push it to a registry the nodes reach, or name another with --image") from None
