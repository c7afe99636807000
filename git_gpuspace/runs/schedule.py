"""Who gets the machine's GPUs next: a pure function of the GPUs, who holds them and who waits.

Every dispatcher of every repo and user on one engine computes the same plan from the same
inputs (read from container labels and the queues), so no one has to hand out GPUs centrally.

The rules, in the order they apply:

- Order. Requests that may preempt come first (they could take a GPU from a run anyway, so
  they take free ones before making anyone stop). Then fair share: the user holding the fewest
  GPUs goes first, users holding as many go first come, first served (the oldest request of
  each). Within one user: higher priority first, then an interactive request (a person waits),
  then the repo holding fewer GPUs, then the older request. Counts change as GPUs are granted,
  so two users' sweeps share the free GPUs instead of the first taking them all.
- Reservation. The first request in that order that does not fit holds back the free GPUs it
  could use; nobody after it may take them, so a request for several GPUs collects them as
  they free and is not starved by a stream of 1-GPU runs. A request that can never fit (more
  GPUs than there are, or a GPU that is not usable) holds nothing back.
- Preemption. A request with `preempt` that does not fit takes GPUs from preemptible holders:
  an interactive one (`add --preempt`) from any, a run only from runs of lower priority; lowest
  priority first, then the most recently started (it has lost the least). A holder goes whole;
  a non-preemptible one is never touched; nobody is preempted when that would not let the
  request start, nor for a request that fits without it.
- Time slicing. A preemptible holder with a time slice that has held its GPUs at least that
  long is preempted when a request of the same priority waits and its GPUs would let that
  request start; the caller sends the run to the back of its queue.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass(frozen=True)
class Holding:
    """A GPU in use, one per GPU per holder, as read from a container's labels."""

    gpu: str  # GPU UUID
    user: str
    repo: str  # the repo's common dir ("" when unknown)
    key: str  # the holder: a run's "<repo>#<run id>", or a bound worktree's path
    priority: int = 0
    preemptible: bool = False
    started: float = 0.0  # epoch seconds its current start began
    time_slice: float | None = None  # seconds it may keep its GPUs while others of its priority wait


@dataclass(frozen=True)
class Want:
    """A request waiting for GPUs: the head of a run queue, or `add --wait`/`--preempt`."""

    key: str  # "<repo>#<run id>" or a worktree path; unique among the wants
    user: str
    repo: str
    count: int = 1  # GPUs it needs (>= 1); ignored when `gpus` names them
    priority: int = 0
    since: float = 0.0  # epoch seconds it was submitted (first come, first served)
    preempt: bool = False  # may take GPUs from preemptible holders
    interactive: bool = False  # `add --wait/--preempt`: a person waits
    gpus: tuple[str, ...] = ()  # the GPUs it asked for by name (`--gpus 0,1`), else any

    @property
    def need(self) -> int:
        return len(set(self.gpus)) or self.count


@dataclass(frozen=True)
class Plan:
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # want key -> GPUs it takes now
    reserved: dict[str, tuple[str, ...]] = field(default_factory=dict)  # want key -> GPUs held back for it
    preempt: dict[str, str] = field(default_factory=dict)  # holder key -> why it must stop
    waits: dict[str, str] = field(default_factory=dict)  # want key -> why it waits, one line


def plan(gpus: Sequence[str], holdings: Sequence[Holding], wants: Sequence[Want], now: float) -> Plan:
    """Which waiting requests start now on which GPUs, which free GPUs are held back for whom,
    which holders must stop, and why each other request waits.

    `gpus` are the usable GPUs in index order (the caller leaves out those busy outside
    gpuspace); a GPU is free when no holding names it. The same inputs give the same plan.
    """
    planner = _Planner(gpus, holdings)
    for want in planner.walk(wants):
        if want.key not in planner.result.grants:
            planner.slice_for(want, now)
    return planner.result


@dataclass(frozen=True)
class _Holder:
    """One holder's holdings together: a holder is preempted whole."""

    key: str
    priority: int
    preemptible: bool
    started: float
    time_slice: float | None
    gpus: tuple[str, ...]


class _Planner:
    def __init__(self, gpus: Sequence[str], holdings: Sequence[Holding]):
        self.gpus = list(gpus)
        self.holders_of: dict[str, set[str]] = {}  # GPU -> holder keys on it (several when shared)
        user_gpus: set[tuple[str, str]] = set()
        repo_gpus: set[tuple[str, str]] = set()
        first: dict[str, Holding] = {}
        gpus_of: dict[str, list[str]] = {}
        for holding in holdings:
            self.holders_of.setdefault(holding.gpu, set()).add(holding.key)
            user_gpus.add((holding.user, holding.gpu))
            repo_gpus.add((holding.repo, holding.gpu))
            first.setdefault(holding.key, holding)
            gpus_of.setdefault(holding.key, []).append(holding.gpu)
        self.holders = [_Holder(key, h.priority, h.preemptible, h.started, h.time_slice,
                                tuple(gpus_of[key])) for key, h in sorted(first.items())]
        self.user_held = _count(user for user, _ in user_gpus)
        self.repo_held = _count(repo for repo, _ in repo_gpus)
        self.available = [gpu for gpu in self.gpus if gpu not in self.holders_of]
        self.taken: dict[str, Want] = {}  # free GPU -> the request granted it or holding it back, in order
        self.held_then: dict[str, dict[str, int]] = {}  # granted want key -> GPUs per user before
        self.priorities: dict[str, list[int]] = {}  # user -> the priorities of their requests, sorted
        self.result = Plan()

    def walk(self, wants: Sequence[Want]) -> list[Want]:
        """Consider each request in order, best first; the order is redone after each grant
        because grants change who holds the fewest GPUs. Returns the order walked."""
        oldest: dict[tuple[bool, str], float] = {}  # each user's oldest request, per class
        for want in wants:
            group = (want.preempt, want.user)
            oldest[group] = min(oldest.get(group, want.since), want.since)
            self.priorities.setdefault(want.user, []).append(want.priority)
        for levels in self.priorities.values():
            levels.sort()

        def rank(want: Want):
            return (not want.preempt, self.user_held.get(want.user, 0), oldest[(want.preempt, want.user)],
                    want.user, -want.priority, not want.interactive, self.repo_held.get(want.repo, 0),
                    want.since, want.key)

        pending = sorted(wants, key=rank)
        walked: list[Want] = []
        while pending:
            want = pending.pop(0)
            walked.append(want)
            self._consider(want)
            if want.key in self.result.grants:
                pending.sort(key=rank)
        return walked

    def usable(self, want: Want) -> list[str]:
        return [gpu for gpu in self.gpus if not want.gpus or gpu in want.gpus]

    def _consider(self, want: Want) -> None:
        """Grant `want` from the available GPUs if they suffice, else hold back what it could
        use, preempting for it when it may, and say why it waits."""
        usable = self.usable(want)
        if len(usable) < want.need:
            self.result.waits[want.key] = self._cannot_fit(want, usable)
            return
        fitting = [gpu for gpu in self.available if gpu in usable]
        if len(fitting) >= want.need:
            chosen = tuple(fitting[: want.need])
            self.held_then[want.key] = dict(self.user_held)
            self._take(want, chosen)
            self.result.grants[want.key] = chosen
            self.user_held[want.user] = self.user_held.get(want.user, 0) + want.need
            self.repo_held[want.repo] = self.repo_held.get(want.repo, 0) + want.need
            return
        self.result.waits[want.key] = self._why_waiting(want, usable, len(fitting))
        self._take(want, tuple(fitting))
        self._reserve(want, fitting)
        if want.preempt:
            eligible = [holder for holder in self.holders if holder.priority < want.priority or want.interactive]
            eligible.sort(key=lambda holder: (holder.priority, -holder.started, holder.key))
            why = _preempt_reason(want)
            self._preempt_for(want, eligible, want.need - len(fitting), lambda holder: why)

    def slice_for(self, want: Want, now: float) -> None:
        """Preempt holders whose time slice is up if their GPUs let this waiting request start."""
        short = want.need - len(self.result.reserved.get(want.key, ()))
        if short <= 0:
            return
        due = [holder for holder in self.holders
               if holder.time_slice is not None and now - holder.started >= holder.time_slice
               and holder.priority == want.priority]
        due.sort(key=lambda holder: (holder.started, holder.key))
        self._preempt_for(want, due, short, lambda holder: f"its time slice ({holder.time_slice:g} s) is up; {want.key} waits")

    def _preempt_for(self, want: Want, candidates: list[_Holder], short: int, reason: Callable[[_Holder], str]) -> None:
        """Preempt the first candidates, whole, until `short` more GPUs that `want` can use
        would be free; nobody when they cannot make that many."""
        usable = self.usable(want)
        chosen: set[str] = set()
        freed: list[str] = []
        for holder in candidates:
            if len(freed) >= short:
                break
            if not holder.preemptible or holder.key in self.result.preempt or not set(holder.gpus) & set(usable):
                continue
            chosen.add(holder.key)
            freed = [gpu for gpu in usable if gpu in self.holders_of and gpu not in self.taken
                     and self.holders_of[gpu] <= chosen]
        if len(freed) < short:
            return
        for holder in candidates:
            if holder.key in chosen:
                self.result.preempt[holder.key] = reason(holder)
        self._take(want, tuple(freed[:short]))
        self._reserve(want, freed[:short])
        self.result.waits[want.key] = self.result.waits[want.key] + f"; preempting {', '.join(sorted(chosen))}"

    def _take(self, want: Want, gpus: tuple[str, ...]) -> None:
        for gpu in gpus:
            self.taken[gpu] = want
            if gpu in self.available:
                self.available.remove(gpu)

    def _reserve(self, want: Want, gpus: list[str]) -> None:
        if gpus:
            held = self.result.reserved.get(want.key, ()) + tuple(gpus)
            self.result.reserved[want.key] = tuple(gpu for gpu in self.gpus if gpu in held)

    def _cannot_fit(self, want: Want, usable: list[str]) -> str:
        missing = [gpu for gpu in want.gpus if gpu not in usable]
        if missing:
            return f"not usable here: {', '.join(missing)}"
        return f"asks for {_gpus(want.need)}, this machine has {len(usable)} usable"

    def _why_waiting(self, want: Want, usable: list[str], free: int) -> str:
        """One line: what took the free GPUs it could have used, else how many are free."""
        # the last to take a GPU it could use: the one it came after by the narrowest margin
        taker = next((self.taken[gpu] for gpu in reversed(self.taken) if gpu in usable), None)
        if taker is None:
            return f"waiting for {_gpus(want.need)}: {free} free"
        if taker.user == want.user and taker.priority > want.priority:
            levels = self.priorities[want.user]
            ahead = levels[bisect.bisect_right(levels, want.priority):]
            span = str(ahead[0]) if ahead[0] == ahead[-1] else f"{ahead[0]} to {ahead[-1]}"
            return f"priority: behind {len(ahead)} request{'s' * (len(ahead) > 1)} of priority {span}"
        if taker.key not in self.result.grants:
            return f"reservation: {_gpus(len(self.result.reserved[taker.key]))} held back for {taker.key}"
        if taker.preempt and not want.preempt:
            return f"preemption: {taker.key} may preempt, so it goes first"
        if taker.user != want.user:
            then = self.held_then[taker.key]
            theirs, mine = then.get(taker.user, 0), then.get(want.user, 0)
            if theirs < mine:
                return f"fair share: {taker.user} held {_gpus(theirs)}, {want.user} {mine}"
            return f"fair share: {taker.user} and {want.user} held {_gpus(mine)} each, {taker.user} asked first"
        return f"queue: behind {taker.key}"


def _preempt_reason(want: Want) -> str:
    if want.interactive:
        return f"for {want.user}'s add --preempt ({want.key})"
    return f"for {want.key} of {want.user} (priority {want.priority})"


def _count(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _gpus(count: int) -> str:
    return f"{count} GPU{'s' * (count != 1)}"
