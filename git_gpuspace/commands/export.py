"""`git gpuspace export <worktree|run|sweep> --to compose|devcontainer|k8s|slurm [-o FILE]`:
what the binding, run or sweep would be under another tool (see export.py), with what the local
backend gives each container: its worktree, environment and data dir."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..engine import container_env
from .. import data_dirs, export, state
from ..git import worktrees
from ..config import effective
from ..errors import UsageError
from ..lifecycle import resolve_worktree
from ..runs import store as run_store
from ..runs.model import Run, params_env
from ..runs.slurm import data_dir_of
from ..settings import settings_from

HOST_LOCAL = ("compose", "devcontainer")  # run on this host: the data dirs and caches are made here


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    target = _target(info, args.what, args.to)
    if args.to == "k8s":
        _warn_unpushed(info, target)
    text = export.FORMATS[args.to](target)
    if args.output:
        Path(args.output).write_text(text)
        print(f"Wrote {args.output} ({args.to}, {target.name})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _target(info: worktrees.RepoInfo, what: str, to: str) -> export.Target:
    """A run id, a sweep name, or a bound worktree (path, directory name or branch)."""
    known = run_store.load(info.common_dir)
    current = state.load(info.common_dir)
    remote = _remote(info)[1] if to == "k8s" else None
    runs = [run for run in known.runs if run.id == what] or [run for run in known.runs if run.sweep == what]
    if runs:
        if to == "devcontainer" and len(runs) > 1:
            raise UsageError(f"a devcontainer.json is one container, and sweep '{what}' has {len(runs)} runs",
                             hint=f"export one of its runs: git gpuspace export {runs[0].id} --to devcontainer")
        first = runs[0]
        settings = settings_from(current.defaults, dict(first.flags), False)
        sweep = known.sweeps.get(first.sweep) if first.sweep == what else None
        limits = settings.limits
        tasks = [_run_task(info, current.defaults, run, settings.env, to) for run in runs]
        return export.Target(
            name=what, image=settings.image, tasks=tasks,
            gpu_count=settings.request.count or len(settings.request.ids),
            memory_bytes=limits.memory_bytes, cpus=limits.cpus, shm_bytes=limits.shm_bytes, caches=_caches(to),
            max_parallel=sweep.max_parallel if sweep else None, remote=remote, priority=first.priority,
            slurm={key: value for key, value in effective(current.defaults, dict(first.flags)).items()
                   if key.startswith("slurm.")})
    try:
        worktree = resolve_worktree(info, what)
    except UsageError:
        raise UsageError(f"'{what}' is no run, sweep or worktree here",
                         hint="name a worktree (path, directory or branch), a run id or a sweep") from None
    binding = current.find(worktree.path)
    if binding is None or binding.pending:
        raise UsageError(f"'{worktree.path}' has no container to export", hint=f"git gpuspace bind {worktree.path}")
    # the environment lifecycle.py gives the binding's container
    env = {**container_env.environment(binding.ports, container_env.context(Path(binding.path), binding.branch, worktree.head)),
           **binding.env}
    task = export.Task(worktree=binding.path, commit=worktree.head or "", env=env, data_dir=binding.data_dir,
                       label=binding.container)
    return export.Target(
        name=binding.container, image=binding.image, tasks=[task], gpus=list(binding.gpus),
        ports=[(p.name, p.container_port, p.host_port, p.address) for p in binding.ports],
        memory_bytes=binding.limits.memory_bytes, cpus=binding.limits.cpus, shm_bytes=binding.limits.shm_bytes,
        caches=_caches(to), remote=remote)


def _run_task(info: worktrees.RepoInfo, defaults: dict, run: Run, settings_env: dict[str, str], to: str) -> export.Task:
    """A run as the local backend starts it: its pinned worktree, the workspace's environment,
    its parameters (params_env) and its data dir (the one it ran with, else where it would go)."""
    env = {**container_env.environment([], container_env.context(Path(run.worktree), None, run.commit)), **settings_env,
           **params_env(run)}
    data_dir = run.data_dir or data_dir_of(info, run, defaults)
    if to in HOST_LOCAL and not os.path.isdir(data_dir):  # bound by the engine, which would make it root's
        data_dirs.create_data_dir(Path(data_dir).parent, Path(data_dir).name, (info.common_dir, Path(run.worktree)))
    return export.Task(worktree=run.worktree, commit=run.commit, command=list(run.command), env=env,
                       data_dir=data_dir, label=run.id)


def _caches(to: str) -> list[tuple[str, str]]:
    """The shared caches (HF_HOME and the others point there); a Kubernetes Pod has its own."""
    if to == "k8s":
        return []
    root = container_env.ensure_caches() if to in HOST_LOCAL else container_env.cache_root()  # Slurm: the job makes them
    return [(str(root / name), f"{container_env.CACHE_MOUNT}/{name}") for name in container_env.CACHES]


def _remote(info: worktrees.RepoInfo) -> tuple[str, str]:
    """Where a Kubernetes Pod clones the commit from: origin, else the only remote (name, URL)."""
    names = info.git("remote").stdout.split()
    name = "origin" if "origin" in names else names[0] if len(names) == 1 else None
    if name is None:
        raise UsageError("a Kubernetes Pod clones the commit from a remote, and this repository has "
                         + ("none" if not names else "several but no 'origin'"), hint="git remote add origin URL")
    return name, info.git("remote", "get-url", name).stdout.strip()


def _warn_unpushed(info: worktrees.RepoInfo, target: export.Target) -> None:
    """A commit no remote-tracking branch of the remote contains cannot be cloned by the Pod (a
    snapshot of uncommitted changes never is): said, with the push that makes it clonable."""
    name = _remote(info)[0]
    seen: set[str] = set()
    for task in target.tasks:
        if not task.commit or task.commit in seen:
            continue
        seen.add(task.commit)
        found = info.git("for-each-ref", "--format=%(refname)", "--contains", task.commit, f"refs/remotes/{name}/")
        if found.returncode == 0 and found.stdout.strip():
            continue
        branch = f"gpuspace/{target.name}"  # a run's or a sweep's; a worktree's own branch, if it has one
        worktree = worktrees.find_worktree(info, Path(task.worktree)) if task.command is None else None
        if worktree is not None and worktree.branch:
            branch = worktree.branch
        print(f"warning: commit {task.commit[:12]} is not on {name}, and the Pod clones it from there: "
              f"git push {name} {task.commit}:refs/heads/{branch}", file=sys.stderr)
