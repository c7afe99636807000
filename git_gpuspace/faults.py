"""Named points where tests inject faults, as git does with its GIT_TEST_* variables.

GPUSPACE_FAULT_POINT=<name> (GPUSPACE_FAULT_SKIP=N: passed N times first) and GPUSPACE_FAULT_ACTION=kill (SIGKILL this process, as a
power cut would), fail (an error there, as a full disk or a dead engine would give: what was
made must be rolled back) or run:<shell command> (e.g. stop the engine mid-command). Unset,
each checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import subprocess


_passed: dict[str, int] = {}


def checkpoint(name: str) -> None:
    if os.environ.get("GPUSPACE_FAULT_POINT") != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] <= int(os.environ.get("GPUSPACE_FAULT_SKIP", "0") or 0):
        return
    action = os.environ.get("GPUSPACE_FAULT_ACTION", "kill")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "fail":
        from .errors import GpuspaceError

        raise GpuspaceError(f"injected failure at {name}")
    elif action.startswith("run:"):
        subprocess.run(action[len("run:"):], shell=True, check=False)
