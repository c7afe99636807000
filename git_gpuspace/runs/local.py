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

import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterable, TextIO

from .. import allocate, data_dirs, gpus, state, verify
from ..git import worktrees
from ..engine.containers import (
    LABEL_PREEMPTIBLE,
    LABEL_PRIORITY,
    LABEL_REPO,
    LABEL_RUN,
    LABEL_TIME_SLICE,
    ContainerInfo,
    Engine,
)
from ..faults import checkpoint
from ..errors import ClaimBusy, EngineUnavailable, GpusUnavailable, GpuspaceError, LockTimeout, UsageError
from .host_queue import Board, decide, run_key, waiting
from ..installation import SCRIPT_NAME, console_script
from ..leases import leases
from ..lifecycle import RunSpec, create_run, prepare
from ..rollback import Rollback
from ..model import GpuRequest, current_user
from .schedule import Plan, Want
from ..locking import file_lock
from .at_work import alive, lock_path
from ..settings import Settings, settings_for_worktree
from . import store as run_store
from .output_stream import OutputStream
from .progress import Progress
from . import model
from .model import ACTIVE as ACTIVE_RUNS, PREPARING, STARTING, Run, params_env
from .store import Runs
from .wrapper import EXIT_FILE, STARTED, container_command, exit_time, exit_written

WAITING = "waiting:"  # an event that says the queue waits (for GPUs, the GPU claim); said when it changes
BEHIND = "waiting: behind an earlier run"  # a queued run's reason while the first in line waits
POLL_S = 0.1  # the engine is asked at least this often (new runs, vanished containers)
CLAIM_WAIT_S = 1.0  # a turn waits this long for another holder of the GPU claim, then the next turn tries
STOP_WAIT_S = 0.5  # how long a finished run's container may take to stop before it is killed
WATCH_S = 0.01  # ... and the running runs' exit files looked at this often
SEARCH_S = 1.0  # searches (their trials' logs, for pruning) looked at this often, and whenever a run ends
ACTIVE = ("created", "running", "restarting", "paused", "removing")
def dispatch(info: worktrees.RepoInfo, wanted: set[str] | None = None, out: TextIO = sys.stderr,
             poll: float = POLL_S, stop_on_failure: bool = False, stream: OutputStream | None = None) -> list[Run]:
    """Dispatch until none of `wanted` (None: no run of the repo) is queued or running, and
    return those runs (None: those it saw) as they ended. When another dispatcher is alive, follow its progress.
    `stop_on_failure`: once one of `wanted` failed, the queued ones are dropped. `stream`: one
    run's output copied as it is written, all of it before the line that says how it ended."""
    engine = Engine()
    progress = Progress(out, live=stream is None)  # no live block between the lines of a run's output
    with file_lock(lock_path(info.common_dir), wait=False) as mine:
        if not mine:
            progress.event("git-gpuspace: another dispatcher runs this repo's queue; following it")
        engine_down, reaper, said, next_search = False, Reaper(), "", 0.0
        share = HostShare(engine, info)
        seen: set[str] = set()  # with no `wanted`: the runs it saw queued or running, what it returns
        try:
            while True:
                try:
                    lines = _turn(info, engine, reaper, share, wanted if stop_on_failure else None) if mine else []
                except EngineUnavailable as error:  # it comes back by itself: wait, and say so once
                    if not engine_down:
                        progress.event(f"git-gpuspace: {error}; waiting for it (Ctrl-C stops dispatching)")
                    engine_down, lines = True, []
                    time.sleep(1)
                else:
                    engine_down = False
                if mine and (time.monotonic() >= next_search or any(not line.startswith(WAITING) for line in lines)):
                    from . import search  # a search's next trials asked as its runs end, pruned as they print

                    lines += search.step(info)
                    next_search = time.monotonic() + SEARCH_S
                if mine and any(not line.startswith(WAITING) for line in lines):
                    from . import tracking  # only once a run started or ended

                    tracking.ensure_tracker(info)  # the repo's tracker logs it
                active = run_store.load(info.common_dir, states=ACTIVE_RUNS).runs
                seen.update(run.id for run in active if run.backend == "local")
                ours = run_store.load(info.common_dir, ids=seen if wanted is None else wanted).runs
                if stream is not None:
                    stream.pump(ours, drain=not any(run.id == stream.run_id and run.state in ACTIVE_RUNS for run in ours))
                for line in lines:
                    if line.startswith(WAITING):  # said when it starts, or changes, not on every turn it lasts
                        if line != said:
                            progress.event("git-gpuspace: " + line[len(WAITING):].strip())
                        said = line
                        continue
                    progress.event(line)
                if not mine:
                    progress.changes(ours)
                if not any(run.state in ACTIVE_RUNS and run.backend == "local" for run in ours):
                    return ours
                progress.show(ours)
                _watch(active if mine else [], poll)
        finally:
            reaper.close()
            share.close()
            progress.close()


def start_background(info: worktrees.RepoInfo) -> Path:
    """Hand dispatching to a process of its own (unless one is alive), logging to the user's
    state dir. It runs our console script by path, never `python -m` from a worktree."""
    log = lock_path(info.common_dir).with_suffix(".log")
    if not alive(info.common_dir):
        command = [str(console_script() or SCRIPT_NAME)]
        with open(log, "ab") as output:
            subprocess.Popen([*command, "runs", "resume"], cwd=info.anchor, stdin=subprocess.DEVNULL, stdout=output,
                             stderr=subprocess.STDOUT, start_new_session=True)
    return log


def _watch(runs: list[Run], poll: float) -> None:
    """Wait `poll` seconds, or less when a running run's command ends first."""
    running = [run for run in runs if run.state in ("running", "preempted") and run.data_dir]
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


def _turn(info: worktrees.RepoInfo, engine: Engine, reaper: Reaper, share: HostShare,
          stop_group: set[str] | None = None) -> list[str]:
    """One look at the engine, then record what finished and start what can start. Once a run
    of `stop_group` failed, the group's queued runs are dropped, not started. It reads only the
    runs queued or running (and those its containers name): a long history costs nothing here."""
    containers = engine.list_managed()
    ours = _containers_of_runs(info, containers)
    events: list[str] = []
    with run_store.locked(info.common_dir, states=ACTIVE_RUNS) as runs:
        defaults = state.load(info.common_dir).defaults  # under the repo's lock, which `locked` holds
        events += _adopt(engine, runs, ours)
        events += _record_finished(info, engine, runs, ours)
        if stop_group and any(run.state == "failed" for run in [*runs.runs, *_finished(info, stop_group)]
                              if run.id in stop_group):
            for run in runs.runs:
                if run.id in stop_group and run.state == "queued":
                    model.drop(run, "not run: an earlier one failed")
                    events.append(f"{run.id} not run: an earlier one failed")
        # containers of runs that are not running (just finished, or left by a dispatcher that
        # died) hold no GPU for this queue: the next runs start on their GPUs first, then they
        # are removed, which frees the GPUs for everyone else
        running = {run.id for run in runs.runs if run.state in ("running", "preempted")}
        known = {run.id for run in runs.runs} | {run.id for run in _finished(info, set(ours) - running)}
        done = [c for c in containers if c.labels.get(LABEL_REPO) == str(info.common_dir)
                and c.labels.get(LABEL_RUN) in known - running]
        started, reasons_changed = _start_queued(info, engine, runs, defaults, done, containers, share)
        events += started
        if reasons_changed or any(not line.startswith(WAITING) for line in events):
            runs.save()
    if done:
        checkpoint("before-reap")
    reaper.discard(c.id for c in done)  # by id: a retried run's new container has the old name
    return events


def _finished(info: worktrees.RepoInfo, ids: set[str]) -> list[Run]:
    """These runs as the store has them, when they are not queued or running (the rest of the
    turn has those): by id, so that a turn costs the same with any history."""
    return [run for run in run_store.load(info.common_dir, ids=ids).runs if run.state not in ACTIVE_RUNS] if ids else []


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
            if run.data_dir and data_dirs.read_private(Path(run.data_dir), EXIT_FILE) is not None:
                run.reason = None  # it ran, and its container went: _record_finished says how it ended
            else:
                model.requeue(run)
                events.append(f"{run.id} queued again: its start was cut short before its container ran")
            continue
        if container.state == "created":
            try:
                engine.start(container.name)
            except EngineUnavailable:
                raise
            except GpuspaceError as error:  # it never ran; its container is reaped as a finished run's
                events.append(model.could_not_start(run, str(error)))
                continue
        run.reason = None
        events.append(f"{run.id} adopted: its container {container.name} runs")
    return events


def _record_finished(info: worktrees.RepoInfo, engine: Engine, runs: Runs, ours: dict[str, ContainerInfo]) -> list[str]:
    """Record the runs whose commands ended (their exit file says so before the engine does) or
    whose containers vanished."""
    events = []
    for run in runs.runs:
        if run.backend != "local":
            continue  # Slurm's: it starts them, and runs/slurm.py records how they ended
        container = ours.get(run.id)
        ended = container is None or container.state not in ACTIVE or exit_written(run) is not None
        if run.state == "preempted" and run.reason != model.STOPPING:
            if ended:  # its GPUs are free once its container is reaped: back in line
                events.append(model.back_in_line(run))
            elif run.preempted_at and (model.now() - run.preempted_at).total_seconds() > run.grace:
                engine.signal(container.id, "SIGKILL")  # its grace is over
        elif run.state in ("running", "preempted") and ended:
            events.append(finish(run, container, engine))
            if run.check:
                verify.record(info, run, f"{container.image} ({container.image_id})" if container is not None else "?")
    return events


def finish(run: Run, container: ContainerInfo | None, engine: Engine | None = None) -> str:
    """Record how a run ended, from its container (None: gone) and its exit file. Killed from
    outside, it is `interrupted` with no exit code; one whose log or exit code its data disk did
    not take (full, read-only) failed for that, with its command's exit code. Its times are the
    engine's (or its exit file's), not the moment this looked: a dispatcher may come late."""
    began, at = engine.run_times(container.id) if engine is not None and container is not None else (None, None)
    if at is None or (container is not None and container.state in ACTIVE):
        at = exit_time(run) if exit_written(run) is not None else None
    times = {"began": began, "at": at}
    data_dir = Path(run.data_dir) if run.data_dir else None
    raw = data_dirs.read_private(data_dir, EXIT_FILE) if data_dir else None
    text = raw.strip() if raw is not None else None
    written = exit_written(run)
    trouble = data_dirs.disk_trouble(data_dir) if data_dir and container is not None else None
    if container is None:
        code = None
    elif container.state in ACTIVE:  # ended by its exit file, ahead of the engine: the wrapper
        code = written               # exits with that code, so it is the container's
    else:
        code = container.exit_code
    # The wrapper got to its end if it wrote a code, or left no code where `running` was. With
    # `running` still there it did not (unless the disk took no write: read-only), nor with no
    # file at all (unless nothing could be made there).
    ended = (written is not None or (text is not None and text != STARTED)
             or (trouble is not None and (text is None or trouble == "read-only file system")))
    if run.reason in (model.STOPPING, model.PRUNING):
        if written != 0 or run.state != "running":
            return model.end(run, code, **times)
        run.reason = None  # its command ended on its own, succeeding, as the stop came
    if container is None or code is None or not ended:  # killed: the engine or the machine died
        return model.end(run, None, **times)
    if written is None:  # it ended, but its log or exit code is not all there
        cause = trouble or "its log or exit code could not be written"
        return model.end(run, code, f"{cause} in /data ({data_dir})", failed=True, **times)
    # all of it kept: a failure on a full disk says why, most likely
    return model.end(run, code, f"{trouble} in /data ({data_dir})" if trouble and code else None, **times)


def _start_queued(info: worktrees.RepoInfo, engine: Engine, runs: Runs, defaults: dict,
                  released: list[ContainerInfo], containers: list[ContainerInfo], share: HostShare
                  ) -> tuple[list[str], bool]:
    """Start the queued runs the host's plan lets start now (schedule.py: fair share between
    users and repos, reservations, preemption, time slices), on the GPUs it gives them; stop
    (preempt) the running runs it says must yield; post what still waits for every other
    dispatcher to see. Each run left queued says why it waits (its reason, as Slurm's PENDING
    has one). `released`: containers of runs that are not running (their commands ended): their
    GPUs count as free, but a new run starts on one only once the old command has stopped.
    Returns the events, and whether a reason changed."""
    running = Counter(run.sweep for run in runs.runs if run.state in ("running", "preempted"))
    order = {run.id: index for index, run in enumerate(runs.runs)}
    # a preempted run queued again is at the back of its queue, as the plan has it
    queued = sorted((run for run in runs.runs if run.state == "queued" and run.reason != PREPARING
                     and run.backend == "local"),
                    key=lambda run: (-run.priority, run.preempted_at or run.submitted, order[run.id]))
    events: list[str] = []
    waits: dict[str, str] = {}  # run id -> why it is still queued
    ready: list[tuple[Run, Settings]] = []  # may start as far as their sweeps say, in order
    room: dict[str, int] = {}
    for run in queued:
        sweep = runs.sweeps.get(run.sweep) if run.sweep else None
        if sweep and sweep.max_parallel:
            left = room.setdefault(sweep.name, sweep.max_parallel - running[run.sweep])
            if left <= 0:
                waits[run.id] = f"waiting: sweep {sweep.name} runs at most {sweep.max_parallel} at once (--max-parallel)"
                continue
            room[sweep.name] = left - 1
        try:
            ready.append((run, share.settings_of(info, defaults, run, sweep)))
        except EngineUnavailable:
            raise
        except GpuspaceError as error:
            events.append(model.could_not_start(run, str(error)))
    scheduled = [(run, settings) for run, settings in ready if not settings.request.none and settings.pack is None]
    planned = {run.id for run, _ in scheduled}
    plan, inventory = share.plan(info, engine, runs, scheduled, released, containers)
    if plan is not None:
        events += _preempt(info, engine, runs, plan, share)
    blocked = False  # packed runs (--runs-per-gpu) keep their own queue: the first that waits holds the rest
    for run, settings in ready:
        key = run_key(str(info.common_dir), run.id)
        if plan is not None and run.id in planned:
            granted = plan.grants.get(key)
            if granted is None:
                why = plan.waits.get(key, "waiting for GPUs")
                if why.startswith("waiting for") and any(w.startswith("waiting for") for w in waits.values()):
                    waits[run.id] = BEHIND  # no GPU free: the first of ours says who holds them
                else:
                    waits[run.id] = share.reason(info, why, settings, inventory, containers)
                continue
            settings = replace(settings, request=GpuRequest(ids=granted))
        elif blocked and not settings.request.none:
            waits[run.id] = BEHIND
            continue
        worktree = worktrees.find_worktree(info, Path(run.worktree))
        try:
            if worktree is None:
                raise GpuspaceError(f"its worktree {run.worktree} is gone")
            prepared = prepare(settings, engine, frozenset(c.id for c in released))
            prepared.claim_wait = CLAIM_WAIT_S
            for old in [c for c in released if c.labels.get(LABEL_RUN) == run.id]:
                engine.remove(old.id, graceful=False)  # its last try's (a preemption, a retry): the name is the new one's
            from . import tracking  # (mlflow only when the runs go to a server)

            env = {**params_env(run), **tracking.container_env(info, run)}
            spec = RunSpec(container_command(run.command), env, run_labels(run))
            with Rollback() as undo:
                name, chosen, data_dir = create_run(info, prepared, worktree, spec, undo)
                checkpoint("after-run-container")
                _stop_previous(engine, released, [gpu.uuid for gpu in chosen])
                data_dirs.remove_private(data_dir, EXIT_FILE)  # a retried run's last exit code is not this start's
                # The start is recorded before the container can run: a dispatcher killed from
                # here on leaves a run the next one adopts (see _adopt), never one it starts anew.
                model.start(run, STARTING, name, [gpu.uuid for gpu in chosen], str(data_dir),
                            [gpu.index for gpu in chosen])
                runs.save()
                checkpoint("after-run-recorded")
                engine.start(name)
        except GpusUnavailable as error:  # taken between the plan and the claim, or a packed run's
            blocked = True
            waits[run.id] = _waiting_for_gpus(settings.request, error)
            continue
        except LockTimeout as error:  # another command holds the claim: the queue waits for it
            holder = error.holder if isinstance(error, ClaimBusy) else str(error)
            blocked, waits[run.id] = True, f"waiting for the GPU claim, held by {holder}"
            events.append(f"{WAITING} queued runs wait for the GPU claim, held by {holder}")
            continue
        except EngineUnavailable:
            raise  # not the run's fault: the turn is tried again when the engine answers
        except GpuspaceError as error:
            events.append(model.could_not_start(run, str(error)))
            continue
        run.reason = None
        running[run.sweep] += 1
        where = ", ".join(f"GPU {gpu.index}" for gpu in chosen) or "no GPU"
        events.append(f"{run.id} started on {where}: {' '.join(run.command)}")
    head = next((run for run, _ in ready if run.state == "queued" and run.id in waits), None)
    if head is not None and not any(line.startswith(WAITING) for line in events):  # said when it changes
        events.append(f"{WAITING} {head.id} {waits[head.id]}")
    share.post([(run, settings) for run, settings in scheduled if run.state == "queued"], plan)
    changed = False
    for run in queued:
        if run.state == "queued" and run.reason != waits.get(run.id):
            run.reason, changed = waits.get(run.id), True
    return events, changed


def run_labels(run: Run) -> dict[str, str]:
    """What the host's scheduler reads of a run from its container (host_queue.holdings)."""
    labels = {LABEL_RUN: run.id, LABEL_PRIORITY: str(run.priority),
              LABEL_PREEMPTIBLE: "true" if run.preemptible else "false"}
    if run.time_slice:
        labels[LABEL_TIME_SLICE] = f"{run.time_slice:g}"
    return labels


def _preempt(info: worktrees.RepoInfo, engine: Engine, runs: Runs, plan: Plan, share: HostShare) -> list[str]:
    """This repo's running runs the plan says must yield their GPUs: recorded `preempted`, then
    their commands get SIGTERM (the grace period is watched by _record_finished). A dispatcher
    killed in between leaves a preempted run whose command the next one signals."""
    events = []
    for run in runs.runs:
        key = run_key(str(info.common_dir), run.id)
        if run.backend != "local" or not run.container:
            continue
        if run.state == "running" and run.reason is None and key in plan.preempt:
            events.append(model.preempt(run, plan.preempt[key]))
            runs.save()
            checkpoint("after-preempt-recorded")
        if run.state == "preempted" and (run.id, run.preempted_at) not in share.signalled:
            engine.signal(run.container, "SIGTERM")
            share.signalled.add((run.id, run.preempted_at))
    return events


class HostShare:
    """This dispatcher's part in the host's queue (host_queue.py): its post of what waits, each
    queued run's settings (read from its worktree once), and which preempted runs it signalled."""

    def __init__(self, engine: Engine, info: worktrees.RepoInfo) -> None:
        self.board = Board(engine, str(info.common_dir))
        self.settings: dict[str, Settings] = {}
        self.signalled: set[tuple] = set()  # (run id, when its preemption began)
        self.wants: dict[str, Want] = {}  # run id -> its request, as last planned
        self.inventory: list = []  # the GPUs as last planned

    def settings_of(self, info: worktrees.RepoInfo, defaults: dict, run: Run, sweep) -> Settings:
        if run.id not in self.settings:
            worktree = worktrees.find_worktree(info, Path(run.worktree))
            if worktree is None:
                raise GpuspaceError(f"its worktree {run.worktree} is gone")
            settings = settings_for_worktree(info, defaults, dict(run.flags), False, worktree, notices=False)
            if sweep and sweep.runs_per_gpu > 1:
                settings = replace(settings, pack=(f"{info.common_dir}:{sweep.name}", sweep.runs_per_gpu))
            self.settings[run.id] = settings
        return self.settings[run.id]

    def plan(self, info: worktrees.RepoInfo, engine: Engine, runs: Runs, scheduled: list[tuple[Run, Settings]],
             released: list[ContainerInfo], containers: list[ContainerInfo]) -> tuple[Plan | None, list]:
        """The host's plan, with this repo's runs that need GPUs among what waits; None when
        nothing of ours waits and no other post could want our preemptible runs' GPUs."""
        if not scheduled and not any(run.state in ("running", "preempted") and run.preemptible for run in runs.runs):
            return None, []
        inventory = self.inventory = gpus.inventory()
        others = waiting(engine, self.board, {gpu.uuid for gpu in inventory})
        if not scheduled and not others:
            return None, inventory
        repo, user = str(info.common_dir), current_user()
        self.wants = {run.id: Want(key=run_key(repo, run.id), user=user, repo=repo,
                                   count=_count(settings.request, inventory), priority=run.priority,
                                   since=(run.preempted_at or run.submitted).timestamp(), preempt=run.preempt,
                                   gpus=_named(settings.request, inventory))
                      for run, settings in scheduled}
        holders = [c for c in containers if c.id not in {r.id for r in released}]
        return decide(engine, holders, inventory, list(self.wants.values()), self.board, others), inventory

    def reason(self, info: worktrees.RepoInfo, why: str, settings: Settings, inventory: list,
               containers: list[ContainerInfo]) -> str:
        """The plan's words, with this repo's runs named by id; `waiting for N GPUs` says who
        holds them."""
        why = why.replace(f"{info.common_dir}#", "")
        if why.startswith("waiting for"):
            try:
                allocate.choose(settings.request, inventory, leases(containers), settings.share, settings.pack)
            except GpusUnavailable as error:
                return _waiting_for_gpus(settings.request, error)
            except GpuspaceError:
                pass
        return why

    def post(self, waiting_runs: list[tuple[Run, Settings]], plan: Plan | None) -> None:
        """What of ours still waits, for the other dispatchers' plans (taken down when nothing does)."""
        if plan is None or not waiting_runs:
            self.close()
            return
        image = next((settings.image for _, settings in waiting_runs if settings.build is None), "")
        try:
            self.board.post(image, [self.wants[run.id] for run, _ in waiting_runs if run.id in self.wants],
                            [gpu.uuid for gpu in self.inventory])
        except GpuspaceError:
            pass  # no post this turn (the image is not there yet): the plan still stands for ours

    def close(self) -> None:
        try:
            self.board.clear()
        except GpuspaceError:
            pass  # a dead poster's post is removed by whoever reads it


def _count(request: GpuRequest, inventory: list) -> int:
    return len(inventory) if request.all else request.count or len(request.ids) or 1


def _named(request: GpuRequest, inventory: list) -> tuple[str, ...]:
    """The UUIDs of the GPUs asked for by index or UUID (`--gpus 0,1`); unknown ones as given
    (the plan then says they are not usable here)."""
    by_index = {str(gpu.index): gpu.uuid for gpu in inventory}
    return tuple(by_index.get(gpu_id, gpu_id) for gpu_id in request.ids)


def _waiting_for_gpus(request, error: GpusUnavailable) -> str:
    """`waiting for 1 GPU: GPUs 0-3 held by /w/hold (hold)`: what a queued run needs, and who
    holds what it could have."""
    if request is None or request.all:
        wanted = "all GPUs" if request is not None else "GPUs"
    elif request.count:
        wanted = f"{request.count} GPU{'s' if request.count > 1 else ''}"
    else:
        wanted = f"GPU{'s' if len(request.ids) > 1 else ''} {','.join(request.ids)}"
    if not error.held:
        return f"waiting for {wanted}: {error}"
    by_holder: dict[str, list[int]] = {}
    for index, who in sorted(error.held.items()):
        by_holder.setdefault(who or "a process outside gpuspace", []).append(index)
    return f"waiting for {wanted}: " + "; ".join(
        f"GPU{'s' if len(indices) > 1 else ''} {_span(indices)} held by {who}" for who, indices in by_holder.items())


def _span(indices: list[int]) -> str:
    """0,1,2,3,5 -> 0-3,5"""
    parts: list[list[int]] = []
    for index in indices:
        if parts and index == parts[-1][-1] + 1:
            parts[-1].append(index)
        else:
            parts.append([index])
    return ",".join(f"{part[0]}-{part[-1]}" if len(part) > 2 else ",".join(map(str, part)) for part in parts)


def _stop_previous(engine: Engine, released: list[ContainerInfo], gpus: list[str]) -> None:
    """The containers on these GPUs whose commands ended have stopped before a new one starts:
    a command ends a moment before its container, and one that wrote its exit file early
    and ran on is stopped now, not by the reaper later."""
    for container in released:
        if container.state in ACTIVE and set(container.gpus) & set(gpus):
            if not engine.wait_stopped(container.id, STOP_WAIT_S):
                engine.remove(container.id, graceful=False)


class LocalBackend:
    """This machine's engine: runs start on its free GPUs from a dispatcher of this repo's (in
    the foreground, or in the background with --detach)."""

    name = "local"

    def preflight(self, info: worktrees.RepoInfo, asked, settings) -> None:
        have = len(gpus.inventory())
        if settings.request.count and settings.request.count > have:
            raise GpusUnavailable(f"each run asks for {settings.request.count} GPUs, but this host has {have}",
                                  hint="lower --gpus, or run them on a cluster: --backend slurm")
        Engine().ensure_image(settings.image)  # a pull, before anything is queued and outside the lock

    def launch(self, info: worktrees.RepoInfo, ids: list[str], max_parallel: int | None, detach: bool,
               stop_on_failure: bool = False) -> list[str]:
        if not detach:
            return []  # `wait` dispatches them
        log = start_background(info)
        return [f"Dispatching in the background (log: {log}); `git gpuspace runs` shows how they do"]

    def poll(self, info: worktrees.RepoInfo) -> list[str]:
        return []  # the dispatcher records what became of each run as it happens

    def wait(self, info: worktrees.RepoInfo, wanted: set[str] | None, stop_on_failure: bool = False,
             stream: OutputStream | None = None) -> list[Run]:
        return dispatch(info, wanted, stop_on_failure=stop_on_failure, stream=stream)

    def cancel(self, info: worktrees.RepoInfo, runs: list[Run]) -> list[str]:
        engine = Engine()
        for run in runs:
            if run.container:
                engine.stop(run.container, (str(info.common_dir), run.worktree))
        by_run = {c.labels.get(LABEL_RUN): c for c in engine.list_managed()
                  if c.labels.get(LABEL_REPO) == str(info.common_dir)}
        lines = []
        with run_store.locked(info.common_dir, ids={run.id for run in runs}) as current:
            for run in current.runs:
                if run.id in {r.id for r in runs} and run.state in ("running", "preempted"):
                    lines.append(finish(run, by_run.get(run.id), engine))
                    if run.id in by_run:
                        engine.remove(by_run[run.id].name)
            current.save()
        return lines

    def recover(self, info: worktrees.RepoInfo) -> list[str]:
        return []  # nothing was handed over: the queue is the dispatcher's to take

    def follow_log(self, info: worktrees.RepoInfo, run: Run, tail: int | None) -> None:
        """From the engine, once the run has a container (a queued one is waited for)."""
        if run.state == "queued" and not alive(info.common_dir):
            raise UsageError(f"run {run.id} has not started yet (queued) and no dispatcher runs the queue",
                             hint="git gpuspace runs resume")
        while run is not None and run.state == "queued":
            time.sleep(POLL_S)
            run = run_store.load(info.common_dir, ids={run.id}).find(run.id)
        if run is not None and run.state == "running" and run.container:
            Engine().logs(run.container, follow=True, tail=tail if tail is not None else "all",
                          output=sys.stdout.buffer)
