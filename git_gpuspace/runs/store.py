"""The runs of a repo, queued and finished: `.git/gpuspace-runs.db`, an SQLite database beside
the state file, written under the same lock. "Queued" lives only here; what ran is the engine's
(the container's labels and exit code), so a dispatcher that dies loses nothing.

A run is one row: its id, submission order and the few columns queries pick runs by (state,
sweep, backend), and the whole run as JSON, so a field added to `Run` or `Sweep` is kept with
no change here. Reading takes no lock (WAL: a reader sees the last commit whole); changing
takes the repo's lock, then a write transaction, and `save()` writes only the rows that changed
since the runs were read. Each commit is on disk before `save()` returns (synchronous=FULL): a
run's start is recorded before its container runs.

The TOML file of earlier versions, `.git/gpuspace-runs.toml`, is migrated on first use: the
database is written whole under a temporary name and linked into place (never half there), then
the TOML file is renamed `gpuspace-runs.toml.migrated`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import gc
import json
import os
import re
import sqlite3
import stat
import tempfile
import time
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import state, untrusted_files
from ..errors import StateError
from ..faults import checkpoint
from ..locking import file_lock, lock_timeout
from . import results
from .model import FINISHED, ID, STATES, Run, Sweep, now

from ..installation import tomllib

__all__ = ["FILE_NAME", "LEGACY_NAME", "Run", "Runs", "Sweep", "load", "locked"]

FILE_NAME = "gpuspace-runs.db"
LEGACY_NAME = "gpuspace-runs.toml"  # before the database: read once, to migrate
MIGRATED_SUFFIX = ".migrated"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x67707275  # "gpru": this file is git-gpuspace's run store, not another program's database
_STALE_TEMP_S = 600  # a temporary database this old is a killed migration's: removed

_FIX_HINT = "fix or move the file by hand"
_WRITE_HINT = "free some space, or make the git dir writable; the runs are unchanged"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        sweep TEXT,
        backend TEXT,
        data TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS runs_state ON runs (state)",
    "CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep)",
    "CREATE INDEX IF NOT EXISTS runs_backend ON runs (backend)",
    "CREATE TABLE IF NOT EXISTS sweeps (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS issued (prefix TEXT PRIMARY KEY, number INTEGER NOT NULL)",
)


@dataclass
class Runs:
    """Runs as read (all of them, or those a filter picked) and every sweep. Change them, then
    `save()`: only what changed since they were read (or last saved) is written."""

    path: Path
    runs: list[Run] = field(default_factory=list)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    issued: dict[str, int] = field(default_factory=dict)  # last number per id prefix: ids are never reused
    # what the store held when these were read: the rows save() compares with
    _seen: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _sweeps_seen: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _issued_seen: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # fields a newer version wrote that this one lacks, per run: written back as they were
    _extra: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    _connection: sqlite3.Connection | None = field(default=None, repr=False, compare=False)  # inside locked()
    _held: bool = field(default=False, repr=False, compare=False)

    def find(self, run_id: str) -> Run | None:
        return next((run for run in self.runs if run.id == run_id), None)

    def next_id(self, prefix: str) -> str:
        """`<prefix>-<n>`, never one given before (a cleaned run's data dir and ref stay apart),
        nor one any run in the store has, read here or not."""
        taken = {run.id for run in self.runs}
        number = self.issued.get(prefix, 0)
        with self._reading() as connection:
            if connection is not None:
                row = connection.execute("SELECT number FROM issued WHERE prefix = ?", (prefix,)).fetchone()
                number = max(number, row[0] if row else 0)
            number += 1
            while f"{prefix}-{number}" in taken or (connection is not None and connection.execute(
                    "SELECT 1 FROM runs WHERE id = ?", (f"{prefix}-{number}",)).fetchone() is not None):
                number += 1
        self.issued[prefix] = number
        return f"{prefix}-{number}"

    def save(self) -> None:
        """Write what changed, in one transaction, and commit it. Inside `locked()` the repo's
        lock is held, and a later save() writes what changed since this one. A `load()`ed Runs
        (or one made by hand) saved outside a hold takes no lock (its caller may hold the repo's
        lock already) and still never writes over a change it did not see: a run changed or
        removed since it was read refuses the save, and nothing is written."""
        connection, own = self._connection, False
        if connection is not None and not connection.in_transaction:
            _begin(connection, self.path)  # a begin after the last commit failed
        if connection is None:
            _ensure(self.path.parent)
            connection = _connect(self.path, write=True)
            own = not self._held
            try:
                _begin(connection, self.path)
            except BaseException:
                connection.close()
                raise
            if not own:
                self._connection = connection
        try:
            try:
                seen = self._write(connection)
                checkpoint("before-runs-commit")
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                raise
            self._seen, self._sweeps_seen, self._issued_seen = seen
            if not own:
                _begin(connection, self.path)  # the context goes on holding the store
        except sqlite3.Error as error:
            raise StateError(f"cannot write {self.path}: {error}", hint=_WRITE_HINT) from None
        finally:
            if own:
                connection.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        connection = self._connection if self._connection is not None else _connect(self.path, write=False)
        try:
            yield connection
        except sqlite3.Error as error:
            raise StateError(f"cannot read {self.path}: {error}", hint=_FIX_HINT) from None
        finally:
            if connection is not None and connection is not self._connection:
                connection.close()

    def _write(self, connection: sqlite3.Connection) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
        current: dict[str, str] = {}
        for run in self.runs:
            if not isinstance(run.id, str) or not ID.fullmatch(run.id) or run.state not in STATES:
                raise StateError(f"run {run.id!r} has a bad id or state ({run.state!r}); nothing was saved")
            if run.id in current:
                raise StateError(f"run {run.id} is in the list twice; nothing was saved")
            current[run.id] = _dump(run, self._extra.get(run.id))
        issued = dict(self.issued)
        for run_id, old in self._seen.items():
            if run_id not in current:
                if connection.execute("DELETE FROM runs WHERE id = ? AND data = ?", (run_id, old)).rowcount != 1:
                    raise _changed(self.path, run_id)
                _issue(issued, run_id)  # a forgotten run's number stays given (a store of before `issued`)
        for run in self.runs:
            text, old = current[run.id], self._seen.get(run.id)
            if old is None:
                try:
                    connection.execute("INSERT INTO runs (id, state, sweep, backend, data) VALUES (?, ?, ?, ?, ?)",
                                       (run.id, run.state, run.sweep, run.backend, text))
                except sqlite3.IntegrityError:
                    raise StateError(f"{self.path}: a run {run.id} is there already; nothing was saved",
                                     hint="ask for a new id with next_id()") from None
                _issue(issued, run.id)  # its number is given, whoever chose it
            elif text != old:
                updated = connection.execute(
                    "UPDATE runs SET state = ?, sweep = ?, backend = ?, data = ? WHERE id = ? AND data = ?",
                    (run.state, run.sweep, run.backend, text, run.id, old))
                if updated.rowcount != 1:
                    raise _changed(self.path, run.id)
        sweeps = {sweep.name: _dump(sweep) for sweep in self.sweeps.values()}
        for name in self._sweeps_seen.keys() - sweeps.keys():
            connection.execute("DELETE FROM sweeps WHERE name = ?", (name,))
        for name, text in sweeps.items():
            if self._sweeps_seen.get(name) != text:
                connection.execute("INSERT INTO sweeps (name, data) VALUES (?, ?) "
                                   "ON CONFLICT (name) DO UPDATE SET data = excluded.data", (name, text))
        for prefix, number in issued.items():
            if number > self._issued_seen.get(prefix, 0):
                connection.execute("INSERT INTO issued (prefix, number) VALUES (?, ?) ON CONFLICT (prefix) "
                                   "DO UPDATE SET number = max(number, excluded.number)", (prefix, number))
        self.issued.update(issued)
        return current, sweeps, {**self._issued_seen, **issued}


def _issue(issued: dict[str, int], run_id: str) -> None:
    """Record `<prefix>-<n>` as given: next_id() goes on after it."""
    numbered = re.fullmatch(r"(.+)-([0-9]+)", run_id)
    if numbered and int(numbered.group(2)) > issued.get(numbered.group(1), 0):
        issued[numbered.group(1)] = int(numbered.group(2))


def load(common_dir: Path, *, ids: Iterable[str] | None = None, states: Iterable[str] | None = None,
         sweep: str | None = None, cleaned: bool | None = None) -> Runs:
    """The runs in submission order (with a filter: only those of `ids`, in `states`, of
    `sweep`, cleaned by `runs clean` or not), and every sweep. No lock: a consistent snapshot. A
    repo with no runs yet is an empty Runs, and nothing is made on disk."""
    with _reading(common_dir) as (connection, legacy):
        if connection is None:
            runs, sweeps, issued = legacy
            return Runs(common_dir / FILE_NAME, _pick(runs, ids, states, sweep, cleaned), sweeps, issued)
        return _read(connection, common_dir / FILE_NAME, ids, states, sweep, cleaned)


class Listed(typing.NamedTuple):
    """What the `runs` table shows of a run, read by SQLite from its row without making the run
    (a history of thousands is listed at the cost of its rows, not of as many objects)."""

    id: str
    sweep: str | None
    params: dict[str, str]
    state: str
    reason: str | None
    exit_code: int | None
    started: _dt.datetime | None
    finished: _dt.datetime | None
    gpus: int  # how many (their UUIDs are not shown)
    job: str | None
    metrics: dict[str, float] | None
    data_dir: str | None
    commit: str
    snapshot: bool
    gpu_indices: list[int]
    cleaned: bool
    restarts: int = 0
    lost_s: float = 0.0
    preemptible: bool = False
    preempted_at: _dt.datetime | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or now()) - self.started).total_seconds()


_LISTED = ("params", "reason", "exit_code", "started", "finished", "job", "metrics", "data_dir", "commit", "snapshot",
           "gpu_indices", "cleaned", "restarts", "lost_s", "preemptible", "preempted_at")


def listing(common_dir: Path, *, states: Iterable[str] | None = None, sweep: str | None = None) -> list[Listed]:
    """The table's view of the runs (see `load` for the filters), in submission order."""
    with _reading(common_dir) as (connection, legacy):
        if connection is None:
            return [_listed_from(run) for run in _pick(legacy[0], None, states, sweep)]
        where, values = _where(None, states, sweep)
        fields = ", ".join(f"json_extract(data, '$.{name}')" for name in _LISTED)
        query = (f"SELECT id, sweep, state, {fields}, json_array_length(data, '$.gpus') FROM runs "
                 f"WHERE {where} ORDER BY seq")
        try:
            rows = connection.execute(query, values).fetchall()
        except sqlite3.Error as error:
            raise StateError(f"cannot read {common_dir / FILE_NAME}: {error}", hint=_FIX_HINT) from None
    moment = _dt.datetime.fromisoformat
    try:
        # json_extract gives JSON objects and arrays as text, true and false as 1 and 0
        return [Listed(run_id, run_sweep, json.loads(params) if params else {}, run_state, reason, exit_code,
                       moment(started) if started else None, moment(finished) if finished else None, gpus or 0, job,
                       json.loads(metrics) if metrics else None, data_dir, commit or "", bool(snapshot),
                       json.loads(indices) if indices else [], bool(cleaned), int(restarts or 0), float(lost or 0),
                       bool(preemptible), moment(preempted) if preempted else None)
                for run_id, run_sweep, run_state, params, reason, exit_code, started, finished, job, metrics, data_dir,
                commit, snapshot, indices, cleaned, restarts, lost, preemptible, preempted, gpus in rows]
    except (TypeError, ValueError) as error:
        raise StateError(f"{common_dir / FILE_NAME}: a run is malformed ({error})", hint=_FIX_HINT) from None


def _listed_from(run: Run) -> Listed:
    return Listed(run.id, run.sweep, run.params, run.state, run.reason, run.exit_code, run.started, run.finished,
                  len(run.gpus), run.job, run.metrics, run.data_dir, run.commit, run.snapshot, list(run.gpu_indices),
                  run.cleaned, run.restarts, run.lost_s, run.preemptible, run.preempted_at)


@contextlib.contextmanager
def _reading(common_dir: Path) -> Iterator[tuple[sqlite3.Connection | None, Any]]:
    """A read transaction on the store (migrated first from the TOML file if that is all there
    is); or (None, what the TOML file holds) where the git dir may only be read, or (None,
    nothing) when there is no store yet."""
    path = common_dir / FILE_NAME
    connection = _connect(path, write=False)
    if connection is None:
        legacy = common_dir / LEGACY_NAME
        if not os.path.lexists(legacy):
            yield None, ([], {}, {})
            return
        try:
            with contextlib.ExitStack() as stack:
                # held by another command (or this one: the dispatcher's turn reads under it),
                # migrating without it is safe too, only done twice
                with contextlib.suppress(StateError):
                    stack.enter_context(file_lock(common_dir / state.LOCK_NAME, wait=False))
                _ensure(common_dir)
        except _CannotWrite:  # a git dir we may only read: the old file as it is
            yield None, _load_toml(legacy)
            return
        connection = _connect(path, write=False)
        assert connection is not None
    try:
        try:
            connection.execute("BEGIN")
        except sqlite3.Error as error:
            raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
        try:
            yield connection, None
        except sqlite3.Error as error:
            raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
    finally:
        connection.close()


@contextlib.contextmanager
def locked(common_dir: Path, *, ids: Iterable[str] | None = None, states: Iterable[str] | None = None,
           sweep: str | None = None, cleaned: bool | None = None) -> Iterator[Runs]:
    """The repo's lock (the one the state file uses: always taken first), a write transaction,
    and the runs as they are now (filtered as `load`'s). `save()` commits what changed, as often
    as needed; leaving without it, or by an exception, changes nothing more."""
    with state.locked(common_dir):
        path = common_dir / FILE_NAME
        legacy = common_dir / LEGACY_NAME
        connection = _connect(path, write=True)
        if connection is None and os.path.lexists(legacy):
            _ensure(common_dir)
            connection = _connect(path, write=True)
        elif connection is not None and os.path.lexists(legacy):
            _retire(legacy)  # a migration killed after its database was in place
            _remove_stale_temps(common_dir)
        if connection is None:
            runs = Runs(path, _held=True)  # nothing on disk until save()
        else:
            try:
                _begin(connection, path)
                try:
                    runs = _read(connection, path, ids, states, sweep, cleaned)
                except sqlite3.Error as error:
                    raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
            except BaseException:
                connection.close()
                raise
            runs._connection, runs._held = connection, True
        try:
            yield runs
        finally:
            held, runs._connection, runs._held = runs._connection, None, False
            if held is not None:
                with contextlib.suppress(sqlite3.Error):
                    if held.in_transaction:
                        held.execute("ROLLBACK")
                held.close()


# --- the database ---

class _CannotWrite(StateError):
    pass


def _changed(path: Path, run_id: str) -> StateError:
    return StateError(f"{path}: run {run_id} was changed by another command since it was read; nothing was saved",
                      hint="run the command again")


def _check_regular(path: Path) -> bool:
    """Is it there (a regular file)? A symlink or anything else is refused, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise StateError(f"cannot read {path}: {error.strerror or error}", hint=_FIX_HINT) from None
    if not stat.S_ISREG(mode):
        raise StateError(f"{path} is {untrusted_files.kind(mode)}, not a regular file: refusing to open it",
                         hint="move it away by hand; git-gpuspace keeps its runs in a regular file there")
    return True


def _connect(path: Path, write: bool) -> sqlite3.Connection | None:
    """The store, checked to be ours and not newer than this code; None when there is none."""
    if not _check_regular(path):
        return None
    for side in ("-wal", "-shm"):
        _check_regular(path.with_name(path.name + side))
    bound = lock_timeout(60)
    try:
        connection = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=rw", uri=True,
                                     isolation_level=None, timeout=3600.0 if bound is None else max(bound, 5.0))
    except sqlite3.Error as error:
        if not _check_regular(path):  # gone in between
            return None
        raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
    try:
        connection.execute("PRAGMA synchronous = FULL")
        application = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if application != APPLICATION_ID:
            raise StateError(f"cannot read {path}: not git-gpuspace's run store (application id {application:#x})",
                             hint=_FIX_HINT)
        if version > SCHEMA_VERSION:
            raise StateError(f"{path} was written by a newer git-gpuspace (schema {version}; this one knows "
                             f"{SCHEMA_VERSION} and older)", hint="upgrade git-gpuspace (pip install -U git-gpuspace)")
        if version < 1:
            raise StateError(f"cannot read {path}: its schema version is {version}", hint=_FIX_HINT)
        if write:
            connection.execute("PRAGMA journal_mode = WAL")  # as made; a no-op unless someone changed it
    except sqlite3.Error as error:
        connection.close()
        raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
    except BaseException:
        connection.close()
        raise
    return connection


def _begin(connection: sqlite3.Connection, path: Path) -> None:
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        raise StateError(f"cannot write {path}: {error}",
                         hint="another command holds it: wait for it, or stop it") from None


def _read(connection: sqlite3.Connection, path: Path, ids: Iterable[str] | None, states: Iterable[str] | None,
          sweep: str | None, cleaned: bool | None = None) -> Runs:
    runs = Runs(path)
    for name, text in connection.execute("SELECT name, data FROM sweeps ORDER BY rowid"):
        found, _ = _parse(path, name, Sweep, text)
        runs.sweeps[found.name] = found
        runs._sweeps_seen[found.name] = text
    runs.issued = {prefix: number for prefix, number in connection.execute("SELECT prefix, number FROM issued")}
    runs._issued_seen = dict(runs.issued)
    where, values = _where(ids, states, sweep, cleaned)
    query = f"SELECT id, data FROM runs WHERE {where} ORDER BY seq"
    collecting = gc.isenabled()
    gc.disable()  # thousands of new objects, none of them garbage: the collector would only walk them
    try:
        for run_id, text in connection.execute(query, values):
            run, extra = _parse(path, run_id, Run, text)
            # the id column is unique and was checked when written: the row must be that run
            if run.id != run_id or run.state not in STATES:
                raise StateError(f"{path}: run {run_id} has a bad id or state", hint=_FIX_HINT)
            runs.runs.append(run)
            runs._seen[run_id] = text
            if extra:
                runs._extra[run_id] = extra
    finally:
        if collecting:
            gc.enable()
    return runs


def _where(ids: Iterable[str] | None, states: Iterable[str] | None, sweep: str | None,
           cleaned: bool | None = None) -> tuple[str, list]:
    """The SQL condition of load's filters (an empty one matches nothing), and its values."""
    where, values = [], []
    picked = _pick_ids(ids)
    if picked is not None:
        if len(picked) <= 500:
            where.append(f"id IN ({', '.join('?' * len(picked))})" if picked else "0")
            values += picked
        else:
            where.append("id IN (SELECT value FROM json_each(?))")
            values.append(json.dumps(picked))
    if states is not None:
        chosen = [states] if isinstance(states, str) else list(states)
        where.append(f"state IN ({', '.join('?' * len(chosen))})" if chosen else "0")
        values += chosen
    if sweep is not None:
        where.append("sweep = ?")
        values.append(sweep)
    if cleaned is not None:  # no column: a field of the run, absent from those written before it existed
        where.append("coalesce(json_extract(data, '$.cleaned'), 0) = ?")
        values.append(int(cleaned))
    return " AND ".join(where) or "1", values


def _pick_ids(ids: Iterable[str] | None) -> list[str] | None:
    if ids is None:
        return None
    return sorted({ids} if isinstance(ids, str) else set(ids))


def _pick(runs: list[Run], ids: Iterable[str] | None, states: Iterable[str] | None, sweep: str | None,
          cleaned: bool | None = None) -> list[Run]:
    picked = _pick_ids(ids)
    chosen = None if states is None else ({states} if isinstance(states, str) else set(states))
    return [run for run in runs if (picked is None or run.id in picked) and (chosen is None or run.state in chosen)
            and (sweep is None or run.sweep == sweep) and (cleaned is None or run.cleaned == cleaned)]


# --- a run or sweep as JSON: every field of the dataclass, whatever fields it has ---

def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in the run store")


def _dump(item: Any, extra: dict[str, Any] | None = None) -> str:
    document = {**(extra or {}), **{f.name: getattr(item, f.name) for f in dataclasses.fields(item)}}
    return json.dumps(document, default=_json_default, sort_keys=True, separators=(",", ":"))


_SHAPES: dict[type, tuple[frozenset[str], tuple[str, ...]]] = {}


def _shape(kind: type) -> tuple[frozenset[str], tuple[str, ...]]:
    """The fields of `kind`, and those that hold a date-time (stored as ISO text)."""
    if kind not in _SHAPES:
        hints = typing.get_type_hints(kind)
        names = frozenset(f.name for f in dataclasses.fields(kind))
        _SHAPES[kind] = names, tuple(name for name in sorted(names) if hints.get(name) is _dt.datetime
                                     or _dt.datetime in typing.get_args(hints.get(name)))
    return _SHAPES[kind]


def _parse(path: Path, name: str, kind: type, text: str) -> tuple[Any, dict[str, Any]]:
    names, moments = _shape(kind)
    try:
        known = json.loads(text)
        if not isinstance(known, dict):
            raise TypeError("not a JSON object")
        extra = {}
        if not names.issuperset(known):  # written by a newer version: kept as it is
            extra = {key: value for key, value in known.items() if key not in names}
            known = {key: value for key, value in known.items() if key in names}
        for key in moments:
            value = known.get(key)
            if isinstance(value, str):
                known[key] = _dt.datetime.fromisoformat(value)
        return kind(**known), extra
    except (TypeError, ValueError) as error:
        raise StateError(f"{path}: {kind.__name__.lower()} {name} is malformed ({error})", hint=_FIX_HINT) from None


# --- making the database, from the old TOML file if there is one ---

def _ensure(common_dir: Path) -> None:
    """The database there, made whole under a temporary name and linked into place (never over
    one that is there: two processes making it at once keep the first). The TOML file of an
    earlier version is read into it, then renamed aside."""
    path = common_dir / FILE_NAME
    if _check_regular(path):
        return
    legacy = common_dir / LEGACY_NAME
    runs, sweeps, issued = _load_toml(legacy) if os.path.lexists(legacy) else ([], {}, {})
    for run in runs:  # what `runs` shows of a finished run is kept with it, as when a run ends now
        if run.state in FINISHED and run.metrics is None:
            run.metrics = results.metrics(run.data_dir)
    _remove_stale_temps(common_dir)
    try:
        # mode 0600 (and so its WAL); named by host and pid: one left by a process that died is removed
        fd, temp = tempfile.mkstemp(prefix=f".{FILE_NAME}.{_HOST}.{os.getpid()}.", dir=common_dir)
        os.close(fd)
    except OSError as error:
        raise _CannotWrite(f"cannot write {path}: {error.strerror or error}", hint=_WRITE_HINT) from None
    try:
        _build(Path(temp), runs, sweeps, issued)
        checkpoint("before-runs-db-link")
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process made it first, from the same file
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if not os.path.lexists(path):  # a file system without hard links
                os.rename(temp, path)
        else:
            checkpoint("after-runs-db-linked")
        os.unlink(temp)  # a second name of the store, left only by a kill right here
        _sync_dir(common_dir)
        checkpoint("after-runs-db-link")
    except sqlite3.Error as error:
        raise _CannotWrite(f"cannot write {path}: {error}", hint=_WRITE_HINT) from None
    except OSError as error:
        raise _CannotWrite(f"cannot write {path}: {error.strerror or error}", hint=_WRITE_HINT) from None
    finally:
        for leftover in (temp, temp + "-wal", temp + "-shm", temp + "-journal"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
    if os.path.lexists(legacy):
        _retire(legacy)


def _build(temp: Path, runs: list[Run], sweeps: dict[str, Sweep], issued: dict[str, int]) -> None:
    connection = sqlite3.connect(str(temp), isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.executemany("INSERT INTO runs (id, state, sweep, backend, data) VALUES (?, ?, ?, ?, ?)",
                               [(run.id, run.state, run.sweep, run.backend, _dump(run)) for run in runs])
        connection.executemany("INSERT INTO sweeps (name, data) VALUES (?, ?)",
                               [(sweep.name, _dump(sweep)) for sweep in sweeps.values()])
        connection.executemany("INSERT INTO issued (prefix, number) VALUES (?, ?)", list(issued.items()))
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file itself
    finally:
        connection.close()
    fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", os.uname().nodename)


def _remove_stale_temps(common_dir: Path) -> None:
    """What a killed migration left: a temporary database never linked into place, or a second
    name of the store itself (killed between the link and the unlink). One of a process alive
    (here, or on another host sharing the git dir) is left alone, unless it is old."""
    cutoff = time.time() - _STALE_TEMP_S
    try:
        store = os.lstat(common_dir / FILE_NAME)
    except OSError:
        store = None
    for leftover in common_dir.glob(f".{FILE_NAME}.*"):
        with contextlib.suppress(OSError):
            found = os.lstat(leftover)
            host, _, pid = leftover.name[len(FILE_NAME) + 2:].rpartition(".")[0].rpartition(".")
            linked = store is not None and (found.st_dev, found.st_ino) == (store.st_dev, store.st_ino)
            if found.st_mtime < cutoff or linked or (host == _HOST and pid.isdigit() and not _alive(int(pid))):
                os.unlink(leftover)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's
    return True


def _retire(legacy: Path) -> None:
    """The TOML file, kept beside the database it went into, never read again."""
    try:
        os.replace(legacy, legacy.with_name(legacy.name + MIGRATED_SUFFIX))
        _sync_dir(legacy.parent)
    except FileNotFoundError:
        pass  # another process did it
    except OSError as error:
        raise StateError(f"cannot rename {legacy}: {error.strerror or error}", hint=_WRITE_HINT) from None


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_toml(path: Path) -> tuple[list[Run], dict[str, Sweep], dict[str, int]]:
    """The runs of the TOML file earlier versions kept (read only to migrate them)."""
    try:
        # in the common dir, no container's to write; still never a FIFO or a symlink's target
        document = tomllib.loads(untrusted_files.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        return [], {}, {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}", hint=_FIX_HINT) from None
    try:
        runs = [Run(**entry) for entry in document.get("runs", [])]
        sweeps = {entry["name"]: Sweep(**entry) for entry in document.get("sweeps", [])}
    except (TypeError, KeyError) as error:
        raise StateError(f"{path}: a run or sweep entry is malformed ({error})", hint=_FIX_HINT) from None
    for index, run in enumerate(runs):
        if not ID.fullmatch(run.id) or run.state not in STATES:
            raise StateError(f"{path}: runs[{index}] has a bad id or state", hint=_FIX_HINT)
    if len({run.id for run in runs}) != len(runs):
        raise StateError(f"{path}: a run id is there twice", hint=_FIX_HINT)
    issued = {str(k): int(v) for k, v in (document.get("issued") or {}).items() if isinstance(v, int)}
    return runs, sweeps, issued
