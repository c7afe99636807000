"""The dispatcher: start queued runs on free GPUs, record what finished. One per repo, holding a
lock outside the git dir (a container cannot hold it) while it lives.

The engine is the source of truth for what ran: a run's container carries its id in a label and
its exit code is the container's. Each turn lists the engine once, records runs whose
commands ended (then removes the container, which frees its GPUs in the host-wide ledger) or
whose containers vanished (`interrupted`), and starts queued runs in order while GPUs are free.
Between turns it watches the running runs' exit files, so a finished run's GPU goes on as soon
as its command ends, not when the engine gets round to saying so. A dispatcher that dies loses
nothing: the next one does the same from what it finds.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterable, TextIO

import platformdirs

from .. import state, verify, workspace, worktrees
from ..config import APP_NAME
from ..containers import LABEL_REPO, LABEL_RUN, ContainerInfo, Engine
from ..faults import checkpoint
from ..errors import ClaimBusy, EngineUnavailable, GpusUnavailable, GpuspaceError, LockTimeout
from ..lifecycle import Rollback, RunSpec, create_run, prepare
from ..locking import file_lock
from ..settings import settings_for_worktree
from . import store as run_store
from .progress import Progress
from .model import Run, now, params_env
from .store import Runs
from .wrapper import EXIT_FILE, STARTED, container_command, exit_written

WAITING = "waiting:"  # an event that says the queue waits (for the GPU claim); said once
POLL_S = 0.1  # the engine is asked at least this often (new runs, vanished containers)
CLAIM_WAIT_S = 1.0  # a turn waits this long for another holder of the GPU claim, then the next turn tries
STOP_WAIT_S = 0.5  # how long a finished run's container may take to stop before it is killed
WATCH_S = 0.01  # ... and the running runs' exit files looked at this often
PREPARING = "preparing"  # reason of a queued run whose worktree is still being made
# reason of a running run whose container exists and whose start was recorded, but which may not
# have been started yet: the dispatcher that comes next starts that container, never a new one
STARTING = "starting"
ACTIVE = ("created", "running", "restarting", "paused", "removing")
def lock_path(common_dir: Path) -> Path:
    digest = hashlib.sha256(str(common_dir).encode()).hexdigest()[:16]
    directory = platformdirs.user_state_path(APP_NAME) / "dispatch"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{digest}.lock"


def dispatch(info: worktrees.RepoInfo, wanted: set[str] | None = None, out: TextIO = sys.stderr,
             poll: float = POLL_S, stop_on_failure: bool = False) -> list[Run]:
    """Dispatch until none of `wanted` (None: no run of the repo) is queued or running, and
    return those runs as they ended. When another dispatcher is alive, follow its progress.
    `stop_on_failure`: once one of `wanted` failed, the queued ones are dropped."""
    engine = Engine()
    progress = Progress(out)
    with file_lock(lock_path(info.common_dir), wait=False) as mine:
        if not mine:
            progress.event("git-gpuspace: another dispatcher runs this repo's queue; following it")
        engine_down, reaper, waiting = False, Reaper(), ""
        try:
            while True:
                try:
                    lines = _turn(info, engine, reaper, wanted if stop_on_failure else None) if mine else []
                except EngineUnavailable as error:  # it comes back by itself: wait, and say so once
                    if not engine_down:
                        progress.event(f"git-gpuspace: {error}; waiting for it (Ctrl-C stops dispatching)")
                    engine_down, lines = True, []
                    time.sleep(1)
                else:
                    engine_down = False
                for line in lines:
                    if line.startswith(WAITING):  # said when it starts, not on every turn it lasts
                        if line != waiting:
                            progress.event("git-gpuspace: " + line[len(WAITING):].strip())
                        waiting = line
                        continue
                    waiting = ""
                    progress.event(line)
                current = run_store.load(info.common_dir)
                mine_or_all = [run for run in current.runs if wanted is None or run.id in wanted]
                if not mine:
                    progress.changes(mine_or_all)
                if not any(run.state in ("queued", "running") and run.backend == "local" for run in mine_or_all):
                    return mine_or_all
                progress.show(mine_or_all)
                _watch(current if mine else None, poll)
        finally:
            reaper.close()
            progress.close()


def start_background(info: worktrees.RepoInfo) -> Path:
    """Hand dispatching to a process of its own (unless one is alive), logging to the user's
    state dir. It runs our console script by path, never `python -m` from a worktree."""
    log = lock_path(info.common_dir).with_suffix(".log")
    if not alive(info):
        script = Path(sys.executable).parent / "git-gpuspace"
        command = [str(script)] if script.exists() else [shutil.which("git-gpuspace") or "git-gpuspace"]
        with open(log, "ab") as output:
            subprocess.Popen([*command, "runs", "resume"], cwd=info.anchor, stdin=subprocess.DEVNULL, stdout=output,
                             stderr=subprocess.STDOUT, start_new_session=True)
    return log


def alive(info: worktrees.RepoInfo) -> bool:
    """Is a dispatcher holding this repo's queue?"""
    with file_lock(lock_path(info.common_dir), wait=False) as free:
        return not free


def _watch(runs: Runs | None, poll: float) -> None:
    """Wait `poll` seconds, or less when a running run's command ends first."""
    running = [run for run in (runs.runs if runs else []) if run.state == "running" and run.data_dir]
    deadline = time.monotonic() + poll
    while time.monotonic() < deadline:
        if any(exit_written(run) is not None for run in running):
            return
        time.sleep(min(WATCH_S, poll))


class Reaper:
    """Removes finished runs' containers on a thread of its own (with its own engine
    connection): the dispatcher goes on watching for the next run to end meanwhile."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="reaper", daemon=True)
        self._thread.start()

    def discard(self, ids: Iterable[str]) -> None:
        for container_id in set(ids) - self.pending:
            self.pending.add(container_id)
            self._queue.put(container_id)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        engine = None
        while (container_id := self._queue.get()) is not None:
            try:
                engine = engine or Engine()
                engine.remove(container_id, graceful=False)  # its command ended: nothing of it may run on
            except GpuspaceError:
                pass  # still there: the next turn finds it again
            self.pending.discard(container_id)


def _turn(info: worktrees.RepoInfo, engine: Engine, reaper: Reaper, stop_group: set[str] | None = None) -> list[str]:
    """One look at the engine, then record what finished and start what can start. Once a run
    of `stop_group` failed, the group's queued runs are dropped, not started."""
    containers = engine.list_managed()
    events: list[str] = []
    with state.locked(info.common_dir) as current:
        runs = run_store.load(info.common_dir)
        events += _adopt(engine, runs, _containers_of_runs(info, containers))
        events += _record_finished(info, runs, containers)
        group = [run for run in runs.runs if stop_group is not None and run.id in stop_group]
        if any(run.state == "failed" for run in group):
            for run in group:
                if run.state == "queued":
                    run.state, run.reason, run.finished = "stopped", "not run: an earlier one failed", now()
                    events.append(f"{run.id} not run: an earlier one failed")
        # containers of runs that are not running (just finished, or left by a dispatcher that
        # died) hold no GPU for this queue: the next runs start on their GPUs first, then they
        # are removed, which frees the GPUs for everyone else
        by_id = {run.id: run for run in runs.runs}
        done = [c for c in containers if c.labels.get(LABEL_REPO) == str(info.common_dir)
                and c.labels.get(LABEL_RUN) in by_id and by_id[c.labels[LABEL_RUN]].state != "running"]
        events += _start_queued(info, engine, runs, current.defaults, done)
        if any(not line.startswith(WAITING) for line in events):
            runs.save()
    if done:
        checkpoint("before-reap")
    reaper.discard(c.id for c in done)  # by id: a retried run's new container has the old name
    return events


def _containers_of_runs(info: worktrees.RepoInfo, containers: list[ContainerInfo]) -> dict[str, ContainerInfo]:
    return {c.labels[LABEL_RUN]: c for c in containers
            if c.labels.get(LABEL_REPO) == str(info.common_dir) and LABEL_RUN in c.labels}


def _adopt(engine: Engine, runs: Runs, ours: dict[str, ContainerInfo]) -> list[str]:
    """Finish the starts a dispatcher that died left half done. A run whose start was recorded
    has its container started (a no-op if it was), never made anew. One whose container is
    gone and whose command left no exit file (cleared before the start was recorded) never ran:
    the container is removed only when its start failed. It is queued again."""
    events = []
    for run in runs.runs:
        if run.backend != "local" or run.state != "running" or run.reason != STARTING:
            continue
        container = ours.get(run.id)
        if container is None:
            if run.data_dir and workspace.read_private(Path(run.data_dir), EXIT_FILE) is not None:
                run.reason = None  # it ran, and its container went: _record_finished says how it ended
            else:
                run.state, run.reason, run.started, run.container = "queued", None, None, None
                events.append(f"{run.id} queued again: its start was cut short before its container ran")
            continue
        if container.state == "created":
            try:
                engine.start(container.name)
            except EngineUnavailable:
                raise
            except GpuspaceError as error:  # it never ran; its container is reaped as a finished run's
                run.state, run.reason, run.exit_code, run.finished = "failed", f"could not start: {error}", None, now()
                events.append(f"{run.id} failed: could not start: {error}")
                continue
        run.reason = None
        events.append(f"{run.id} adopted: its container {container.name} runs")
    return events


def _record_finished(info: worktrees.RepoInfo, runs: Runs, containers: list[ContainerInfo]) -> list[str]:
    """Record the runs whose commands ended (their exit file says so before the engine does) or
    whose containers vanished."""
    ours = _containers_of_runs(info, containers)
    events = []
    for run in runs.runs:
        if run.backend != "local":
            continue  # Slurm's: it starts them, and runs/slurm.py records how they ended
        container = ours.get(run.id)
        if run.state == "running" and (container is None or container.state not in ACTIVE
                                       or exit_written(run) is not None):
            events.append(finish(run, container))
            if run.check:
                verify.record(info, run, f"{container.image} ({container.image_id})" if container is not None else "?")
    return events


def finish(run: Run, container: ContainerInfo | None) -> str:
    """Record how a run ended, from its container (None: gone) and its exit file; retry it while
    it may. Killed from outside, it is `interrupted` with no exit code; one whose log or exit code
    its data disk did not take (full, read-only) failed for that, with its command's exit code."""
    stopping = run.reason == "stopping"
    data_dir = Path(run.data_dir) if run.data_dir else None
    raw = workspace.read_private(data_dir, EXIT_FILE) if data_dir else None
    text = raw.strip() if raw is not None else None
    written = exit_written(run)
    trouble = workspace.disk_trouble(data_dir) if data_dir and container is not None else None
    run.finished, run.reason = now(), None
    if container is None:
        run.exit_code = None
    elif container.state in ACTIVE:  # ended by its exit file, ahead of the engine: the wrapper
        run.exit_code = written     # exits with that code, so it is the container's
    else:
        run.exit_code = container.exit_code
    # The wrapper got to its end if it wrote a code, or left no code where `running` was. With
    # `running` still there it did not (unless the disk took no write: read-only), nor with no
    # file at all (unless nothing could be made there).
    ended = (written is not None or (text is not None and text != STARTED)
             or (trouble is not None and (text is None or trouble == "read-only file system")))
    if stopping:
        run.state = "stopped"
    elif container is None or run.exit_code is None or not ended:  # killed: the engine or the machine died
        run.state, run.reason, run.exit_code = "failed", "interrupted", None
    elif written is None:  # it ended, but its log or exit code is not all there
        cause = trouble or "its log or exit code could not be written"
        run.state, run.reason = "failed", f"{cause} in /data ({data_dir})"
    else:  # all of it kept: a failure on a full disk says why, most likely
        run.state = "succeeded" if run.exit_code == 0 else "failed"
        run.reason = f"{trouble} in /data ({data_dir})" if trouble and run.exit_code else None
    line = f"{run.id} {run.state}" + (f" ({run.reason})" if run.reason else f" (exit {run.exit_code})") \
        + f" after {_seconds(run)}"
    if run.state == "failed" and run.retries > 0:
        run.retries -= 1
        line += f"; queued again ({run.retries} retr{'y' if run.retries == 1 else 'ies'} left)"
        run.state, run.started, run.finished, run.container = "queued", None, None, None
    return line


def _start_queued(info: worktrees.RepoInfo, engine: Engine, runs: Runs, defaults: dict,
                  released: list[ContainerInfo]) -> list[str]:
    """Start queued runs in order while GPUs are free. `released`: containers of runs that are
    not running (their commands ended): their GPUs count as free, but a new run starts on one
    only once the old command has stopped."""
    running = Counter(run.sweep for run in runs.runs if run.state == "running")
    order = {run.id: index for index, run in enumerate(runs.runs)}
    queued = sorted((run for run in runs.runs if run.state == "queued" and run.reason != PREPARING
                     and run.backend == "local"),
                    key=lambda run: (-run.priority, order[run.id]))
    events = []
    for run in queued:
        sweep = runs.sweeps.get(run.sweep) if run.sweep else None
        if sweep and sweep.max_parallel and running[run.sweep] >= sweep.max_parallel:
            continue
        worktree = worktrees.find_worktree(info, Path(run.worktree))
        try:
            if worktree is None:
                raise GpuspaceError(f"its worktree {run.worktree} is gone")
            settings = settings_for_worktree(info, defaults, dict(run.flags), False, worktree, notices=False)
            if sweep and sweep.runs_per_gpu > 1:
                settings = replace(settings, pack=(f"{info.common_dir}:{sweep.name}", sweep.runs_per_gpu))
            plan = prepare(settings, engine, frozenset(c.id for c in released))
            plan.claim_wait = CLAIM_WAIT_S
            spec = RunSpec(container_command(run.command), params_env(run),
                           {LABEL_RUN: run.id})
            with Rollback() as undo:
                name, chosen, data_dir = create_run(info, plan, worktree, spec, undo)
                checkpoint("after-run-container")
                _stop_previous(engine, released, [gpu.uuid for gpu in chosen])
                workspace.remove_private(data_dir, EXIT_FILE)  # a retried run's last exit code is not this start's
                # The start is recorded before the container can run: a dispatcher killed from
                # here on leaves a run the next one adopts (see _adopt), never one it starts anew.
                run.state, run.started, run.reason = "running", now(), STARTING
                run.container, run.gpus, run.data_dir = name, [gpu.uuid for gpu in chosen], str(data_dir)
                runs.save()
                checkpoint("after-run-recorded")
                engine.start(name)
        except GpusUnavailable:
            break  # the first in line waits for GPUs, so runs start in submission order
        except LockTimeout as error:  # another command holds the claim: the queue waits for it
            holder = error.holder if isinstance(error, ClaimBusy) else str(error)
            events.append(f"{WAITING} queued runs wait for the GPU claim, held by {holder}")
            break
        except EngineUnavailable:
            raise  # not the run's fault: the turn is tried again when the engine answers
        except GpuspaceError as error:
            run.state, run.reason, run.finished = "failed", f"could not start: {error}", now()
            run.started = run.container = None
            events.append(f"{run.id} failed: could not start: {error}")
            continue
        run.reason = None
        running[run.sweep] += 1
        where = ", ".join(f"GPU {gpu.index}" for gpu in chosen) or "no GPU"
        events.append(f"{run.id} started on {where}: {' '.join(run.command)}")
    return events


def _stop_previous(engine: Engine, released: list[ContainerInfo], gpus: list[str]) -> None:
    """The containers on these GPUs whose commands ended have stopped before a new one starts:
    a command ends a moment before its container, and one that wrote its exit file early
    and ran on is stopped now, not by the reaper later."""
    for container in released:
        if container.state in ACTIVE and set(container.gpus) & set(gpus):
            if not engine.wait_stopped(container.id, STOP_WAIT_S):
                engine.remove(container.id, graceful=False)


def _seconds(run: Run) -> str:
    return f"{run.duration_s:.1f} s" if run.duration_s is not None else "-"
