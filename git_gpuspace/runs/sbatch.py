"""A run's resources as Slurm options: the one mapping that the Slurm backend submits with and
the export writes as `#SBATCH` lines."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

SETTINGS = ("partition", "account", "time", "qos")  # `slurm.<key>` settings passed as they are
MAX_SIGNAL_TIME = 65535  # the most seconds `--signal=...@sig_time` takes


@dataclass(frozen=True)
class Resources:
    gpus: int = 0
    cpus: float | None = None
    memory_bytes: int | None = None
    tasks: int = 1  # more than one: a job array, one task per run
    max_parallel: int | None = None  # of the array's tasks at once
    priority: int = 0  # higher starts first: Slurm's nice is its negative
    settings: dict = field(default_factory=dict)  # the effective settings (`slurm.partition`, ...)
    preemptible: bool = False  # Slurm may requeue it; SIGTERM `grace` seconds before its time is up
    grace: float = 30.0  # seconds its command has, after SIGTERM, to write a checkpoint


def options(name: str, resources: Resources) -> list[str]:
    found = [f"--job-name={name}"]
    if resources.gpus:
        found.append(f"--gres=gpu:{resources.gpus}")
    if resources.cpus:
        found.append(f"--cpus-per-task={max(1, math.ceil(resources.cpus))}")  # 1.5 CPUs need two
    if resources.memory_bytes:
        found.append(f"--mem={max(1, resources.memory_bytes >> 20)}M")
    for key in SETTINGS:
        if resources.settings.get(f"slurm.{key}"):
            found.append(f"--{key}={resources.settings[f'slurm.{key}']}")
    if resources.priority:
        found.append(f"--nice={-resources.priority}")
    if resources.preemptible:
        # requeued when Slurm preempts it (or `scontrol requeue`); and before its time limit, SIGTERM
        # to the batch shell (B:), which is the task that passes it to the container, `grace` seconds ahead
        found += ["--requeue", f"--signal=B:TERM@{min(MAX_SIGNAL_TIME, max(0, math.ceil(resources.grace)))}"]
    if resources.tasks > 1:
        found.append(f"--array=0-{resources.tasks - 1}" + (f"%{resources.max_parallel}" if resources.max_parallel else ""))
    if resources.settings.get("slurm.extra"):
        found += shlex.split(str(resources.settings["slurm.extra"]))
    return found
