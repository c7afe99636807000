"""Runs in MLflow, with no import in the training code: a tracker process of its own per repo
(`git-gpuspace _track`, started in the background as the background dispatcher is, one per repo
through a lock in the user's state dir) reads the run store and each run's log, and logs to
MLflow: params, tags, each `name=number` of the log as the next step of that metric (`step=N` or
`epoch=N` on the same line sets the step), `/data/metrics.json` at the end, the status and the
artifacts (the log, files under `/data/artifacts`).

Only the tracker and `ui` import mlflow: `ensure_tracker`, which the dispatcher calls, asks
whether it is installed without importing it.

Where: the `tracking.uri` setting (`GPUSPACE_TRACKING_URI` overrides it): by default a SQLite
store per repo in its common dir (`gpuspace-mlflow.db`, artifacts in
`gpuspace-mlflow-artifacts/`), `http(s)://...` for a team server, `none` for no tracking (as
`tracking = none`). The experiment is named after the repo (its main worktree's directory), or
`tracking.experiment` (`GPUSPACE_TRACKING_EXPERIMENT`).

Crash-safety: MLflow's own state is the tracker's memory. A run is found by its tags
(`gpuspace.repo`, `gpuspace.run`; a sweep's parent by `gpuspace.sweep`), made with them in one
call; its log is parsed from its start by every new tracker, the same way each time, so each
metric's steps come out the same, and a step is logged only above the last one MLflow holds for
that metric: a tracker killed at any moment, then another, loses and repeats nothing. A run fully
logged carries `gpuspace.logged` (its state and end time), and is not read again until it ends
anew (retried). The log and the artifacts are the container's to write: read as data, without
following links, regular files only, bounded."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import posixpath
import re
import shlex
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import GpuspaceError, UsageError
from ..installation import SCRIPT_NAME, console_script
from ..untrusted_files import open_under

URI_ENV = "GPUSPACE_TRACKING_URI"  # overrides the `tracking.uri` setting
EXPERIMENT_ENV = "GPUSPACE_TRACKING_EXPERIMENT"  # overrides `tracking.experiment`
OFF = ("none", "off", "false", "no")
DB_NAME = "gpuspace-mlflow.db"
ARTIFACTS_NAME = "gpuspace-mlflow-artifacts"
TAG_REPO, TAG_RUN, TAG_SWEEP, TAG_LOGGED = "gpuspace.repo", "gpuspace.run", "gpuspace.sweep", "gpuspace.logged"
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "pruned": "KILLED"}
STEP_KEYS = ("step", "epoch")  # on a line, they set the step of the line's other metrics (step first)
POLL_S = 1.0  # how often the tracker looks at the logs of running runs
IDLE_EXIT_S = 60.0  # with no dispatcher alive, a tracker that logs nothing for this long goes
CHUNK = 4 << 20  # log bytes read per run per turn: many runs advance together
ARTIFACTS_MAX = 100 << 20  # the log and /data/artifacts, all together, per run
BACKLOG_PER_TURN = 20  # finished runs caught up per turn, after the running ones
MAX_KEY, MAX_PARAM, MAX_TAG = 250, 6000, 8000
INSTALL_HINT = "pip install 'git-gpuspace[mlflow]' (or pip install 'mlflow>=2.9')"
LOG = "logs/run.log"  # as runs/wrapper.py LOG, relative to the data dir
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # as runs/results.py reads a metric
METRIC = re.compile(rf"(?<![\w.-])([A-Za-z_][\w./-]*)\s*(?:=|:)\s*({_NUMBER})(?![\w.])")


# --- what the dispatcher and `ui` use: no mlflow here ---------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    uri: str
    artifacts: str | None  # an artifact root for a store of our own; None: the server's
    experiment: str


def installed() -> bool:
    """Is mlflow importable? Asked without importing it (that takes seconds)."""
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def _settings_of(info) -> dict[str, Any]:
    """The repo's effective settings, with the tracking keys read from the raw layers where
    config.KEYS does not know them yet."""
    from .. import config, state

    defaults = state.load(info.common_dir).defaults
    merged = config.effective(defaults, {})
    raw = {**config.load_user(), **defaults}
    return {**{key: raw[key] for key in ("tracking", "tracking.uri", "tracking.experiment") if key in raw}, **merged}


def settings(info, values: dict[str, Any] | None = None) -> Target | None:
    """Where the repo's runs are tracked; None when tracking is off."""
    values = _settings_of(info) if values is None else values
    switch = values.get("tracking")
    if switch is not None and str(switch).strip().lower() in OFF:
        return None
    uri = os.environ.get(URI_ENV) or values.get("tracking.uri")
    uri = str(uri).strip() if uri else ""
    if uri.lower() in OFF:
        return None
    experiment = os.environ.get(EXPERIMENT_ENV) or values.get("tracking.experiment") or info.name
    if not uri:
        return Target(f"sqlite:///{info.common_dir / DB_NAME}", (info.common_dir / ARTIFACTS_NAME).as_uri(),
                      str(experiment))
    if "://" not in uri and not uri.startswith("databricks"):
        raise UsageError(f"tracking.uri '{uri}' is not a tracking URI",
                         hint="http(s)://HOST:PORT for a server, sqlite:///PATH, or none")
    return Target(uri, None, str(experiment))


def lock_path(common_dir: Path) -> Path:
    from .at_work import lock_path as dispatch_lock

    dispatch = dispatch_lock(common_dir)
    return dispatch.parent / f"{dispatch.stem}.track"


def log_path(common_dir: Path) -> Path:
    return lock_path(common_dir).with_suffix(".track-log")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def tracker_alive(common_dir: Path) -> bool:
    fd = _try_lock(lock_path(common_dir))
    if fd is None:
        return True
    os.close(fd)
    return False


def ensure_tracker(info) -> Path | None:
    """Start the repo's tracker in the background unless one is alive; cheap when tracking is
    off or mlflow is not installed (then None). For the dispatcher, after it recorded a run
    started (or ended): never raises, a failure goes to the tracker's log. Returns that log."""
    log = None
    try:
        if not installed() or settings(info) is None:
            return None
        log = log_path(info.common_dir)
        if not tracker_alive(info.common_dir):
            command = [str(console_script() or SCRIPT_NAME)]
            with open(log, "ab") as output:
                subprocess.Popen([*command, "_track", "--background"], cwd=info.anchor, stdin=subprocess.DEVNULL,
                                 stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        return log
    except Exception as error:  # noqa: BLE001 - tracking never stops a dispatcher
        if log is not None:
            try:
                with open(log, "a", encoding="utf-8") as output:
                    output.write(f"{_stamp()} cannot start the tracker: {type(error).__name__}: {error}\n")
            except OSError:
                pass
        return None


_FOR_CONTAINERS: dict[tuple, Tracker] = {}  # (common dir, target) -> the dispatcher's own client


def container_env(info, run) -> dict[str, str]:
    """For a run about to start: MLFLOW_TRACKING_URI and MLFLOW_RUN_ID (and the experiment's id)
    when its runs go to an MLflow server a container can reach (http(s), not this machine's
    loopback), so that code using MLflow itself logs into the run the tracker logs to. That
    MLflow run is made now (or found, by its gpuspace.run tag). {} otherwise, and on any
    trouble with the server: the run starts anyway, tracked as ever; the why goes to the
    tracker's log."""
    try:
        if not installed():
            return {}
        target = settings(info)
        if target is None or not _reachable_from_containers(target.uri):
            return {}
        key = (str(info.common_dir), target)
        if key not in _FOR_CONTAINERS:
            _FOR_CONTAINERS[key] = Tracker(info, target, listing=False)
        tracker = _FOR_CONTAINERS[key]
        known = tracker._mlflow_run(run)
        return {"MLFLOW_TRACKING_URI": target.uri, "MLFLOW_RUN_ID": known.id,
                "MLFLOW_EXPERIMENT_ID": tracker.experiment_id}
    except Exception as error:  # noqa: BLE001 - the server's trouble never stops a run
        try:
            with open(log_path(info.common_dir), "a", encoding="utf-8") as output:
                output.write(f"{_stamp()} {run.id}: no MLflow run for its container: {_one_line(error)}\n")
        except OSError:
            pass
        return {}


def _reachable_from_containers(uri: str) -> bool:
    """A server's URI that means the same inside a container: http(s), not a loopback host."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname.lower() in ("localhost", "localhost.localdomain") or parts.hostname.lower().endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True  # a name: the container resolves it as the host does


def _stamp() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def say(line: str) -> None:
    print(f"{_stamp()} {line}", file=sys.stderr, flush=True)


# --- reading a log: pure --------------------------------------------------------------------


def valid_key(name: str) -> bool:
    """A name MLflow takes as a metric key (one that does not resolve to another as a path)."""
    return 0 < len(name) <= MAX_KEY and posixpath.normpath(name) == name and not name.startswith("/")


def _integer(text: str) -> int | None:
    value = float(text)
    return int(value) if value.is_integer() and 0 <= value < 2 ** 63 else None


def parse(text: str, counters: dict[str, int]) -> list[tuple[str, float, int]]:
    """(key, value, step) for each `name=number` (or `name: number`) of the lines in `text`. A
    line's `step=N` (else `epoch=N`) is the step of its metrics; otherwise a metric's step is one
    more than its last (from 0). `counters`, each key's last step, goes on from call to call."""
    found: list[tuple[str, float, int]] = []
    for line in re.split(r"[\r\n]", text):
        pairs = METRIC.findall(line)
        if not pairs:
            continue
        step = None
        for key in STEP_KEYS:
            given = [value for name, value in pairs if name == key]
            if given and (step := _integer(given[0])) is not None:
                break
        for name, text_value in pairs:
            if name == "step" and step is not None:
                continue
            value = float(text_value)
            if not math.isfinite(value) or not valid_key(name):
                continue
            at = step if step is not None else counters.get(name, -1) + 1
            counters[name] = at
            found.append((name, value, at))
    return found


def split_complete(data: bytes, final: bool, full: bool) -> int:
    """How many bytes of `data` are whole lines (up to the last line end); all of it when the
    log is final, or when one line fills a whole chunk."""
    if final:
        return len(data)
    end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
    return end or (len(data) if full else 0)


def end_values(document: bytes | None) -> dict[str, float]:
    """The numbers of a metrics.json (a JSON object), as runs/results.py takes them."""
    if not document:
        return {}
    try:
        parsed = json.loads(document)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): float(v) for k, v in parsed.items()
            if (isinstance(v, float) and math.isfinite(v)) or (isinstance(v, int) and not isinstance(v, bool)
                                                              and abs(v) < 2 ** 53)}


# --- untrusted files ------------------------------------------------------------------------


_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_at(fd: int, offset: int, limit: int) -> bytes:
    chunks = []
    while limit > 0:
        chunk = os.pread(fd, min(limit, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def _copy(fd: int, destination: Path, limit: int) -> int:
    """Copy at most `limit` bytes of the open file to `destination`; how many."""
    copied = 0
    with open(destination, "xb") as out:
        while copied < limit:
            chunk = os.read(fd, min(1 << 20, limit - copied))
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)
    return copied


def collect_artifacts(data_dir: str, into: Path, budget: int = ARTIFACTS_MAX) -> tuple[int, list[str]]:
    """Copy the run's log (its last bytes, within `budget`) to `into/gpuspace/run.log` and the
    regular files under `<data_dir>/artifacts` to `into/` while `budget` lasts, links and
    anything else left out. Returns the bytes copied and what was left out (and why)."""
    skipped: list[str] = []
    used = 0
    fd = open_under(data_dir, LOG)
    if fd is not None:
        try:
            size = os.fstat(fd).st_size
            os.lseek(fd, max(0, size - budget), os.SEEK_SET)
            (into / "gpuspace").mkdir(parents=True, exist_ok=True)
            used += _copy(fd, into / "gpuspace" / "run.log", budget)
        finally:
            os.close(fd)
    try:
        data_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return used, skipped
    try:
        try:
            art_fd = os.open("artifacts", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=data_fd)
        except OSError:
            return used, skipped
        try:
            for folder, _dirs, files, dir_fd in os.fwalk(".", dir_fd=art_fd, follow_symlinks=False):
                for name in sorted(files):
                    relative = posixpath.normpath(posixpath.join(folder, name))
                    if not relative.isprintable() or relative.startswith(("gpuspace/", "..")):
                        skipped.append(f"{relative!r} (its name)")
                        continue
                    try:
                        leaf = os.open(name, _FLAGS, dir_fd=dir_fd)
                    except OSError:
                        skipped.append(f"{relative} (a link, or unreadable)")
                        continue
                    try:
                        info = os.fstat(leaf)
                        if not stat.S_ISREG(info.st_mode):
                            skipped.append(f"{relative} (not a regular file)")
                            continue
                        if used + info.st_size > budget:
                            skipped.append(f"{relative} (over the {budget >> 20} MiB of artifacts kept per run)")
                            continue
                        (into / relative).parent.mkdir(parents=True, exist_ok=True)
                        used += _copy(leaf, into / relative, budget - used)
                    finally:
                        os.close(leaf)
        finally:
            os.close(art_fd)
    finally:
        os.close(data_fd)
    return used, skipped


# --- the tracker: the only place mlflow is imported -----------------------------------------


def repo_key(common_dir: Path) -> str:
    """Tells this repo's runs from those of another with the same name on a shared server."""
    return hashlib.sha256(f"{socket.gethostname()}:{common_dir}".encode()).hexdigest()[:16]


def _ms(moment: _dt.datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None


def generation(run) -> str:
    """What `gpuspace.logged` says of a run fully logged: a retried run ends anew."""
    return f"{run.state}:{run.finished.isoformat() if run.finished else ''}"


@dataclasses.dataclass
class Known:
    """A run of ours in MLflow, as this tracker knows it."""

    id: str
    status: str
    logged: str | None = None
    deleted: bool = False
    ready: bool = False  # this process set its params and tags, and read its steps from MLflow
    made: bool = False  # made by this process: no metric in MLflow yet
    offset: int = 0  # log bytes parsed
    counters: dict[str, int] = dataclasses.field(default_factory=dict)  # the parse's last step per key
    top: dict[str, int] = dataclasses.field(default_factory=dict)  # the last step MLflow holds per key
    last: dict[str, float] = dataclasses.field(default_factory=dict)  # ... and its value


@contextlib.contextmanager
def _making_store(uri: str) -> Iterator[None]:
    """MLflow makes a SQLite store's tables on its first use, and two processes doing so at once
    break it (`table _alembic_tmp_... already exists`): the tracker, `ui` (and tests) make it
    under one lock per store."""
    if not uri.startswith("sqlite:"):
        yield
        return
    import platformdirs

    from ..config import APP_NAME
    from ..locking import file_lock

    directory = platformdirs.user_state_path(APP_NAME) / "dispatch"
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.mlflow-init", timeout=600):
        yield


def open_client(uri: str, artifacts: str | None = None):
    """An MlflowClient whose store exists (made under the store's lock when it is ours; with
    `artifacts`, its Default experiment's artifacts go there, not to ./mlruns of the cwd)."""
    from mlflow.tracking import MlflowClient

    with _making_store(uri):
        if artifacts and uri.startswith("sqlite:") and not os.path.exists(uri.removeprefix("sqlite:///")):
            try:
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                SqlAlchemyStore(uri, artifacts)
            except ImportError:
                pass  # made by the client below, as MLflow makes it
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


class Tracker:
    def __init__(self, info, target: Target, listing: bool = True) -> None:
        self.info, self.target = info, target
        self.client = open_client(target.uri, target.artifacts)
        self.repo = repo_key(info.common_dir)
        self.host = socket.gethostname()
        self.experiment_id = self._experiment()
        self.runs: dict[str, Known] = {}
        self.sweeps: dict[str, Known] = {}
        self._models: dict[str, str] | None = None
        self._digests: dict[str, str | None] = {}
        self._listed = False
        self.watching: set[str] = set()  # runs running, or finished and not yet fully logged
        self.queued: set[str] = set()  # runs queued at the last turn
        self.failures = 0
        if listing:  # (a dispatcher making one run's MLflow run asks for that run alone)
            self._load_known()

    # MLflow's state -------------------------------------------------------------------------

    def _experiment(self) -> str:
        name = self.target.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=self.target.artifacts)
        except MlflowException:  # made meanwhile by another client
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _load_known(self) -> None:
        from mlflow.entities import ViewType

        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{TAG_REPO}` = '{self.repo}'",
                                           run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            for found in page:
                tags = found.data.tags
                known = Known(found.info.run_id, found.info.status, tags.get(TAG_LOGGED),
                              found.info.lifecycle_stage == "deleted")
                if TAG_RUN in tags:
                    self.runs.setdefault(tags[TAG_RUN], known)
                elif TAG_SWEEP in tags:
                    self.sweeps.setdefault(tags[TAG_SWEEP], known)
            token = page.token
            if not token:
                return

    def _find(self, key: str, value: str) -> Known | None:
        """The run made with this tag, if any (another tracker's, between our listing and now)."""
        from mlflow.entities import ViewType

        found = self.client.search_runs([self.experiment_id],
                                        f"tags.`{TAG_REPO}` = '{self.repo}' and tags.`{key}` = '{value}'",
                                        run_view_type=ViewType.ALL, max_results=1)
        if not found:
            return None
        return Known(found[0].info.run_id, found[0].info.status, found[0].data.tags.get(TAG_LOGGED),
                     found[0].info.lifecycle_stage == "deleted")

    # one turn -------------------------------------------------------------------------------

    def turn(self) -> tuple[bool, bool]:
        """Log what is new. Returns (something is left to log, something was logged)."""
        from . import store
        from .model import ACTIVE, FINISHED

        common = self.info.common_dir
        active = store.load(common, states=ACTIVE).runs
        seen = {run.id for run in active}
        earlier = sorted(self.watching - seen)
        candidates = [*active, *(store.load(common, ids=earlier).runs if earlier else [])]
        if not self._listed:  # once per tracker: the finished runs not yet fully logged
            self._listed = True
            candidates += [run for run in store.load(common, states=FINISHED).runs if run.id not in seen]
        self.queued = {run.id for run in active if run.state == "queued"}
        progressed, backlog, sweeps = False, 0, set()
        watching: set[str] = set()
        for run in sorted(candidates, key=lambda r: r.state in FINISHED):
            known = self.runs.get(run.id)
            if known is not None and known.deleted:
                continue
            if run.state == "queued" or (run.state in FINISHED and run.started is None and run.state != "failed"
                                         and known is None):
                continue  # not run (yet): nothing to log
            if run.state in FINISHED and known is not None and known.logged == generation(run):
                continue
            if run.state in FINISHED and not known:
                backlog += 1
                if backlog > BACKLOG_PER_TURN:
                    watching.add(run.id)
                    continue
            watching.add(run.id)
            try:
                if self.sync(run):
                    progressed = True
                if self.runs[run.id].logged == generation(run) or self.runs[run.id].deleted:
                    watching.discard(run.id)
                if run.sweep:
                    sweeps.add(run.sweep)
                self.failures = 0
            except Exception as error:  # noqa: BLE001 - one run's trouble (or the server's) is said and retried
                self.failures += 1
                say(f"{run.id}: cannot log to MLflow: {_one_line(error)}")
        for name in sorted(sweeps):
            try:
                self._sweep_status(name)
            except Exception as error:  # noqa: BLE001
                self.failures += 1
                say(f"sweep {name}: cannot log to MLflow: {_one_line(error)}")
        self.watching = watching
        return bool(watching), progressed

    def work_appeared(self) -> bool:
        """After the lock is let go: did a run start (or end) meanwhile?"""
        from . import store

        common = self.info.common_dir
        if store.load(common, states=("running", "preempted")).runs:
            return True
        return any(run.started is not None or run.state == "failed"
                   for run in (store.load(common, ids=sorted(self.queued)).runs if self.queued else []))

    # one run ------------------------------------------------------------------------------

    def sync(self, run) -> bool:
        """Bring the run's MLflow run up to date. True when something new was logged."""
        from .model import FINISHED

        known = self._mlflow_run(run)
        if known.deleted:
            return False
        if not known.ready:
            self._prepare(run, known)
        if run.state not in FINISHED and known.status != "RUNNING":  # queued again (a retry), and started
            self.client.update_run(known.id, status="RUNNING")
            known.status = "RUNNING"
        progressed = self._tail(run, known, final=run.state in FINISHED)
        if run.state in FINISHED:
            self._finish(run, known)
            progressed = True
        return progressed

    def _tags(self, run) -> dict[str, str]:
        tags = {TAG_REPO: self.repo, TAG_RUN: run.id, "gpuspace.snapshot": str(bool(run.snapshot)).lower(),
                "gpuspace.backend": run.backend, "mlflow.source.git.commit": run.commit,
                "mlflow.source.name": shlex.join(run.command), "mlflow.source.type": "JOB",
                "gpuspace.host": self.host, "mlflow.runName": run.id}
        try:
            import getpass

            tags["mlflow.user"] = getpass.getuser()
        except (OSError, KeyError):
            pass
        image = run.flags.get("image") or self._default_image()
        optional = {"mlflow.source.git.branch": run.branch, TAG_SWEEP: run.sweep, "gpuspace.job": run.job,
                    "gpuspace.image": image, "gpuspace.image_digest": self._digest(image),
                    "gpuspace.gpus": ",".join(run.gpus), "gpuspace.gpu_indices": ",".join(map(str, run.gpu_indices)),
                    "gpuspace.gpu_model": self._gpu_model(run), "gpuspace.data_dir": run.data_dir,
                    "gpuspace.worktree": run.worktree}
        if run.backend == "slurm":
            del tags["gpuspace.host"]  # the node is Slurm's choice
        tags.update({key: str(value) for key, value in optional.items() if value})
        return {key: value[:MAX_TAG] for key, value in tags.items()}

    def _default_image(self) -> str | None:
        try:
            return _settings_of(self.info).get("image")
        except GpuspaceError:
            return None

    def _digest(self, image: str | None) -> str | None:
        """The image as this host's engine has it: its registry digest, else its id (asked once
        per image per tracker; a Slurm node's engine may hold another, then this says ours)."""
        if not image:
            return None
        if image not in self._digests:
            self._digests[image] = None
            try:
                from ..engine.containers import Engine

                attrs = Engine().image_attrs(image) or {}
                self._digests[image] = (attrs.get("RepoDigests") or [attrs.get("Id")])[0]
            except Exception:  # noqa: BLE001 - a digest is a nicety: no engine, an image pulled on a node only
                pass
        return self._digests[image]

    def _gpu_model(self, run) -> str | None:
        """The GPUs' model name, when this host has them (asked once per tracker)."""
        if run.backend != "local" or not run.gpus:
            return None
        if self._models is None:
            self._models = {}
            try:
                from .. import gpus

                self._models = {gpu.uuid: gpu.name for gpu in gpus.inventory()}
            except Exception:  # noqa: BLE001 - a name is a nicety
                pass
        names = sorted({self._models[uuid] for uuid in run.gpus if uuid in self._models})
        return ", ".join(names) or None

    def _mlflow_run(self, run) -> Known:
        known = self.runs.get(run.id) or self._find(TAG_RUN, run.id)
        if known is None:
            tags = self._tags(run)
            if run.sweep:
                tags["mlflow.parentRunId"] = self._parent(run.sweep, run).id
            made = self.client.create_run(self.experiment_id, start_time=_ms(run.started or run.submitted),
                                          tags=tags, run_name=run.id)
            known = Known(made.info.run_id, made.info.status, made=True)
        self.runs[run.id] = known
        return known

    def _parent(self, sweep: str, run) -> Known:
        known = self.sweeps.get(sweep) or self._find(TAG_SWEEP, sweep)
        if known is None:
            tags = {TAG_REPO: self.repo, TAG_SWEEP: sweep, "mlflow.runName": sweep,
                    "mlflow.source.git.commit": run.commit, "gpuspace.host": self.host}
            made = self.client.create_run(self.experiment_id, start_time=_ms(run.started or run.submitted),
                                          tags=tags, run_name=sweep)
            known = Known(made.info.run_id, made.info.status)
        self.sweeps[sweep] = known
        return known

    def _prepare(self, run, known: Known) -> None:
        """Params and tags (again: the same values), and where each metric stands in MLflow."""
        from mlflow.entities import Param, RunTag

        params = [Param(key, str(value)[:MAX_PARAM]) for key, value in sorted(run.params.items()) if valid_key(key)]
        tags = self._tags(run)
        if run.sweep:
            tags["mlflow.parentRunId"] = self._parent(run.sweep, run).id
        tag_list = [RunTag(key, value) for key, value in tags.items()]
        for start in range(0, max(len(params), 1), 100):
            self.client.log_batch(known.id, params=params[start:start + 100])
        for start in range(0, len(tag_list), 100):
            self.client.log_batch(known.id, tags=tag_list[start:start + 100])
        if not known.made:
            current = self.client.get_run(known.id)
            known.status = current.info.status
            for key in current.data.metrics:
                history = self.client.get_metric_history(known.id, key)
                if history:
                    best = max(history, key=lambda m: (m.step, m.timestamp))
                    known.top[key], known.last[key] = best.step, best.value
        known.offset, known.counters, known.ready = 0, {}, True

    def _log(self, known: Known, points: Iterable[tuple[str, float, int]]) -> int:
        """Log the points above each key's last step in MLflow; how many."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        top, last = dict(known.top), dict(known.last)
        fresh = []
        for key, value, step in points:
            if step > top.get(key, -1):
                top[key], last[key] = step, value
                fresh.append(Metric(key, value, now, step))
        for start in range(0, len(fresh), 1000):
            self.client.log_batch(known.id, metrics=fresh[start:start + 1000])
        known.top, known.last = top, last
        return len(fresh)

    def _tail(self, run, known: Known, final: bool) -> bool:
        """Parse what the log has that is new: whole lines, at most 8 chunks a turn while the
        run runs (other runs advance too); all of it, the last line too, once it ended."""
        if not run.data_dir:
            return False
        logged, turns = 0, 0
        while final or turns < 8:
            turns += 1
            fd = open_under(run.data_dir, LOG)
            if fd is None:
                break
            try:
                size = os.fstat(fd).st_size
                if size < known.offset:  # cut by the container: read it anew (MLflow's steps keep out repeats)
                    known.offset, known.counters = 0, {}
                data = read_at(fd, known.offset, CHUNK)
            finally:
                os.close(fd)
            whole = split_complete(data, final and known.offset + len(data) >= size, len(data) == CHUNK)
            if whole:
                counters = dict(known.counters)
                points = parse(data[:whole].decode("utf-8", errors="replace"), counters)
                logged += self._log(known, points)
                known.offset, known.counters = known.offset + whole, counters
            if len(data) < CHUNK:
                break
        return logged > 0

    def _finish(self, run, known: Known) -> None:
        """metrics.json, the artifacts, the status, then the mark that it is all in MLflow."""
        values: dict[str, float] = {}
        if run.data_dir:
            fd = open_under(run.data_dir, "metrics.json")
            if fd is not None:
                try:
                    values = end_values(read_at(fd, 0, 1 << 20))
                finally:
                    os.close(fd)
            log = open_under(run.data_dir, LOG)
            if log is None and not values:
                values = dict(run.metrics or {})  # cleaned: what the record kept
            elif log is not None:
                os.close(log)
        else:
            values = dict(run.metrics or {})
        points = []
        for key, value in sorted(values.items()):
            if not valid_key(key) or not math.isfinite(value):
                continue
            if key not in known.top:
                points.append((key, value, 0))
            elif known.last.get(key) != value:
                points.append((key, value, known.top[key] + 1))
        self._log(known, points)
        if run.data_dir:
            with tempfile.TemporaryDirectory(prefix="gpuspace-track-") as folder:
                _used, skipped = collect_artifacts(run.data_dir, Path(folder))
                for what in skipped:
                    say(f"{run.id}: artifact left out: {what}")
                if any(Path(folder).iterdir()):
                    self.client.log_artifacts(known.id, folder)
        from mlflow.entities import RunTag

        extra = [RunTag("gpuspace.state", run.state)]
        if run.exit_code is not None:
            extra.append(RunTag("gpuspace.exit_code", str(run.exit_code)))
        if run.reason:
            extra.append(RunTag("gpuspace.reason", run.reason[:MAX_TAG]))
        self.client.log_batch(known.id, tags=extra)
        status = STATUS.get(run.state, "FAILED")
        self.client.set_terminated(known.id, status=status, end_time=_ms(run.finished) or int(time.time() * 1000))
        self.client.set_tag(known.id, TAG_LOGGED, generation(run))
        known.status, known.logged = status, generation(run)

    def _sweep_status(self, name: str) -> None:
        """A sweep's parent runs while any of its runs does; then FAILED if one failed, KILLED
        if all were stopped, else FINISHED."""
        from . import store
        from .model import FINISHED

        parent = self.sweeps.get(name)
        if parent is None:
            return
        runs = store.load(self.info.common_dir, sweep=name).runs
        if not runs:
            return
        if any(run.state not in FINISHED for run in runs):
            if parent.status != "RUNNING":
                self.client.update_run(parent.id, status="RUNNING")
                parent.status = "RUNNING"
            return
        states = {run.state for run in runs}
        status = "FAILED" if "failed" in states else "KILLED" if states == {"stopped"} else "FINISHED"
        if parent.status != status:
            ends = [run.finished for run in runs if run.finished]
            self.client.set_terminated(parent.id, status=status, end_time=_ms(max(ends)) if ends else None)
            parent.status = status


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def run_tracker(info, once: bool = False) -> int:
    """`git-gpuspace _track`: log the repo's runs until nothing is left (`once`: one turn),
    holding the repo's tracker lock; one line, no traceback, on failure."""
    target = settings(info)
    if target is None:
        say("tracking is off for this repo (tracking.uri none)")
        return 0
    if not installed():
        raise UsageError("MLflow is not installed: runs are not tracked", hint=INSTALL_HINT)
    path = lock_path(info.common_dir)
    tracker: Tracker | None = None
    while True:
        fd = _try_lock(path)
        if fd is None:
            say(f"a tracker is already logging the runs of {info.name}")
            return 0
        try:
            for attempt in range(3 if tracker is None else 0):
                try:
                    tracker = Tracker(info, target)
                    break
                except GpuspaceError:
                    raise
                except Exception as error:  # noqa: BLE001 - the store or server: one line
                    if attempt == 2:
                        raise TrackingError(f"cannot open the MLflow store {target.uri}: {_one_line(error)}") from None
                    say(f"cannot open the MLflow store {target.uri} (trying again): {_one_line(error)}")
                    time.sleep(2 + 3 * attempt)
            assert tracker is not None
            done = _loop(tracker, once)
        finally:
            os.close(fd)
        if once:
            if tracker.failures:
                raise TrackingError(f"some runs could not be logged to {target.uri} (see above)")
            return 0
        if not done or not tracker.work_appeared():  # a run started while we let go: go on
            return 0


class TrackingError(GpuspaceError):
    pass


def _loop(tracker: Tracker, once: bool) -> bool:
    """Turns until nothing is left (True), or, with no dispatcher alive, nothing new comes for
    IDLE_EXIT_S (False: the next dispatcher starts a tracker again)."""
    from . import at_work

    idle_since = None
    while True:
        left, progressed = tracker.turn()
        if once:
            return True
        if not left:
            return True
        now = time.monotonic()
        if progressed or at_work.alive(tracker.info.common_dir):
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since > IDLE_EXIT_S:
            say("no dispatcher is alive and nothing new comes: stopping (the next dispatcher starts a tracker)")
            return False
        time.sleep(min(60.0, POLL_S * 2 ** min(tracker.failures, 6)) if tracker.failures else POLL_S)


# --- `git gpuspace ui` -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mlflow_command() -> list[str]:
    """MLflow's console script next to our interpreter, else the module in isolated mode (no
    current directory on its path)."""
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.exists() else [sys.executable, "-I", "-m", "mlflow"]


UI_STOP_S = 10.0  # from SIGTERM to SIGKILL for the UI server and what it started


def _stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process and everything in its group, SIGKILL to what is left after
    `grace` seconds: nothing of it outlives us."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def serve_ui(info, port: int | None = None) -> int:
    """MLflow's UI for the repo's store on 127.0.0.1, in the foreground until Ctrl-C."""
    target = settings(info)
    if target is None:
        raise UsageError("tracking is off for this repo (tracking.uri none)",
                         hint="git gpuspace config unset tracking.uri (the repo's own store)")
    if target.uri.startswith(("http://", "https://")):
        print(target.uri)
        print(f"the runs of {info.name} are tracked on that server: open it there", file=sys.stderr)
        return 0
    if not installed():
        raise UsageError("MLflow is not installed", hint=INSTALL_HINT)
    port = port or _free_port()
    # `mlflow server` is `mlflow ui` with --workers on every MLflow from 2.9 on: one is plenty here
    command = [*mlflow_command(), "server", "--backend-store-uri", target.uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    if target.artifacts:
        Path(target.artifacts.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", target.artifacts]
    from .at_work import lock_path as dispatch_lock

    try:
        open_client(target.uri, target.artifacts)  # its tables made here, under the lock the tracker takes for that
    except GpuspaceError:
        raise
    except Exception as error:  # noqa: BLE001 - one line
        raise TrackingError(f"cannot open the MLflow store {target.uri}: {_one_line(error)}") from None
    print(f"http://127.0.0.1:{port}", flush=True)
    print(f"MLflow UI for {info.name} ({target.experiment}); Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        # a process group of its own: the server starts uvicorn, a job runner and its workers
        process = subprocess.Popen(command, cwd=dispatch_lock(info.common_dir).parent, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    except OSError as error:
        raise TrackingError(f"cannot start mlflow ui: {error.strerror or error}", hint=INSTALL_HINT) from None
    try:
        code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM
        _stop_group(process, UI_STOP_S)
        return 0
    if code not in (0, -2, 130):
        raise TrackingError(f"mlflow ui exited with {code}")
    return 0


