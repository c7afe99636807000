"""Compare the three truths (bindings, git worktrees, engine containers) and converge them.

`survey` says how things stand, for `status`; `converge` fixes what it safely can: containers
whose worktree is gone, and containers of this repo that no binding claims (left by a crash).
It never touches files in a worktree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .containers import LABEL_REPO, LABEL_WORKTREE, ContainerInfo, Engine
from .model import Binding
from .state import State
from .worktrees import RepoInfo, Worktree


@dataclass(frozen=True)
class View:
    path: Path
    worktree: Worktree | None  # None: bound, but git no longer has this worktree
    binding: Binding | None
    container: ContainerInfo | None
    state: str  # running, exited, created, paused, ...; missing; none; orphaned; unknown


def survey(
    info: RepoInfo,
    state: State,
    worktrees: list[Worktree],
    containers: list[ContainerInfo] | None,  # None: the engine could not be asked
) -> list[View]:
    by_name = {c.name: c for c in containers or []}
    views = []
    for worktree in worktrees:
        binding = state.find(worktree.path)
        views.append(_view(worktree.path, worktree, binding, by_name, containers is None))
    listed = {str(w.path) for w in worktrees}
    for binding in state.bindings:
        if binding.path not in listed:
            views.append(_view(Path(binding.path), None, binding, by_name, containers is None))
    return views


def _view(path, worktree, binding, by_name, engine_unknown) -> View:
    if binding is None:
        return View(path, worktree, None, None, "none")
    container = by_name.get(binding.container)
    if worktree is None or worktree.prunable:
        state = "orphaned"
    elif engine_unknown:
        state = "unknown"
    else:
        state = container.state if container else "missing"
    return View(path, worktree, binding, container, state)


def converge(info: RepoInfo, engine: Engine, state: State, worktrees: list[Worktree]) -> list[str]:
    """Remove containers whose worktree is gone and our containers no binding claims.

    Returns one line per action taken. The caller holds the state lock.
    """
    actions = []
    live = {str(w.path) for w in worktrees if not w.prunable}
    for binding in list(state.bindings):
        if binding.path not in live:
            engine.remove(binding.container)
            state.remove(binding.path)
            actions.append(f"removed container {binding.container} (worktree {binding.path} is gone)")
    claimed = {b.container for b in state.bindings}
    for container in engine.list_managed():
        if container.labels.get(LABEL_REPO) == str(info.common_dir) and container.name not in claimed:
            engine.remove(container.name)
            where = container.labels.get(LABEL_WORKTREE, "?")
            actions.append(f"removed container {container.name} (no binding for {where})")
    if actions:
        state.save()
    return actions
