"""The host-wide GPU claim: a named container on the engine, not a file.

Every repo of every user takes it from reading the leases (labels on our containers) until its
new labelled container exists, so two claims never choose the same GPU. The engine holds it: only
who can reach the engine can take it, and a container name is unique per engine, so creating
`gpuspace-claim` (409 Conflict when it exists) is an atomic claim no file-system race breaks;
a lock file in a world-writable directory could be made first, or replaced by a symlink, by any
local user.

The claim is never started. Its labels name the holder (user, pid and the pid's start time, boot
id, machine id, pid namespace, command line, when); a claim whose holder is provably dead (killed
with -9, or from an earlier boot) is removed by whoever finds it. Anything else counts as alive:
the wait is bounded (`GPUSPACE_LOCK_TIMEOUT`, 30 s) and names the holder. The labels are written by
whoever can reach the engine, so they are read as untrusted data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .containers import CLAIM_NAME, NameInUse
from ..errors import ClaimBusy
from ..locking import lock_timeout
from ..model import current_user

if TYPE_CHECKING:
    from .containers import Engine

PREFIX = "gpuspace.claim."
POLL_S = 0.03
TIMEOUT_S = 30
PID_MAX = 1 << 22  # the kernel's highest pid_max: anything above is no pid


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) the claim, as its labels say; every field may be a lie or empty."""

    user: str = ""
    pid: int = 0  # 0: no usable pid
    start: str = ""  # the pid's start time, /proc/<pid>/stat field 22 (clock ticks after boot)
    boot_id: str = ""
    machine_id: str = ""
    pid_ns: str = ""
    command: str = ""
    created: str = ""

    def labels(self) -> dict[str, str]:
        return {PREFIX + key: str(value) for key, value in vars(self).items()}

    @classmethod
    def from_labels(cls, labels: object) -> "Holder":
        labels = labels if isinstance(labels, dict) else {}

        def text(key: str, limit: int = 200) -> str:
            value = labels.get(PREFIX + key)
            return value[:limit] if isinstance(value, str) else ""

        pid = text("pid", 12)
        number = int(pid) if pid.isascii() and pid.isdigit() else 0
        return cls(user=text("user", 64), pid=number if 0 < number < PID_MAX else 0,
                   start=text("start", 24), boot_id=text("boot_id", 64), machine_id=text("machine_id", 64),
                   pid_ns=text("pid_ns", 64), command=text("command"), created=text("created", 40))

    def describe(self) -> str:
        """'pid 42 (alice: python train.py) since 12:00:01 UTC (5 s ago)', with what is known."""
        return self.who() + _since(self.created)

    def who(self) -> str:
        """'pid 42 (alice: python train.py)', with what is known."""
        here = this_process()
        who = f"pid {self.pid}" if self.pid else "an unknown process"
        if self.machine_id and here.machine_id and self.machine_id != here.machine_id:
            who += " on another machine"
        elif self.pid_ns and here.pid_ns and self.pid_ns != here.pid_ns:
            who += " in another pid namespace"
        command = self.command if len(self.command) <= 60 else self.command[:57] + "..."
        return who + f" ({self.user or 'unknown user'}: {command or 'unknown command'})"


def _since(created: str) -> str:
    try:
        when = dt.datetime.fromisoformat(created)
    except ValueError:
        return ""
    if when.tzinfo is None:
        return ""
    age = (dt.datetime.now(dt.timezone.utc) - when).total_seconds()
    return f" since {when.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({age:.0f} s ago)"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def start_time(pid: int | str) -> str:
    """Field 22 of /proc/<pid>/stat (counted after the command's closing parenthesis, since the
    command may hold spaces and parentheses); '' when it cannot be read."""
    fields = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def this_process() -> Holder:
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    try:
        command = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return Holder(user=current_user(), pid=os.getpid(), start=start_time("self"),
                  boot_id=_read("/proc/sys/kernel/random/boot_id"), machine_id=_read("/etc/machine-id"),
                  pid_ns=pid_ns, command=command[:200],
                  created=_now())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provably_dead(holder: Holder, here: Holder) -> bool:
    """Only what this machine can prove: same machine, and an earlier boot, or (in our pid
    namespace) its pid gone or now another process's, or this very process (which is not
    holding it while it asks: a claim of ours whose create answered too late, or whose removal
    failed while the engine was away). Anything unknown is alive."""
    if not holder.machine_id or holder.machine_id != here.machine_id:
        return False
    if holder.boot_id and here.boot_id and holder.boot_id != here.boot_id:
        return True
    if holder.boot_id != here.boot_id or holder.pid_ns != here.pid_ns or not here.pid_ns or not holder.pid:
        return False
    if holder.pid == here.pid and holder.start == here.start:
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except OSError as error:
        if error.errno != errno.EPERM:  # EPERM: it lives, as another user
            return False
    now = start_time(holder.pid)  # '' when hidden (hidepid): then it cannot be proved
    return bool(now and holder.start and now != holder.start)


@contextlib.contextmanager
def engine_claim(engine: "Engine", image: str, timeout: float | None = TIMEOUT_S) -> Iterator[Holder]:
    """Hold the host-wide GPU claim: create the claim container from `image` (present already),
    remove it on the way out. Waits up to `timeout` seconds (None: forever;
    `GPUSPACE_LOCK_TIMEOUT` overrides it) for a live holder, then raises ClaimBusy."""
    me = this_process()
    bound = lock_timeout(timeout)
    deadline = None if bound is None else time.monotonic() + bound
    reclaimed = ""
    while True:
        try:
            claim_id = engine.create_claim(CLAIM_NAME, image, replace(me, created=_now()).labels())
            break
        except NameInUse:
            pass
        found = engine.labels_of(CLAIM_NAME)
        if found is None:
            continue  # released between our create and our look: try again at once
        found_id, labels = found
        holder = Holder.from_labels(labels)
        if found_id and found_id != reclaimed and provably_dead(holder, me):
            engine.remove_id(found_id)  # that exact one: another waiter may have made a new claim since
            reclaimed = found_id
            continue
        if deadline is not None and time.monotonic() >= deadline:
            raise ClaimBusy(f"timed out after {bound:g} s waiting for the GPU claim, held by {holder.describe()}",
                            hint=f"wait for that command to finish, or stop it; if it is gone, "
                                 f"`docker rm {CLAIM_NAME}` releases the claim", holder=holder.who())
        time.sleep(POLL_S)
    try:
        yield me
    finally:
        engine.remove_id(claim_id)
