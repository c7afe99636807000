"""`git gpuspace export <worktree|run|sweep> --to compose|devcontainer|k8s|slurm [-o FILE]`:
what the binding, run or sweep would be under another tool (see export.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import export, state, worktrees
from ..config import effective
from ..errors import UsageError
from ..lifecycle import resolve_worktree
from ..runs import store as run_store
from ..settings import settings_from


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    target = _target(info, args.what, args.to == "k8s")
    text = export.FORMATS[args.to](target)
    if args.output:
        Path(args.output).write_text(text)
        print(f"Wrote {args.output} ({args.to}, {target.name})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _target(info: worktrees.RepoInfo, what: str, needs_remote: bool) -> export.Target:
    """A run id, a sweep name, or a bound worktree (path, directory name or branch)."""
    known = run_store.load(info.common_dir)
    current = state.load(info.common_dir)
    remote = _remote(info) if needs_remote else None
    runs = [run for run in known.runs if run.id == what] or [run for run in known.runs if run.sweep == what]
    if runs:
        first = runs[0]
        settings = settings_from(current.defaults, dict(first.flags), False)
        sweep = known.sweeps.get(first.sweep) if first.sweep == what else None
        limits = settings.limits
        return export.Target(
            name=what, image=settings.image, worktree=first.worktree, commit=first.commit,
            gpu_count=settings.request.count or len(settings.request.ids), commands=[run.command for run in runs],
            memory_bytes=limits.memory_bytes, cpus=limits.cpus, shm_bytes=limits.shm_bytes,
            env={**settings.env, **({"GPUSPACE_SWEEP": first.sweep} if first.sweep else {})},
            data_dir=first.data_dir if len(runs) == 1 else None,
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
    return export.Target(
        name=binding.container, image=binding.image, worktree=binding.path, commit=worktree.head or "",
        gpus=list(binding.gpus), ports=[(p.name, p.container_port, p.host_port, p.address) for p in binding.ports],
        memory_bytes=binding.limits.memory_bytes, cpus=binding.limits.cpus, shm_bytes=binding.limits.shm_bytes,
        env=dict(binding.env), data_dir=binding.data_dir, remote=remote)


def _remote(info: worktrees.RepoInfo) -> str:
    """Where a Kubernetes Pod clones the commit from: origin, else the only remote."""
    names = info.git("remote").stdout.split()
    name = "origin" if "origin" in names else names[0] if len(names) == 1 else None
    if name is None:
        raise UsageError("a Kubernetes Pod clones the commit from a remote, and this repository has "
                         + ("none" if not names else "several but no 'origin'"), hint="git remote add origin URL")
    return info.git("remote", "get-url", name).stdout.strip()
