"""The host's queue: who holds the GPUs and who waits for them, across every repo and user of the
engine, read from the engine itself; and this process's entry among those waiting.

What is held comes from our containers' labels (a run's priority, whether it is preemptible, its
time slice, when it was made). What waits is posted on the engine as a never-started container
named `gpuspace-want-<digest>`, one per waiting queue (a repo's dispatcher) or `add --wait`,
labelled with its requests as JSON and with who posted them, as the GPU claim is: a poster that
is provably dead (kill -9) is removed by whoever reads it. Every dispatcher and `add` then
computes the same plan (schedule.plan, a pure function), so no process hands out GPUs.

Anyone who can reach the engine can post, so what is read is data: bounded in size and count,
checked field by field. A post is made anew every REFRESH_S while it waits, and one not made anew
for STALE_S is ignored, so a poster that died where its death cannot be proved (another pid
namespace or machine) holds nothing back for long. Who can reach the engine is root on the host
in all but name: a post's user is its own word, and the worst a forged post can do is to make
others wait (or preempt runs that agreed to be preempted).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import time
from dataclasses import asdict
from typing import Iterable

from .. import gpus
from ..engine.claim import Holder as Poster, provably_dead, this_process
from ..engine.containers import (
    LABEL_PREEMPTIBLE,
    LABEL_PRIORITY,
    LABEL_REPO,
    LABEL_RUN,
    LABEL_TIME_SLICE,
    LABEL_WANT_GPUS,
    LABEL_WANTS,
    LABEL_WORKTREE,
    WANT_PREFIX,
    ContainerInfo,
    Engine,
    NameInUse,
)
from ..model import Gpu
from .schedule import Holding, Plan, Want, plan

MAX_WANTS = 64  # per poster: more than a machine has GPUs is never granted at once
MAX_TEXT = 64 << 10
REFRESH_S = 30.0  # a post is made anew this often while it waits ...
STALE_S = 120.0  # ... and one older than this is ignored: its poster is gone (or cannot be seen to be alive)


def run_key(repo: str, run_id: str) -> str:
    return f"{repo}#{run_id}"


def holdings(containers: Iterable[ContainerInfo]) -> list[Holding]:
    """One per GPU per container of ours (any repo, any user): a bound worktree's is never
    preemptible; a run's says what its labels say."""
    held = []
    for container in containers:
        labels = container.labels
        is_run = LABEL_RUN in labels
        key = run_key(labels.get(LABEL_REPO, ""), labels[LABEL_RUN]) if is_run else labels.get(LABEL_WORKTREE) or container.name
        for uuid in container.gpus:
            held.append(Holding(gpu=uuid, user=container.holder.user, repo=labels.get(LABEL_REPO, ""), key=key,
                                priority=_number(labels.get(LABEL_PRIORITY), int) or 0,
                                preemptible=is_run and labels.get(LABEL_PREEMPTIBLE) == "true",
                                started=container.created, time_slice=_number(labels.get(LABEL_TIME_SLICE), float)))
    return held


def usable(inventory: list[Gpu], containers: list[ContainerInfo]) -> list[str]:
    """The GPUs the plan may hand out, in index order: not those a process outside gpuspace
    computes on."""
    busy = gpus.busy_outside({c.id for c in containers if c.id})
    return [gpu.uuid for gpu in sorted(inventory, key=lambda gpu: gpu.index) if gpu.uuid not in busy]


class Board:
    """This process's requests among those the host's dispatchers read: posted when they
    change, taken down when none waits (or the process ends)."""

    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.name = WANT_PREFIX + hashlib.sha256(owner.encode()).hexdigest()[:16]
        self.posted: tuple[str, str, float] | None = None  # (container id, what it says, when)

    def post(self, image: str, wants: list[Want], gpus: list[str]) -> None:
        """`gpus`: the UUIDs this poster sees; its post counts for those who share one of them."""
        text = json.dumps([asdict(want) for want in wants[:MAX_WANTS]], sort_keys=True, separators=(",", ":"))
        if self.posted is not None and self.posted[1] == text and time.monotonic() - self.posted[2] < REFRESH_S:
            return
        self.clear()
        if not wants:
            return
        labels = {LABEL_WANTS: text, LABEL_WANT_GPUS: ",".join(gpus), **this_process().labels()}
        for _ in range(2):
            try:
                self.posted = (self.engine.create_claim(self.name, image, labels), text, time.monotonic())
                return
            except NameInUse:  # left by a poster of ours that died: gone once it is provably dead
                found = self.engine.labels_of(self.name)
                if found is not None and not provably_dead(Poster.from_labels(found[1]), this_process()):
                    return  # a live one (another pid namespace?): its requests stand for these
                if found is not None:
                    self.engine.remove_id(found[0])

    def clear(self) -> None:
        if self.posted is not None:
            self.engine.remove_id(self.posted[0])
            self.posted = None


def waiting(engine: Engine, own: Board | None, gpus: set[str]) -> list[Want]:
    """What every other poster that shares one of `gpus` waits for (a post for other GPUs is
    not ours to weigh: the engine may serve hosts or test stand-ins with GPUs of their own);
    the posts of the provably dead are removed."""
    me = this_process()
    found: list[Want] = []
    for container_id, name, labels in engine.list_wants():
        if own is not None and name == own.name:
            continue
        poster = Poster.from_labels(labels)
        if provably_dead(poster, me):
            engine.remove_id(container_id)
            continue
        if _age(poster.created) > STALE_S:
            continue  # not made anew for long: its poster is gone where we cannot see it (another machine?)
        if not gpus & set(str(labels.get(LABEL_WANT_GPUS, "")).split(",")):
            continue
        found += _wants(labels.get(LABEL_WANTS), poster.user)
    return found


def decide(engine: Engine, containers: list[ContainerInfo], inventory: list[Gpu], mine: list[Want],
           own: Board | None = None, others: list[Want] | None = None) -> Plan:
    """The plan for the whole machine, with `mine` among what waits (mine win over a post that
    names the same key). `others`: the posts, when read already."""
    keys = {want.key for want in mine}
    if others is None:
        others = waiting(engine, own, {gpu.uuid for gpu in inventory})
    others = [want for want in others if want.key not in keys]
    return plan(usable(inventory, containers), holdings(containers), [*mine, *others], time.time())


def _age(created: str) -> float:
    """Seconds since a post was made, by its label; unknown or unreadable: as old as can be."""
    try:
        when = _dt.datetime.fromisoformat(created)
    except ValueError:
        return math.inf
    if when.tzinfo is None:
        return math.inf
    return (_dt.datetime.now(_dt.timezone.utc) - when).total_seconds()


def _wants(text: object, user: str | None) -> list[Want]:
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        return []
    found = []
    for entry in entries[:MAX_WANTS] if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        key, claimed = entry.get("key"), entry.get("user")
        count, priority, since = entry.get("count"), entry.get("priority", 0), entry.get("since", 0.0)
        named = entry.get("gpus") or []
        if not (isinstance(key, str) and isinstance(claimed, str) and isinstance(count, int) and 1 <= count <= 1024
                and isinstance(priority, int) and isinstance(since, (int, float)) and math.isfinite(since)
                and isinstance(named, list) and all(isinstance(gpu, str) for gpu in named)):
            continue
        found.append(Want(key=key[:512], user=user or claimed[:64], repo=str(entry.get("repo", ""))[:4096],
                          count=count, priority=max(-10**6, min(10**6, priority)), since=float(since),
                          preempt=entry.get("preempt") is True, interactive=entry.get("interactive") is True,
                          gpus=tuple(named[:64])))
    return found


def _number(text: str | None, kind: type) -> int | float | None:
    try:
        value = kind(text) if text is not None else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None
