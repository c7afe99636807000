"""Metrics of a run: `/data/metrics.json` when the run writes one (a JSON object; its numbers,
and only those: a run that says what its metrics are is taken at its word), else from its log,
the last value of each `name=number` or `name: number` on a line. A training script needs no
import of ours. The data dir is the container's to write, so files are opened without following
links."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import untrusted_files
from ..errors import NotARegularFile
from .wrapper import LOG

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
METRIC = re.compile(rf"(?<![\w.-])([A-Za-z_][\w./-]*)\s*(?:=|:)\s*({NUMBER})(?![\w.])")
MAX_READ = 64 << 20  # the tail of a huge log is enough: metrics are the last values


def metrics(data_dir: str | None) -> dict[str, float]:
    if not data_dir:
        return {}
    written = _read_data(Path(data_dir) / "metrics.json")
    if written:
        try:
            document = json.loads(written)
        except ValueError:
            document = None
        if isinstance(document, dict):
            return {str(k): float(v) for k, v in document.items()
                    if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2 ** 1023)}
    found: dict[str, float] = {}
    for line in _read_data(Path(data_dir) / LOG).splitlines():
        for name, value in METRIC.findall(line):
            found[name] = float(value)
    return found


def _read(path: Path) -> str:
    """The file's last MAX_READ bytes; "" when there is none. What the container put there
    instead of a regular file (a FIFO, a device, a symlink) raises NotARegularFile."""
    try:
        return untrusted_files.read_bytes(path, MAX_READ, tail=True).decode(errors="replace")
    except OSError:
        return ""


def _read_data(path: Path) -> str:
    """For metrics, which are data only: what is not a regular file holds none."""
    try:
        return _read(path)
    except NotARegularFile:
        return ""


def read_log(data_dir: str) -> str:
    return _read(Path(data_dir) / LOG)
