"""What runs in a run's container around its command, on any backend: the wrapper, the exit
file it leaves in the data dir, and the log. The data dir is the container's to write, so what
is read back is data only."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path

from .. import data_dirs
from .model import Run

LOG = Path("logs") / "run.log"  # in the data dir; /data/logs/run.log in the container

# The command runs under a shell of ours (its container's init passes signals to that shell): its
# output goes to the container's log and to /data/logs/run.log (through a FIFO to tee), and its
# exit code to /data/.gpuspace/exit, which says `running` until then: a container that exited
# with `running` there was killed from outside (the engine or the machine died), so the run was
# interrupted. SIGTERM and SIGINT go on to the command (a preempted run checkpoints in its grace
# period; a plain `sh -c "a | b"` would end the shell and leave the command running), and the
# wrapper waits for it, through any number of signals, for its own exit code. One that got to its
# end leaves the exit file empty when its log or its code did not all fit (a full disk): emptying
# or rewriting a file that exists needs no new inode (and mostly reuses its block).
EXIT_FILE = "exit"
STARTED = "running"
WRAPPER = ('rm -f /data/.gpuspace/exit; echo running > /data/.gpuspace/exit; mkdir -p /data/logs; '
           'log=/tmp/.gpuspace-log.$$; rm -f "$log"; mkfifo "$log" || exit 1; '
           'tee -a /data/logs/run.log < "$log" & teed=$!; '
           # a signal before the command exists is passed on once it does
           'child=; asked=; trap \'asked=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null\' TERM INT; '
           '"$@" > "$log" 2>&1 & child=$!; [ -z "$asked" ] || kill -TERM "$child" 2>/dev/null; '
           # a wait cut short by a signal says 128+signal: wait again while the command lives
           'while :; do wait "$child"; code=$?; kill -0 "$child" 2>/dev/null || break; done; '
           # ... and once more, for a status the shell took while a signal cut that wait short
           'wait "$child" 2>/dev/null; last=$?; [ "$last" = 127 ] || code=$last; '
           'wait "$teed"; logged=$?; rm -f "$log"; '
           'if [ "$logged" = 0 ]; then echo "$code" > /data/.gpuspace/exit; else : > /data/.gpuspace/exit; fi; '
           'exit "$code"')


def container_command(argv: list[str]) -> list[str]:
    return ["sh", "-c", WRAPPER, "sh", *argv]


def exit_written(run: Run) -> int | None:
    """The exit code the run's wrapper wrote when its command ended; None until then (`running`,
    or what is there is not one: the container writes that file, so it is read as data only)."""
    text = (data_dirs.read_private(Path(run.data_dir), EXIT_FILE) or "").strip() if run.data_dir else ""
    return int(text) if text.isdigit() and len(text) <= 3 else None


def exit_time(run: Run) -> _dt.datetime | None:
    """When the wrapper wrote the exit code (its command's end): the exit file's time, None when
    there is none. The container may set that time: model.end keeps it within the run's span."""
    if not run.data_dir:
        return None
    with contextlib.suppress(OSError, ValueError, OverflowError):
        written = os.stat(Path(run.data_dir) / data_dirs.PRIVATE / EXIT_FILE, follow_symlinks=False)
        return _dt.datetime.fromtimestamp(written.st_mtime, _dt.timezone.utc)
    return None
