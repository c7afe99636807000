"""A foreground run's output as it is written, as `docker run` shows it: read from the log its
wrapper keeps in the data dir (the same bytes the engine has, and still there when the container
is gone), a piece at a time between the dispatcher's looks at the queue. The data dir is the
container's to write: the log is opened without following any link on the way."""

from __future__ import annotations

from typing import BinaryIO

from ..untrusted_files import read_under
from .model import Run
from .wrapper import LOG

CHUNK = 1 << 20  # at most this much a look: a chatty run cannot hold the queue up


class OutputStream:
    """Copies the new bytes of one run's log to `out` each time it is pumped."""

    def __init__(self, run_id: str, out: BinaryIO) -> None:
        self.run_id, self.out = run_id, out
        self.data_dir: str | None = None
        self.offset = 0

    def pump(self, runs: list[Run], drain: bool = False) -> None:
        """What the run wrote since the last look (with `drain`: all of it, as it has ended)."""
        run = next((run for run in runs if run.id == self.run_id), None)
        if run is not None and run.data_dir and run.state != "queued":
            if run.data_dir != self.data_dir:  # its first start (a retry appends to the same log)
                self.data_dir, self.offset = run.data_dir, 0
        if self.data_dir is None:
            return
        while True:
            found = read_under(self.data_dir, LOG.as_posix(), CHUNK, self.offset)
            if not found:
                return
            self.out.write(found)
            self.out.flush()
            self.offset += len(found)
            if not drain and len(found) < CHUNK:
                return

