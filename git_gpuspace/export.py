"""What a worktree, a run or a sweep would be under another tool: a Compose service, a
devcontainer.json, a Kubernetes Pod or Indexed Job, an sbatch script. Pure functions of what
git-gpuspace knows (the binding or the runs); the files are what a user would otherwise write
by hand. Compose files and Kubernetes manifests are written as JSON, which is YAML too."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field

from .runs.sbatch import Resources, options
from .workspace import DATA_MOUNT

WORKSPACE = "/workspace"
GIT_IMAGE = "alpine/git:2.45.2"  # the init container that checks the commit out (Kubernetes)


@dataclass(frozen=True)
class Target:
    """One container's worth: a worktree's binding, or a run (then `commands` has one entry), or a
    sweep (one command per run, in order)."""

    name: str
    image: str
    worktree: str
    commit: str
    gpus: list[str] = field(default_factory=list)  # UUIDs (a binding) ...
    gpu_count: int = 0  # ... or how many (a run, a sweep: allocated where it runs)
    commands: list[list[str]] = field(default_factory=list)  # empty: the workspace's idle process
    ports: list[tuple[str, int, int, str]] = field(default_factory=list)  # name, container, host, address
    memory_bytes: int | None = None
    cpus: float | None = None
    shm_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    max_parallel: int | None = None
    remote: str | None = None  # where Kubernetes clones the commit from
    priority: int = 0  # a run's or sweep's (Slurm: --nice)
    slurm: dict = field(default_factory=dict)  # the `slurm.*` settings (partition, account, ...)


def compose(target: Target) -> str:
    """A Compose service per command (one for a worktree): GPUs reserved by device id or count."""
    services = {}
    for index, command in enumerate(target.commands or [None]):
        name = target.name if len(target.commands) <= 1 else f"{target.name}-{index}"
        service: dict = {
            "image": target.image,
            "working_dir": WORKSPACE,
            "init": True,
            "user": f"{os.getuid()}:{os.getgid()}",
            "volumes": _binds(target),
            "environment": dict(target.env),
        }
        if command:
            service["command"] = command
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
    return _json({"version": "3.8", "services": services})


def devcontainer(target: Target) -> str:
    run_args = ["--gpus", "device=" + ",".join(target.gpus) if target.gpus else str(target.gpu_count)] \
        if target.gpus or target.gpu_count else []
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
        "mounts": [f"source={source},target={dest},type=bind" for source, dest in _bind_pairs(target)[1:]],
        "runArgs": run_args,
        "forwardPorts": [port for _, port, _, _ in target.ports],
        "containerEnv": dict(target.env),
    }
    return _json(config)


def kubernetes(target: Target) -> str:
    """A Pod for a worktree or a run; an Indexed Job for a sweep (each index one run). The commit
    is checked out from the repo's remote by an init container into the Pod's own volume."""
    gpus = len(target.gpus) or target.gpu_count
    limits = {key: value for key, value in (("nvidia.com/gpu", str(gpus) if gpus else None),
                                            ("memory", str(target.memory_bytes) if target.memory_bytes else None),
                                            ("cpu", str(target.cpus) if target.cpus else None)) if value}
    checkout = {
        "name": "checkout",
        "image": GIT_IMAGE,
        "command": ["sh", "-c", f"git clone --no-checkout {shlex.quote(target.remote or '')} {WORKSPACE} && "
                                f"git -C {WORKSPACE} checkout --detach {target.commit}"],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
    }
    main = {
        "name": "main",
        "image": target.image,
        "workingDir": WORKSPACE,
        "env": [{"name": key, "value": value} for key, value in sorted(target.env.items())]
               + [{"name": "GPUSPACE_COMMIT", "value": target.commit}],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}, {"name": "data", "mountPath": DATA_MOUNT}]
                        + ([{"name": "shm", "mountPath": "/dev/shm"}] if target.shm_bytes else []),
    }
    if limits:
        main["resources"] = {"limits": limits}
    volumes = [{"name": "workspace", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]
    if target.shm_bytes:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(target.shm_bytes)}})
    if len(target.commands) > 1:
        main["command"] = ["sh", "-c", _case("JOB_COMPLETION_INDEX", target.commands)]
        spec = {"initContainers": [checkout], "containers": [main], "volumes": volumes, "restartPolicy": "Never"}
        return _json({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": _k8s_name(target.name)},
            "spec": {"completionMode": "Indexed", "completions": len(target.commands),
                     "parallelism": target.max_parallel or len(target.commands), "backoffLimitPerIndex": 0,
                     "maxFailedIndexes": len(target.commands), "template": {"spec": spec}},
        })
    if target.commands:
        main["command"] = target.commands[0]
    else:
        main["command"] = ["sleep", "infinity"]
    spec = {"initContainers": [checkout], "containers": [main], "volumes": volumes,
            "restartPolicy": "Never" if target.commands else "Always"}
    return _json({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": _k8s_name(target.name)}, "spec": spec})


def sbatch(target: Target) -> str:
    """An sbatch script: the job runs the container on its node's Docker engine with the GPUs
    Slurm gave it (SLURM_JOB_GPUS, never all), the worktree at /workspace, the data dir at /data;
    a sweep is a job array whose task index picks the run."""
    resources = Resources(gpus=len(target.gpus) or target.gpu_count, cpus=target.cpus, memory_bytes=target.memory_bytes,
                          tasks=len(target.commands), max_parallel=target.max_parallel, priority=target.priority,
                          settings=dict(target.slurm))
    lines = ["#!/bin/sh", *(f"#SBATCH {shlex.quote(option)}" for option in options(target.name, resources))]
    lines += ["set -eu",
              'devices=""',
              '[ -z "${SLURM_JOB_GPUS:-}" ] || devices="--gpus device=${SLURM_JOB_GPUS}"']
    binds = " ".join(f"--mount {shlex.quote(f'type=bind,source={source},target={dest}')}"
                     for source, dest in _bind_pairs(target))
    limits = " ".join(option for option in (
        f"--memory {target.memory_bytes}" if target.memory_bytes else "",
        f"--cpus {target.cpus}" if target.cpus else "",
        f"--shm-size {target.shm_bytes}" if target.shm_bytes else "") if option)
    env = " ".join(f"-e {shlex.quote(f'{key}={value}')}" for key, value in sorted(target.env.items()))
    docker = (f"docker run --rm --init --user \"$(id -u):$(id -g)\" $devices -w {WORKSPACE} {binds} "
              f"{limits} {env} {shlex.quote(target.image)}").replace("  ", " ")
    if len(target.commands) > 1:
        lines.append(f'{docker} sh -c {shlex.quote(_case("SLURM_ARRAY_TASK_ID", target.commands))}')
    elif target.commands:
        lines.append(f"{docker} {' '.join(shlex.quote(word) for word in target.commands[0])}")
    else:
        lines.append(f"{docker} sleep infinity")
    return "\n".join(lines) + "\n"


FORMATS = {"compose": compose, "devcontainer": devcontainer, "k8s": kubernetes, "slurm": sbatch}


def _bind_pairs(target: Target) -> list[tuple[str, str]]:
    pairs = [(target.worktree, WORKSPACE)]
    if target.data_dir:
        pairs.append((target.data_dir, DATA_MOUNT))
    return pairs


def _binds(target: Target) -> list[str]:
    return [f"{source}:{dest}" for source, dest in _bind_pairs(target)]


def _case(variable: str, commands: list[list[str]]) -> str:
    """A shell `case` on an index variable, one branch per command."""
    branches = "".join(f" {index}) exec {' '.join(shlex.quote(word) for word in command)} ;;"
                       for index, command in enumerate(commands))
    return f'case "${variable}" in{branches} *) echo "no run for index ${variable}" >&2; exit 2 ;; esac'


def _k8s_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return cleaned[:63].rstrip("-") or "gpuspace"


def _json(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"

