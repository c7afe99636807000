"""The run store (runs/store.py): SQLite in the common git dir. Fast: no engine, a tmp_path as
the common dir (a real repo only where the CLI speaks)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import pytest
import tomli_w

from git_gpuspace.errors import StateError
from git_gpuspace.runs import store
from git_gpuspace.runs.model import Run, Sweep

MOMENT = dt.datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt.timezone.utc)


def make(run_id: str, **changes) -> Run:
    return Run(id=run_id, command=["echo", run_id], commit="a" * 40, worktree=f"/w/{run_id}", **changes)


def add(common: Path, *runs: Run, sweeps: tuple[Sweep, ...] = ()) -> None:
    with store.locked(common) as queue:
        queue.runs += runs
        for sweep in sweeps:
            queue.sweeps[sweep.name] = sweep
        queue.save()


def ids(runs: store.Runs) -> list[str]:
    return [run.id for run in runs.runs]


def python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """This test's interpreter on `code`: another process at the store."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


class Audit:
    """Triggers that note every row written to the runs and sweeps tables from now on (read
    while a hold's write transaction is open: a reader is never blocked)."""

    def __init__(self, common: Path) -> None:
        self.connection = sqlite3.connect(common / store.FILE_NAME, isolation_level=None)
        self.connection.executescript("""
            CREATE TABLE audit (what TEXT, id TEXT);
            CREATE TRIGGER audit_insert AFTER INSERT ON runs BEGIN INSERT INTO audit VALUES ('insert', new.id); END;
            CREATE TRIGGER audit_update AFTER UPDATE ON runs BEGIN INSERT INTO audit VALUES ('update', new.id); END;
            CREATE TRIGGER audit_delete AFTER DELETE ON runs BEGIN INSERT INTO audit VALUES ('delete', old.id); END;
            CREATE TRIGGER audit_sweeps AFTER UPDATE ON sweeps BEGIN INSERT INTO audit VALUES ('sweep', new.name); END;
        """)
        self.seen = 0

    def written(self) -> list[tuple[str, str]]:
        """What was written since the last look."""
        rows = self.connection.execute("SELECT rowid, what, id FROM audit WHERE rowid > ? ORDER BY rowid",
                                       (self.seen,)).fetchall()
        self.seen = rows[-1][0] if rows else self.seen
        return [(what, run_id) for _, what, run_id in rows]


# --- what is kept ---

def _value(hint, index: int):
    """A value of type `hint` that no default has."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if args and type(None) in args:
        return _value(next(arg for arg in args if arg is not type(None)), index)
    if hint is dt.datetime:
        return MOMENT + dt.timedelta(seconds=index)
    if hint is bool:
        return True
    if hint is int:
        return 40 + index
    if hint is float:
        return 0.5 + index
    if hint is str:
        return f"value-{index} ünïcode \"quoted\" \\ \n"
    if origin is list:
        return [_value(args[0], index), _value(args[0], index + 1)]
    if origin is dict:
        return {"key-a": _value(args[1], index), "key b": _value(args[1], index + 1)}
    if hint is dict:  # a document of JSON values (a search's plan)
        return {"key-a": [index, {"nested": f"value-{index}"}], "key b": None}
    raise AssertionError(f"no test value for {hint}: add one")


def test_every_field_of_a_run_and_a_sweep_round_trips(tmp_path):
    """Whatever fields Run and Sweep have (a field added later too), each comes back as it went in."""
    hints = typing.get_type_hints(Run)
    values = {f.name: _value(hints[f.name], index) for index, f in enumerate(dataclasses.fields(Run))}
    values.update(id="run-1", state="failed", backend="slurm", command=["python", "-c", "print('{lr}')", "\udcff"])
    run = Run(**values)
    for f in dataclasses.fields(Run):  # each differs from what a default would give
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert getattr(run, f.name) != default, f.name
    sweep_hints = typing.get_type_hints(Sweep)
    sweep = Sweep(**{f.name: _value(sweep_hints[f.name], i) for i, f in enumerate(dataclasses.fields(Sweep))})
    add(tmp_path, run, sweeps=(sweep,))
    back = store.load(tmp_path)
    assert back.runs == [run] and back.sweeps == {sweep.name: sweep}
    assert back.runs[0].submitted.tzinfo is not None and back.runs[0].started == run.started
    assert store.load(tmp_path, ids={"run-1"}).runs == [run]


def test_a_field_this_version_does_not_know_is_kept(tmp_path):
    """A row a newer version wrote, with a field this one lacks: changing the run keeps it."""
    add(tmp_path, make("run-1"))
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        connection.execute("UPDATE runs SET data = json_set(data, '$.future', json('[1, 2]')) WHERE id = 'run-1'")
    with store.locked(tmp_path) as queue:
        queue.runs[0].priority = 5
        queue.save()
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        assert connection.execute("SELECT json_extract(data, '$.future') FROM runs").fetchone() == ("[1,2]",)
    assert store.load(tmp_path).runs[0].priority == 5


def test_runs_come_back_in_submission_order(tmp_path):
    add(tmp_path, make("b-1"), make("a-1"))
    add(tmp_path, make("c-1"), make("a-2"))
    with store.locked(tmp_path) as queue:  # one gone, one changed, one added
        queue.runs = [run for run in queue.runs if run.id != "a-1"]
        queue.find("b-1").state = "running"
        queue.runs.append(make("0-1"))
        queue.save()
    assert ids(store.load(tmp_path)) == ["b-1", "c-1", "a-2", "0-1"]
    assert ids(store.load(tmp_path, states=("queued", "running"))) == ["b-1", "c-1", "a-2", "0-1"]


def test_filters_pick_runs_and_every_sweep_comes_along(tmp_path):
    add(tmp_path, make("s-1", sweep="s", state="succeeded"), make("s-2", sweep="s"),
        make("t-1", sweep="t", state="running"), make("run-1", state="failed"), sweeps=(Sweep("s", 2), Sweep("t")))
    assert ids(store.load(tmp_path, states=("queued", "running"))) == ["s-2", "t-1"]
    assert ids(store.load(tmp_path, states="failed")) == ["run-1"]
    assert ids(store.load(tmp_path, sweep="s")) == ["s-1", "s-2"]
    assert ids(store.load(tmp_path, sweep="s", states=("queued",))) == ["s-2"]
    assert ids(store.load(tmp_path, ids={"run-1", "s-1", "nope"})) == ["s-1", "run-1"]
    assert ids(store.load(tmp_path, ids=["t-1"], states=("succeeded",))) == []
    many = {f"x-{n}" for n in range(2000)} | {"t-1"}  # past what one query takes as parameters
    assert ids(store.load(tmp_path, ids=many)) == ["t-1"]
    alone = store.load(tmp_path, ids=set())
    assert alone.runs == [] and alone.sweeps == {"s": Sweep("s", 2), "t": Sweep("t")}
    with store.locked(tmp_path, sweep="t") as queue:
        assert ids(queue) == ["t-1"] and set(queue.sweeps) == {"s", "t"}


def test_active_runs_are_read_by_the_state_index_alone(tmp_path, monkeypatch):
    """A long history costs a filtered read nothing: only the matching rows are read and parsed."""
    add(tmp_path, *[make(f"old-{n}", state="succeeded") for n in range(300)], make("new-1"))
    parsed = []
    real = store._parse
    monkeypatch.setattr(store, "_parse", lambda *args: parsed.append(args[1]) or real(*args))
    assert ids(store.load(tmp_path, states=("queued", "running"))) == ["new-1"]
    assert parsed == ["new-1"]
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        plan = connection.execute("EXPLAIN QUERY PLAN SELECT id, data FROM runs WHERE state IN (?, ?) ORDER BY seq",
                                  ("queued", "running")).fetchall()
    assert any("USING INDEX runs_state" in row[-1] for row in plan), plan


# --- what save() writes ---

def test_save_writes_only_what_changed(tmp_path):
    add(tmp_path, *[make(f"run-{n}") for n in range(1, 6)], sweeps=(Sweep("s"),))
    log = Audit(tmp_path)
    with store.locked(tmp_path) as queue:
        queue.save()
        assert log.written() == []  # nothing changed: nothing written
        queue.find("run-3").state = "running"
        queue.save()
        assert log.written() == [("update", "run-3")]
        queue.find("run-3").reason = "again"  # a second save in the same hold works too
        queue.runs.append(make("run-9"))
        queue.runs = [run for run in queue.runs if run.id != "run-1"]
        queue.save()
        assert sorted(log.written()) == [("delete", "run-1"), ("insert", "run-9"), ("update", "run-3")]
        queue.sweeps["s"].max_parallel = 3
        queue.save()
        assert log.written() == [("sweep", "s")]
    with store.locked(tmp_path, ids={"run-2"}) as queue:  # runs not read are never deleted
        queue.runs = []
        queue.save()
    assert log.written() == [("delete", "run-2")]
    assert ids(store.load(tmp_path)) == ["run-3", "run-4", "run-5", "run-9"]
    assert store.load(tmp_path).find("run-3").reason == "again"


def test_leaving_without_save_or_by_an_exception_changes_nothing(tmp_path):
    add(tmp_path, make("run-1"))
    with store.locked(tmp_path) as queue:
        queue.runs[0].state = "running"
    with pytest.raises(RuntimeError), store.locked(tmp_path) as queue:
        queue.runs.append(make("run-2"))
        raise RuntimeError("boom")
    with store.locked(tmp_path) as queue:  # saved once, then changed and left
        queue.runs[0].priority = 1
        queue.save()
        queue.runs[0].priority = 2
    assert [(run.id, run.state, run.priority) for run in store.load(tmp_path).runs] == [("run-1", "queued", 1)]


def test_a_read_makes_nothing_on_disk(tmp_path):
    """Listing a repo with no runs makes no file; nor does a hold that saves nothing."""
    assert store.load(tmp_path).runs == [] and store.load(tmp_path, states=("queued",)).sweeps == {}
    with store.locked(tmp_path) as queue:
        assert queue.next_id("run") == "run-1"
    assert not (tmp_path / store.FILE_NAME).exists()
    assert [p.name for p in tmp_path.iterdir() if "runs" in p.name] == []


def test_a_save_outside_a_hold_works_and_never_writes_over_a_change_it_did_not_see(tmp_path):
    queue = store.Runs(tmp_path / store.FILE_NAME)  # as a test fixture makes one
    queue.runs.append(make("s-1", sweep="s"))
    queue.save()
    stale = store.load(tmp_path)
    with store.locked(tmp_path) as queue:
        queue.runs[0].state = "running"
        queue.save()
    stale.runs[0].priority = 9
    with pytest.raises(StateError, match="changed by another command since it was read; nothing was saved"):
        stale.save()
    assert [(run.state, run.priority) for run in store.load(tmp_path).runs] == [("running", 0)]
    fresh = store.load(tmp_path)
    fresh.runs[0].priority = 9
    fresh.save()
    assert store.load(tmp_path).runs[0].priority == 9
    assert oct(os.stat(tmp_path / store.FILE_NAME).st_mode & 0o777) == "0o600"


def test_next_id_never_gives_an_id_twice(tmp_path):
    with store.locked(tmp_path) as queue:
        queue.runs += [make(queue.next_id("s")) for _ in range(3)]
        queue.runs.append(make("t-7"))  # an id not from next_id: its number counts as given too
        queue.save()
    with store.locked(tmp_path) as queue:  # all gone, as `runs clean` leaves it
        queue.runs = []
        queue.save()
    with store.locked(tmp_path, ids=set()) as queue:
        given = [queue.next_id("s"), queue.next_id("s"), queue.next_id("t"), queue.next_id("u")]
        assert given == ["s-4", "s-5", "t-8", "u-1"]
    # given but not saved: those numbers may come again (nothing was made with them)
    assert store.load(tmp_path).next_id("s") == "s-4"
    # a run in the store that the counter does not know (as an old file may have), unread here
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        connection.execute("INSERT INTO runs (id, state, sweep, backend, data) "
                           "VALUES ('s-4', 'queued', NULL, 'local', ?)", (store._dump(make("s-4")),))
    assert store.load(tmp_path, ids=set()).next_id("s") == "s-5"
    with store.locked(tmp_path, states=("running",)) as queue:
        queue.runs.append(make("s-4"))  # an id already there, unread: refused, never overwritten
        with pytest.raises(StateError, match="a run s-4 is there already"):
            queue.save()


# --- the file ---

def test_it_is_one_file_in_wal_mode_of_mode_0600(tmp_path):
    add(tmp_path, make("run-1"))
    path = tmp_path / store.FILE_NAME
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (store.SCHEMA_VERSION,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpuspace-runs.db", "gpuspace.lock"]


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_a_store_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    add(elsewhere, make("run-1"))
    path = tmp_path / store.FILE_NAME
    if kind == "symlink":
        path.symlink_to(tmp_path / "elsewhere" / store.FILE_NAME)
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    for attempt in (lambda: store.load(tmp_path), lambda: store.locked(tmp_path).__enter__()):
        with pytest.raises(StateError, match="not a regular file: refusing to open it") as caught:
            attempt()
        assert "\n" not in str(caught.value) and caught.value.hint
    assert ids(store.load(elsewhere)) == ["run-1"]  # what a link points at is left alone


def test_a_store_of_a_newer_version_is_refused(tmp_path):
    add(tmp_path, make("run-1"))
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        connection.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="was written by a newer git-gpuspace") as caught:
        store.load(tmp_path)
    assert "upgrade" in caught.value.hint


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"", b"SQLite format 3\0" + b"\xff" * 2000])
def test_a_corrupt_or_foreign_file_is_one_line(tmp_path, content):
    (tmp_path / store.FILE_NAME).write_bytes(content)
    for attempt in (lambda: store.load(tmp_path), lambda: store.locked(tmp_path).__enter__()):
        with pytest.raises(StateError, match="cannot read") as caught:
            attempt()
        assert "\n" not in str(caught.value) and caught.value.hint == "fix or move the file by hand"


def test_another_programs_database_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / store.FILE_NAME) as connection:
        connection.execute("CREATE TABLE runs (x)")
    with pytest.raises(StateError, match="not git-gpuspace's run store"):
        store.load(tmp_path)


def test_a_corrupt_store_through_the_cli_is_one_line(plain_repo):
    (plain_repo.common_dir / store.FILE_NAME).write_bytes(b"garbage, not SQLite" * 50)
    result = plain_repo.gs("runs")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "cannot read" in result.stderr and store.FILE_NAME in result.stderr
    assert "fix or move the file by hand" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # the line and its hint


# --- migration from the TOML file of earlier versions ---

def write_toml(common: Path, runs: list[Run], sweeps: list[Sweep], issued: dict[str, int]) -> Path:
    """As the TOML store wrote its file (its save(), word for word)."""
    document = {
        "schema": 1,
        "issued": dict(issued),
        "sweeps": [{key: value for key, value in dataclasses.asdict(s).items() if value is not None} for s in sweeps],
        "runs": [{key: value for key, value in dataclasses.asdict(r).items() if value is not None
                  and key != "metrics"} for r in runs],
    }
    path = common / store.LEGACY_NAME
    path.write_bytes(tomli_w.dumps(document).encode())
    return path


def old_runs() -> tuple[list[Run], list[Sweep], dict[str, int]]:
    runs = [make("s-1", sweep="s", state="succeeded", exit_code=0, started=MOMENT, finished=MOMENT, submitted=MOMENT,
                 params={"lr": "0.1"}, flags={"gpus": "1"}, gpus=["GPU-1"], container="c", data_dir="/d/s-1",
                 metrics={}),
            make("s-3", sweep="s", state="queued", priority=2, submitted=MOMENT),
            make("run-1", state="running", backend="slurm", job="12_1", submitted=MOMENT, started=MOMENT)]
    return runs, [Sweep("s", max_parallel=2, runs_per_gpu=2)], {"s": 3, "run": 1}


def test_the_toml_file_is_migrated_on_first_use(tmp_path):
    runs, sweeps, issued = old_runs()
    legacy = write_toml(tmp_path, runs, sweeps, issued)
    back = store.load(tmp_path)
    assert back.runs == runs and back.sweeps == {"s": sweeps[0]} and back.issued == issued
    assert not legacy.exists() and (tmp_path / "gpuspace-runs.toml.migrated").read_bytes()
    assert oct((tmp_path / store.FILE_NAME).stat().st_mode & 0o777) == "0o600"
    assert store.load(tmp_path, states=("queued",)).runs == runs[1:2]
    with store.locked(tmp_path) as queue:
        assert queue.next_id("s") == "s-4"


def test_a_migrated_finished_run_keeps_the_metrics_of_its_log(tmp_path):
    """As a run that ends now: `runs` shows them without reading thousands of logs each time."""
    data = tmp_path / "data" / "s-1"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "run.log").write_text("epoch 1 loss=0.5\n")
    runs = [make("s-1", state="succeeded", exit_code=0, started=MOMENT, finished=MOMENT, submitted=MOMENT,
                 data_dir=str(data)), make("s-2", state="queued", submitted=MOMENT, data_dir=str(data))]
    write_toml(tmp_path, runs, [], {"s": 2})
    assert [run.metrics for run in store.load(tmp_path).runs] == [{"loss": 0.5}, None]


def test_a_migration_also_happens_under_the_lock(tmp_path):
    runs, sweeps, issued = old_runs()
    write_toml(tmp_path, runs, sweeps, issued)
    with store.locked(tmp_path, ids={"run-1"}) as queue:
        assert queue.runs == runs[2:]
    assert store.load(tmp_path).runs == runs and not (tmp_path / store.LEGACY_NAME).exists()


def test_a_bad_toml_file_is_not_migrated(tmp_path):
    (tmp_path / store.LEGACY_NAME).write_text("runs = [ what")
    with pytest.raises(StateError, match="cannot read .*gpuspace-runs.toml"):
        store.load(tmp_path)
    assert not (tmp_path / store.FILE_NAME).exists() and (tmp_path / store.LEGACY_NAME).exists()


@pytest.mark.parametrize("point", ["before-runs-db-link", "after-runs-db-linked", "after-runs-db-link"])
def test_a_migration_killed_anywhere_leaves_no_store_or_a_whole_one(tmp_path, point):
    runs, sweeps, issued = old_runs()
    write_toml(tmp_path, runs, sweeps, issued)
    stale = tmp_path / f".{store.FILE_NAME}.killedlongago"  # what an earlier killed migration left
    stale.write_bytes(b"half a database")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    killed = python(f"from git_gpuspace.runs import store; store.load(__import__('pathlib').Path({str(tmp_path)!r}))",
                    env={"GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "kill"})
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / store.LEGACY_NAME).exists()  # renamed only once the store is whole
    assert (tmp_path / store.FILE_NAME).exists() == (point != "before-runs-db-link")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{store.FILE_NAME}.")]
    # the killed one's temporary database, or a second name of the store it linked
    assert len([name for name in leftovers if name != stale.name]) == (point != "after-runs-db-link")
    back = store.load(tmp_path)  # migrates (again), or reads what the killed one linked
    assert back.runs == runs and back.issued == issued
    with store.locked(tmp_path) as queue:
        queue.runs[0].state = "failed"
        queue.save()
    assert not (tmp_path / store.LEGACY_NAME).exists() and (tmp_path / "gpuspace-runs.toml.migrated").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{store.FILE_NAME}.")] == []
    assert [run.state for run in store.load(tmp_path).runs] == ["failed", "queued", "running"]


# --- processes at once, and killed ---

def test_writers_in_two_processes_lose_nothing(tmp_path):
    add(tmp_path, make("run-1"))
    code = f"""
        from pathlib import Path
        from git_gpuspace.runs import store
        for _ in range(40):
            with store.locked(Path({str(tmp_path)!r}), ids={{"run-1"}}) as queue:
                queue.runs[0].priority += 1
                queue.save()
            store.load(Path({str(tmp_path)!r}))
    """
    writers = [python(code) for _ in range(2)]
    for writer in writers:
        _, error = writer.communicate(timeout=120)
        assert writer.returncode == 0, error
    assert store.load(tmp_path).runs[0].priority == 80


def test_a_writer_killed_mid_transaction_leaves_the_last_commit(tmp_path):
    add(tmp_path, make("run-1"), make("run-2"))
    code = f"""
        from pathlib import Path
        from git_gpuspace.runs import store
        with store.locked(Path({str(tmp_path)!r})) as queue:
            queue.runs[0].state = "running"
            queue.runs.pop()
            queue.runs += [store.Run(id=f"x-{{n}}", command=["x"], commit="c", worktree="/w") for n in range(500)]
            queue.save()  # killed between its writes and its commit
    """
    killed = python(code, env={"GPUSPACE_FAULT_POINT": "before-runs-commit"})
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [(run.id, run.state) for run in store.load(tmp_path).runs] == [("run-1", "queued"), ("run-2", "queued")]
    with store.locked(tmp_path) as queue:  # nothing of it holds the store
        queue.runs[1].state = "stopped"
        queue.save()
    assert [run.state for run in store.load(tmp_path).runs] == ["queued", "stopped"]


def test_the_listing_is_the_runs_as_loaded(tmp_path):
    """`runs` reads a few fields of each row by SQLite: the same as the runs read whole."""
    add(tmp_path, make("a-1", state="succeeded", exit_code=0, started=MOMENT, finished=MOMENT, params={"lr": "0.1"},
                       gpus=["GPU-1", "GPU-2"], metrics={"loss": 0.5}, data_dir="/d/a-1", sweep="a"),
        make("a-2", state="running", reason="starting", started=MOMENT, sweep="a", job="7_1"),
        make("run-1", state="failed", reason="interrupted"), sweeps=(Sweep("a"),))
    for filters in ({}, {"sweep": "a"}, {"states": ("running",)}, {"states": ()}):
        assert store.listing(tmp_path, **filters) == [store._listed_from(run) for run in store.load(tmp_path, **filters).runs]
    assert store.listing(tmp_path / "nothing-here") == []
