"""Steps shared by the commands: bind a worktree to a container, unbind it, undo on failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from . import allocate, worktrees
from .containers import ContainerInfo, ContainerSpec, Engine, container_name, labels_for
from .errors import GpuspaceError, UsageError
from .locking import host_gpu_lock
from .model import Binding, Gpu, GpuRequest, Limits
from .state import State


class Rollback:
    """Undo steps pushed as work proceeds; run newest first if the block fails (Ctrl-C too)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def __enter__(self) -> "Rollback":
        return self

    def __exit__(self, kind, error, trace) -> bool:
        if error is not None:
            for what, step in reversed(self._steps):
                try:
                    step()
                except BaseException as failure:  # report, and keep undoing the rest
                    print(f"warning: could not undo ({what}): {failure}", file=sys.stderr)
        return False


def leases(containers: list[ContainerInfo]) -> allocate.Leases:
    held: allocate.Leases = {}
    for container in containers:
        for uuid in container.gpus:
            held.setdefault(uuid, []).append(container.holder)
    return held


def bind_worktree(
    info: worktrees.RepoInfo,
    engine: Engine,
    state: State,
    worktree: worktrees.Worktree,
    *,
    image: str,
    request: GpuRequest,
    inventory: list[Gpu],
    limits: Limits,
    share: bool,
    start: bool,
    undo: Rollback,
) -> tuple[Binding, list[Gpu]]:
    """Claim GPUs, create (and maybe start) the container, record the binding.

    The claim is atomic across every repo on the host: the host GPU lock is held from
    reading the leases (container labels) until the new labelled container exists.
    """
    name = container_name(info.name, worktree.path, info.common_dir)
    with host_gpu_lock():
        managed = engine.list_managed()
        if any(container.name == name for container in managed):
            # A container of ours with no binding: left by an interrupted command.
            engine.remove(name)
            managed = [container for container in managed if container.name != name]
        chosen = allocate.choose(request, inventory, leases(managed), share)
        uuids = [gpu.uuid for gpu in chosen]
        engine.create(
            ContainerSpec(
                name=name,
                image=image,
                worktree=worktree.path,
                common_dir=info.common_dir,
                labels=labels_for(info.common_dir, worktree.path, worktree.branch, uuids, share),
                gpus=uuids,
                limits=limits,
            )
        )
        undo.push(f"remove container {name}", lambda: engine.remove(name))
    if start:
        engine.start(name)
    binding = Binding(
        path=str(worktree.path),
        container=name,
        image=image,
        branch=worktree.branch,
        gpus=uuids,
        limits=limits,
        share=share,
    )
    state.bindings.append(binding)
    state.save()
    return binding, chosen


def unbind(engine: Engine, state: State, binding: Binding) -> None:
    """Stop and delete the container, release its GPUs, forget the binding."""
    engine.remove(binding.container)
    state.remove(binding.path)
    state.save()


def resolve_worktree(info: worktrees.RepoInfo, target: str | None) -> worktrees.Worktree:
    """A worktree named by path, by directory name or by branch; default: the one we are in."""
    known = worktrees.list_worktrees(info)
    if target is None:
        here = Path.cwd().resolve()
        inside = [w for w in known if not w.prunable and (here == w.path.resolve() or w.path.resolve() in here.parents)]
        if inside:
            return max(inside, key=lambda w: len(str(w.path)))
        raise UsageError("not inside a worktree", hint="name the worktree by path, directory name or branch")
    found = worktrees.find_worktree(info, Path(target))
    if found is not None:
        return found
    matches = [w for w in known if target in (w.path.name, w.branch)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        paths = ", ".join(str(w.path) for w in matches)
        raise UsageError(f"'{target}' names several worktrees: {paths}", hint="give the path")
    raise UsageError(f"no worktree '{target}' in this repository", hint="`git gpuspace status` lists them")


def default_worktree_path(info: worktrees.RepoInfo, branch: str) -> Path:
    """The usual convention: ../worktrees/<branch> beside the main worktree."""
    return info.anchor.parent / "worktrees" / branch.replace("/", "-")


def absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def require_unbound(state: State, path: Path) -> None:
    if state.find(path) is not None:
        raise GpuspaceError(f"'{path}' is already bound", hint="see `git gpuspace status`")
