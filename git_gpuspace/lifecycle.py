"""Steps shared by commands, hooks and reconcile: plan a binding, bind, unbind, recreate."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import allocate, config, gpus, worktrees
from .containers import ContainerInfo, ContainerSpec, Engine, container_name, labels_for
from .errors import GpuspaceError, UsageError
from .locking import host_gpu_lock
from .model import Binding, Gpu, GpuRequest, Limits
from .specs import MIN_MEMORY, parse_cpus, parse_gpus, parse_size
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


@dataclass(frozen=True)
class Settings:
    """Validated container settings: everything checked before anything is created."""

    image: str
    gpu_spec: str
    request: GpuRequest
    limits: Limits
    share: bool


def settings_from(repo_defaults: dict, flags: dict, share: bool) -> Settings:
    merged = config.effective(repo_defaults, flags)
    if not merged["image"].strip():
        raise UsageError("the image name is empty", hint="pass --image NAME[:TAG]")
    limits = Limits(
        memory_bytes=parse_size(merged["memory"], "--memory", MIN_MEMORY) if merged.get("memory") else None,
        cpus=parse_cpus(merged["cpus"]) if merged.get("cpus") else None,
        shm_bytes=parse_size(merged["shm_size"], "--shm-size") if merged.get("shm_size") else None,
    )
    return Settings(merged["image"], merged["gpus"], parse_gpus(merged["gpus"]), limits, share)


def settings_of(binding: Binding) -> Settings:
    """A binding's own settings, to claim again what a pending binding asked for."""
    spec = binding.gpu_request or (",".join(binding.gpus) if binding.gpus else "none")
    return Settings(binding.image, spec, parse_gpus(spec), binding.limits, binding.share)


@dataclass
class Plan:
    """An engine that answered, an image that is there, and GPUs that looked free."""

    settings: Settings
    engine: Engine
    inventory: list[Gpu]


def prepare(settings: Settings, engine: Engine | None = None) -> Plan:
    """Connect, check the GPUs could be had, and pull the image: all before creating anything.

    The GPU check here only refuses early; the claim in `bind_worktree` is the one that counts.
    """
    engine = engine or Engine()
    plan = Plan(settings, engine, gpus.inventory() if not settings.request.none else [])
    allocate.choose(settings.request, plan.inventory, leases(engine.list_managed()), settings.share)
    engine.ensure_image(settings.image)
    return plan


def leases(containers: list[ContainerInfo]) -> allocate.Leases:
    held: allocate.Leases = {}
    for container in containers:
        for uuid in container.gpus:
            held.setdefault(uuid, []).append(container.holder)
    return held


def bind_worktree(
    info: worktrees.RepoInfo,
    plan: Plan,
    state: State,
    worktree: worktrees.Worktree,
    *,
    start: bool,
    undo: Rollback,
    replacing: Binding | None = None,
) -> tuple[Binding, list[Gpu]]:
    """Claim GPUs, create (and maybe start) the container, record the binding.

    `replacing`: a binding whose container gives way to this one (its GPUs pass over).
    """
    settings = plan.settings
    name = container_name(info.name, worktree.path, info.common_dir)
    old = replacing.container if replacing else None
    chosen = _claim_and_create(info, plan.engine, name, worktree, settings, plan.inventory, undo, old)
    if start:
        plan.engine.start(name)
    binding = Binding(
        path=str(worktree.path),
        container=name,
        image=settings.image,
        branch=worktree.branch,
        gpus=[gpu.uuid for gpu in chosen],
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
    )
    state.bindings = [b for b in state.bindings if b is not replacing and b.path != binding.path]
    state.bindings.append(binding)  # (a pending binding for this worktree is replaced too)
    state.save()
    return binding, chosen


def _claim_and_create(
    info: worktrees.RepoInfo,
    engine: Engine,
    name: str,
    worktree: worktrees.Worktree,
    settings: Settings,
    inventory: list[Gpu],
    undo: Rollback,
    replacing: str | None = None,
) -> list[Gpu]:
    """Atomic across every repo on the host: the host GPU lock is held from reading the
    leases (container labels) until the new labelled container exists."""
    with host_gpu_lock():
        managed = engine.list_managed()
        # `name` taken by a container of ours means no binding claims it (an interrupted command).
        for gone in {name, replacing} & {container.name for container in managed}:
            engine.remove(gone)
        managed = [container for container in managed if container.name not in (name, replacing)]
        chosen = allocate.choose(settings.request, inventory, leases(managed), settings.share)
        uuids = [gpu.uuid for gpu in chosen]
        engine.create(
            ContainerSpec(
                name=name,
                image=settings.image,
                worktree=worktree.path,
                common_dir=info.common_dir,
                labels=labels_for(info.common_dir, worktree.path, worktree.branch, uuids, settings.share),
                gpus=uuids,
                limits=settings.limits,
            )
        )
        undo.push(f"remove container {name}", lambda: engine.remove(name))
    return chosen


def record_pending(state: State, info: worktrees.RepoInfo, worktree: worktrees.Worktree, settings: Settings, reason: str) -> Binding:
    """The worktree should have a container but cannot yet: keep the wish and the reason."""
    binding = Binding(
        path=str(worktree.path),
        container=container_name(info.name, worktree.path, info.common_dir),
        image=settings.image,
        branch=worktree.branch,
        limits=settings.limits,
        share=settings.share,
        worktree_id=worktree.admin_id,
        gpu_request=settings.gpu_spec,
        pending=reason,
    )
    state.remove(binding.path)
    state.bindings.append(binding)
    state.save()
    return binding


def recreate(info: worktrees.RepoInfo, engine: Engine, state: State, binding: Binding, worktree: worktrees.Worktree) -> Binding:
    """A new container for a binding (worktree moved, container lost), with the same GPUs.

    The old container goes inside the same host GPU lock that claims its GPUs again, so no
    other repo can take them in between.
    """
    same_gpus = ",".join(binding.gpus) or "none"
    settings = Settings(binding.image, binding.gpu_request or same_gpus, parse_gpus(same_gpus), binding.limits, binding.share)
    engine.ensure_image(settings.image)
    plan = Plan(settings, engine, gpus.inventory() if binding.gpus else [])
    with Rollback() as undo:
        new, _ = bind_worktree(info, plan, state, worktree, start=True, undo=undo, replacing=binding)
    return new


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
    existing = state.find(path)
    if existing is not None and not existing.pending:
        raise GpuspaceError(f"'{path}' is already bound", hint="see `git gpuspace status`")
