"""What a worktree, a run or a sweep would be under another tool: a Compose service, a
devcontainer.json, a Kubernetes Pod or Indexed Job, an sbatch script. Pure functions of what
git-gpuspace knows (the binding or the runs); the files are what a user would otherwise write
by hand, and each reproduces what the local backend does: every run's own worktree (or commit),
environment and persistent /data. Compose files and Kubernetes manifests are written as JSON,
which is YAML too (a manifest opens with a YAML comment on what the user must fill in)."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from dataclasses import dataclass, field

from .installation import WORKSPACE
from .runs.sbatch import Resources, options
from .engine.container_env import CACHE_MOUNT
from .data_dirs import DATA_MOUNT

GIT_IMAGE = "alpine/git:2.45.2"  # the init container that checks the commit out (Kubernetes)
CLAIM_PLACEHOLDER = "CHANGE-ME"  # the PersistentVolumeClaim that holds /data on Kubernetes: the user's to name


@dataclass(frozen=True)
class Task:
    """One container's process: a run (its command, pinned worktree and commit, environment and
    data dir), or a bound worktree's own container (no command)."""

    worktree: str
    commit: str
    command: list[str] | None = None  # None: the workspace's idle process
    env: dict[str, str] = field(default_factory=dict)  # all of it, as the local backend sets it
    data_dir: str | None = None
    label: str = ""  # the run id, or the container's name


@dataclass(frozen=True)
class Target:
    """A worktree's binding or a run (one task), or a sweep (one task per run, in order)."""

    name: str
    image: str
    tasks: list[Task] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)  # UUIDs (a binding) ...
    gpu_count: int = 0  # ... or how many (a run, a sweep: allocated where it runs)
    ports: list[tuple[str, int, int, str]] = field(default_factory=list)  # name, container, host, address
    memory_bytes: int | None = None
    cpus: float | None = None
    shm_bytes: int | None = None
    caches: list[tuple[str, str]] = field(default_factory=list)  # host dir, mount: shared by every container
    max_parallel: int | None = None
    remote: str | None = None  # where Kubernetes clones the commit from
    priority: int = 0  # a run's or sweep's (Slurm: --nice)
    slurm: dict = field(default_factory=dict)  # the `slurm.*` settings (partition, account, ...)
    preemptible: bool = False  # Slurm: --requeue, and SIGTERM `grace` seconds before its time is up
    grace: float = 30.0
    # Shorthand for tasks that share one worktree, environment and data dir: one per command
    # (none: the workspace's idle process).
    worktree: str = ""
    commit: str = ""
    commands: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            tasks = [Task(self.worktree, self.commit, command, dict(self.env), self.data_dir, self.name)
                     for command in self.commands or [None]]
            object.__setattr__(self, "tasks", tasks)  # frozen: set once, here

    @property
    def sweep(self) -> bool:
        return len(self.tasks) > 1


def compose(target: Target) -> str:
    """A Compose service per task, each with its worktree, environment and data dir: GPUs
    reserved by device id or count."""
    services = {}
    for index, task in enumerate(target.tasks):
        name = target.name if not target.sweep else f"{target.name}-{index}"
        service: dict = {
            "image": target.image,
            "working_dir": WORKSPACE,
            "init": True,
            "user": f"{os.getuid()}:{os.getgid()}",
            "volumes": [f"{source}:{dest}" for source, dest in _bind_pairs(target, task)],
            "environment": dict(task.env),
        }
        if task.command:
            service["command"] = task.command
        if target.ports:
            service["ports"] = [f"{address}:{host}:{port}" for _, port, host, address in target.ports]
        if target.shm_bytes:
            service["shm_size"] = str(target.shm_bytes)
        device: dict = {"driver": "nvidia", "capabilities": ["gpu"]}
        if target.gpus:
            device["device_ids"] = list(target.gpus)
        elif target.gpu_count:
            device["count"] = target.gpu_count
        resources: dict = {}
        if target.gpus or target.gpu_count:
            resources["reservations"] = {"devices": [device]}
        limits = {key: value for key, value in (("memory", str(target.memory_bytes) if target.memory_bytes else None),
                                                ("cpus", str(target.cpus) if target.cpus else None)) if value}
        if limits:
            resources["limits"] = limits
        if resources:
            service["deploy"] = {"resources": resources}
        services[name] = service
    return _json({"version": "3.8", "services": _literal(services)})


def devcontainer(target: Target) -> str:
    """One container (the caller refuses a sweep): the folder it is opened from is /workspace."""
    [task] = target.tasks
    gpus = gpus_value(target.gpus, target.gpu_count)
    run_args = ["--gpus", gpus] if gpus else []
    if target.memory_bytes:
        run_args += ["--memory", str(target.memory_bytes)]
    if target.cpus:
        run_args += ["--cpus", str(target.cpus)]
    if target.shm_bytes:
        run_args += ["--shm-size", str(target.shm_bytes)]
    config = {
        "name": target.name,
        "image": target.image,
        "workspaceMount": f"source=${{localWorkspaceFolder}},target={WORKSPACE},type=bind",
        "workspaceFolder": WORKSPACE,
        "mounts": [_mount(source, dest) for source, dest in _bind_pairs(target, task)[1:]],
        "runArgs": run_args,
        "forwardPorts": [port for _, port, _, _ in target.ports],
        "containerEnv": dict(task.env),
    }
    return _json(config)


def kubernetes(target: Target) -> str:
    """A Pod for a worktree or a run; an Indexed Job for a sweep (each index one run, with its
    commit and environment). The commit is checked out from the repo's remote by an init
    container into the Pod's own volume; /data is a folder per run of a PersistentVolumeClaim
    the user names (a cluster has no path of this host)."""
    gpus = len(target.gpus) or target.gpu_count
    limits = {key: value for key, value in (("nvidia.com/gpu", str(gpus) if gpus else None),
                                            ("memory", str(target.memory_bytes) if target.memory_bytes else None),
                                            ("cpu", str(target.cpus) if target.cpus else None)) if value}
    shared = _shared_env(target.tasks)
    commits = {task.commit for task in target.tasks}
    commit = next(iter(commits)) if len(commits) == 1 else "$commit"
    pick = "" if len(commits) == 1 else _case("JOB_COMPLETION_INDEX", [
        f"commit={task.commit}" for task in target.tasks]) + "; "
    checkout = {
        "name": "checkout",
        "image": GIT_IMAGE,
        "command": _literal(["sh", "-c", f"{pick}git clone --no-checkout {shlex.quote(target.remote or '')} {WORKSPACE} && "
                                f"git -C {WORKSPACE} checkout --detach {commit}"]),
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
    }
    data = {"name": "data", "mountPath": DATA_MOUNT}
    if target.sweep:
        data["subPathExpr"] = f"{_k8s_name(target.name)}/$(JOB_COMPLETION_INDEX)"  # index i: the i-th run
    else:
        data["subPath"] = _k8s_name(target.tasks[0].label or target.name)
    main = {
        "name": "main",
        "image": target.image,
        "workingDir": WORKSPACE,
        "env": [{"name": key, "value": _literal(value)} for key, value in sorted(shared.items())],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}, data, {"name": "cache", "mountPath": CACHE_MOUNT}]
                        + ([{"name": "shm", "mountPath": "/dev/shm"}] if target.shm_bytes else []),
    }
    if limits:
        main["resources"] = {"limits": limits}
    volumes = [{"name": "workspace", "emptyDir": {}},
               {"name": "data", "persistentVolumeClaim": {"claimName": CLAIM_PLACEHOLDER}},
               {"name": "cache", "emptyDir": {}}]
    if target.shm_bytes:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(target.shm_bytes)}})
    note = (f"# /data is a PersistentVolumeClaim of yours: replace claimName {CLAIM_PLACEHOLDER} below with its name\n"
            f"# (`kubectl get pvc`); each run keeps its /data in a folder of its own there"
            + (f" ({_k8s_name(target.name)}/<index>).\n" if target.sweep else f" ({data['subPath']}).\n"))
    if target.sweep:
        main["command"] = _literal(["sh", "-c", _case("JOB_COMPLETION_INDEX", [
            _exported(task.env, shared) + "exec " + shlex.join(task.command or ["sleep", "infinity"])
            for task in target.tasks])])
        spec = {"initContainers": [checkout], "containers": [main], "volumes": volumes, "restartPolicy": "Never"}
        return note + _json({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": _k8s_name(target.name)},
            "spec": {"completionMode": "Indexed", "completions": len(target.tasks),
                     "parallelism": target.max_parallel or len(target.tasks), "backoffLimitPerIndex": 0,
                     "maxFailedIndexes": len(target.tasks), "template": {"spec": spec}},
        })
    [task] = target.tasks
    main["command"] = _literal(task.command or ["sleep", "infinity"])
    spec = {"initContainers": [checkout], "containers": [main], "volumes": volumes,
            "restartPolicy": "Never" if task.command else "Always"}
    return note + _json({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": _k8s_name(target.name)}, "spec": spec})


def sbatch(target: Target) -> str:
    """An sbatch script: the job runs the container on its node's Docker engine with the GPUs
    Slurm gave it (SLURM_JOB_GPUS, never all), the run's worktree at /workspace, its data dir at
    /data and its environment; a sweep is a job array whose task index picks the run."""
    resources = Resources(gpus=len(target.gpus) or target.gpu_count, cpus=target.cpus, memory_bytes=target.memory_bytes,
                          tasks=len(target.tasks), max_parallel=target.max_parallel, priority=target.priority,
                          settings=dict(target.slurm), preemptible=target.preemptible, grace=target.grace)
    shared = _shared_env(target.tasks)
    common = [
        "--rm", "--init", '--user "$(id -u):$(id -g)"', '${gpus:+--gpus "$gpus"}', "-w", WORKSPACE,
        *(f"--mount {shlex.quote(_mount(source, dest))}" for source, dest in target.caches),
        *(f"--memory {target.memory_bytes}" for _ in [1] if target.memory_bytes),
        *(f"--cpus {target.cpus}" for _ in [1] if target.cpus),
        *(f"--shm-size {target.shm_bytes}" for _ in [1] if target.shm_bytes),
        *(f"-e {shlex.quote(f'{key}={value}')}" for key, value in sorted(shared.items())),
    ]
    lines = ["#!/bin/sh", *(f"#SBATCH {shlex.quote(option)}" for option in options(target.name, resources)),
             "set -eu",
             f"image={shlex.quote(target.image)}",
             "# Docker reads --gpus as CSV fields: a list of devices is one field, quoted",
             'gpus=""',
             '[ -z "${SLURM_JOB_GPUS:-}" ] || gpus="\\"device=$SLURM_JOB_GPUS\\""']
    if target.caches:
        lines.append("mkdir -p " + " ".join(shlex.quote(source) for source, _ in target.caches))
    lines += ["# a run: its data dir (made if missing), then its mounts, its own environment, the image, its command",
              "task() {",
              '  [ -z "$1" ] || mkdir -p "$1"',
              "  shift",
              f"  exec docker run {' '.join(common)} \"$@\"",
              "}"]
    calls = [_task_call(target, task, shared) for task in target.tasks]
    if target.sweep:
        lines.append(_case("SLURM_ARRAY_TASK_ID", calls, "\n"))
    else:
        lines.append(calls[0])
    return "\n".join(lines) + "\n"


FORMATS = {"compose": compose, "devcontainer": devcontainer, "k8s": kubernetes, "slurm": sbatch}


def gpus_value(uuids: list[str], count: int) -> str | None:
    """Docker's --gpus value: its fields are CSV, so a device list (it has commas) is one quoted
    field (`"device=GPU-a,GPU-b"`), as `docker run --help` asks for."""
    if uuids:
        return _csv(["device=" + ",".join(uuids)])
    return str(count) if count else None


def _task_call(target: Target, task: Task, shared: dict[str, str]) -> str:
    own = _bind_pairs(target, task)[:len(_bind_pairs(target, task)) - len(target.caches)]  # the caches: in `task`
    mounts = [f"--mount {shlex.quote(_mount(source, dest))}" for source, dest in own]
    env = [f"-e {shlex.quote(f'{key}={value}')}" for key, value in sorted(task.env.items()) if key not in shared]
    command = shlex.join(task.command) if task.command else "sleep infinity"
    return " ".join(["task", shlex.quote(task.data_dir or ""), *mounts, *env, '"$image"', command])


def _bind_pairs(target: Target, task: Task) -> list[tuple[str, str]]:
    pairs = [(task.worktree, WORKSPACE)]
    if task.data_dir:
        pairs.append((task.data_dir, DATA_MOUNT))
    return pairs + list(target.caches)


def _mount(source: str, dest: str) -> str:
    """A --mount (and devcontainer.json `mounts`) value: CSV fields, so a path with a comma is quoted."""
    return _csv(["type=bind", f"source={source}", f"target={dest}"])


def _csv(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def _literal(value):
    """Compose interpolates `$VAR` in every value, Kubernetes `$(VAR)` in a container's command
    and env: a `$` of the run's own (its command's shell variables) is written `$$`, which both
    read as one `$`."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: _literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_literal(item) for item in value]
    return value


def _shared_env(tasks: list[Task]) -> dict[str, str]:
    """The variables every task has with the same value: written once."""
    first, *rest = [task.env for task in tasks]
    return {key: value for key, value in first.items() if all(env.get(key) == value for env in rest)}


def _exported(env: dict[str, str], shared: dict[str, str]) -> str:
    return "".join(f"export {shlex.quote(f'{key}={value}')}; " for key, value in sorted(env.items()) if key not in shared)


def _case(variable: str, branches: list[str], separator: str = " ") -> str:
    """A shell `case` on an index variable, one branch per task (its shell text)."""
    body = "".join(f"{separator}{index}) {branch} ;;" for index, branch in enumerate(branches))
    return (f'case "${{{variable}:-}}" in{body}{separator}*) echo "no run for index ${{{variable}:-}}" >&2; exit 2 ;;'
            f"{separator}esac")


def _k8s_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return cleaned[:63].rstrip("-") or "gpuspace"


def _json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"
