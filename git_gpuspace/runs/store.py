"""The runs of a repo, queued and finished: `.git/gpuspace-runs.toml`, beside the state file and
under the same lock. "Queued" lives only here; what ran is the engine's (the container's
labels and exit code), so a dispatcher that dies loses nothing."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import tomli_w

from .. import state, untrusted_files
from ..errors import StateError
from .model import ID, STATES, Run, Sweep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FILE_NAME = "gpuspace-runs.toml"
@dataclass
class Runs:
    path: Path
    runs: list[Run] = field(default_factory=list)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    issued: dict[str, int] = field(default_factory=dict)  # last number per id prefix: ids are never reused

    def find(self, run_id: str) -> Run | None:
        return next((run for run in self.runs if run.id == run_id), None)

    def next_id(self, prefix: str) -> str:
        """`<prefix>-<n>`, never one given before (a cleaned run's data dir and ref stay apart)."""
        taken = {run.id for run in self.runs}
        number = self.issued.get(prefix, 0) + 1
        while f"{prefix}-{number}" in taken:
            number += 1
        self.issued[prefix] = number
        return f"{prefix}-{number}"

    def save(self) -> None:
        document = {
            "schema": 1,
            "issued": dict(self.issued),
            "sweeps": [{key: value for key, value in asdict(s).items() if value is not None} for s in self.sweeps.values()],
            "runs": [{key: value for key, value in asdict(r).items() if value is not None} for r in self.runs],
        }
        state.atomic_write(self.path, tomli_w.dumps(document).encode())


def load(common_dir: Path) -> Runs:
    path = common_dir / FILE_NAME
    try:
        # in the common dir, no container's to write; still never a FIFO or a symlink's target
        document = tomllib.loads(untrusted_files.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        return Runs(path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}", hint="fix or move the file by hand") from None
    try:
        runs = [Run(**entry) for entry in document.get("runs", [])]
        sweeps = {entry["name"]: Sweep(**entry) for entry in document.get("sweeps", [])}
    except (TypeError, KeyError) as error:
        raise StateError(f"{path}: a run or sweep entry is malformed ({error})", hint="fix or move the file by hand") from None
    for index, run in enumerate(runs):
        if not ID.match(run.id) or run.state not in STATES:
            raise StateError(f"{path}: runs[{index}] has a bad id or state", hint="fix or move the file by hand")
    issued = {str(k): int(v) for k, v in (document.get("issued") or {}).items() if isinstance(v, int)}
    return Runs(path, runs, sweeps, issued)


@contextlib.contextmanager
def locked(common_dir: Path) -> Iterator[Runs]:
    """The repo's lock (the one the state file uses), and the runs as they are now."""
    with state.locked(common_dir):
        yield load(common_dir)
