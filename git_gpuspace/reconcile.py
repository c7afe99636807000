"""Compare the three truths (bindings, git worktrees, engine containers) and converge them.

`survey` says how things stand, for `status`. `converge` fixes what it safely can:
- a bound worktree that git moved (`git worktree move`): the container is made again with
  the new mount and the same GPUs;
- a bound worktree that is gone (`git worktree remove`, `rm -rf`): its container is removed
  and its GPUs released;
- a container of this repo that no binding claims (left by a crash): removed;
- with `retry_pending`, a binding that is waiting (engine was down, no GPU free): bound now.
It never touches files in a worktree.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .git import private_git
from .git import worktrees as git_worktrees
from .engine.containers import LABEL_REPO, LABEL_RUN, LABEL_WORKTREE, ContainerInfo, Engine
from .errors import GpuspaceError
from .lifecycle import bind_worktree, owner_of, prepare, record_pending, recreate
from .rollback import Rollback
from .settings import checked_settings, settings_of
from .model import Binding
from .state import State
from .git.worktrees import RepoInfo, Worktree


@dataclass(frozen=True)
class View:
    path: Path
    worktree: Worktree | None  # None: bound, but git no longer has this worktree
    binding: Binding | None
    container: ContainerInfo | None
    state: str  # the engine's word (running, exited, created, ...); missing; none; pending; orphaned; unknown


def survey(
    state: State,
    worktrees: list[Worktree],
    containers: list[ContainerInfo] | None,  # None: the engine could not be asked
) -> list[View]:
    by_name = {c.name: c for c in containers or []}
    by_path = {binding.path: binding for binding in state.bindings}  # constant work per worktree
    views = [_view(w.path, w, by_path.get(str(w.path)), by_name, containers is None) for w in worktrees]
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
    elif binding.pending:
        state = "pending"
    elif engine_unknown:
        state = "unknown"
    else:
        state = container.state if container else "missing"
    return View(path, worktree, binding, container, state)


def converge(
    info: RepoInfo,
    engine: Engine,
    state: State,
    *,
    worktrees: list[Worktree] | None = None,
    containers: list[ContainerInfo] | None = None,
    retry_pending: bool = False,
    dry_run: bool = False,
) -> list[str]:
    """Make the engine match the bindings and the bindings match git. The caller holds the
    state lock. Returns one line per action taken (with `dry_run`, would take: nothing changes).

    Bindings whose worktrees are gone leave the state file in one write, however many they are;
    a cleanup that takes more than a second says how far it got on stderr."""
    known = worktrees if worktrees is not None else git_worktrees.list_worktrees(info)
    listed = containers if containers is not None else engine.list_managed()
    existing = {container.name for container in listed}
    live = {str(w.path): w for w in known if not w.prunable}
    by_admin_id = {w.admin_id: w for w in live.values() if w.admin_id}
    would = "would " if dry_run else ""
    actions = []
    gone: list[Binding] = []
    for binding in list(state.bindings):
        if binding.path in live:
            continue
        moved = by_admin_id.get(binding.worktree_id)
        if moved is not None and state.find(moved.path) is None:
            actions.append(f"would follow {binding.path} to {moved.path}" if dry_run
                           else _follow_move(info, engine, state, binding, moved))
            continue
        gone.append(binding)
    progress = _Progress(len(gone))
    for binding in gone:
        if not binding.pending and binding.container in existing and not dry_run:
            engine.remove(binding.container, owner_of(state, binding))
        actions.append(f"{would}remove{'' if dry_run else 'd'} container {binding.container} "
                       f"(worktree {binding.path} is gone)")
        kept = None if dry_run else private_git.discard(info, private_git.for_container(binding.container))
        actions += [kept] if kept else []
        progress.step()
    progress.close()
    if gone and not dry_run:
        dropped = {binding.path for binding in gone}
        state.bindings = [binding for binding in state.bindings if binding.path not in dropped]
        state.save()
    if retry_pending and not dry_run:
        for binding in [b for b in state.bindings if b.pending and b.path in live]:
            actions.append(_retry(info, engine, state, binding, live[binding.path]))
    claimed = {b.container for b in state.bindings} | {b.container for b in gone}  # said once
    for container in listed:
        if container.labels.get(LABEL_REPO) == str(info.common_dir) and container.name not in claimed \
                and LABEL_RUN not in container.labels:  # a run's container is the dispatcher's
            if not dry_run:
                engine.remove(container.name)
            actions.append(f"{would}remove{'' if dry_run else 'd'} container {container.name} "
                           f"(no binding for {container.labels.get(LABEL_WORKTREE, '?')})")
    return actions


class _Progress:
    """`cleaning up: N of M` on stderr, once a second, when a cleanup takes that long."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.said = time.monotonic()
        self.shown = False

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.said >= 1.0:
            self.said, self.shown = now, True
            print(f"git-gpuspace: cleaning up bindings whose worktrees are gone: {self.done} of {self.total}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown:
            print(f"git-gpuspace: cleaned up {self.done} bindings in {time.monotonic() - self.started:.0f} s",
                  file=sys.stderr, flush=True)


def _follow_move(info: RepoInfo, engine: Engine, state: State, binding: Binding, moved: Worktree) -> str:
    # mounts of paths inside the worktree (devcontainer.json's ${localWorkspaceFolder}/...) move with it
    binding.mounts = [_moved_mount(mount, Path(binding.path), moved.path) for mount in binding.mounts]
    if binding.pending:
        old, binding.path = binding.path, str(moved.path)
        state.save()
        return f"pending binding of {old} follows its worktree to {moved.path}"
    try:
        new = recreate(info, engine, state, binding, moved)
    except GpuspaceError as error:
        record_pending(state, info, moved, settings_of(binding), str(error))
        state.bindings = [b for b in state.bindings if b is not binding]
        state.save()
        return f"worktree moved to {moved.path}, but its container could not follow: {error}"
    return f"container of {binding.path} follows it to {moved.path} ({new.container})"


def _moved_mount(mount: str, old: Path, new: Path) -> str:
    source, rest = mount.split(":", 1)
    inside = Path(source) == old or old in Path(source).parents
    return f"{new / Path(source).relative_to(old)}:{rest}" if inside else mount


def _retry(info: RepoInfo, engine: Engine, state: State, binding: Binding, worktree: Worktree) -> str:
    try:
        plan = prepare(checked_settings(info, state.path, state.bindings.index(binding), binding, worktree), engine)
        with Rollback() as undo:
            new, _ = bind_worktree(info, plan, state, worktree, start=True, undo=undo)
    except GpuspaceError as error:
        binding.pending = str(error)
        state.save()
        return f"{worktree.path} still pending: {error}"
    return f"started container {new.container} for {worktree.path}"


def converge_quietly(info: RepoInfo, engine: Engine, state: State, **known) -> list[str]:
    """Converge as a side effect of another command: report actions on stderr."""
    actions = converge(info, engine, state, **known)
    for action in actions:
        print(f"git-gpuspace: {action}", file=sys.stderr)
    return actions
