"""`git gpuspace start|stop|restart <worktree>`."""

from __future__ import annotations

import argparse

from ..git import private_git, worktrees
from .. import services, state
from ..engine.containers import LABEL_GIT, PRIVATE_GIT, Engine
from ..lifecycle import bind_worktree, not_bound, owner_of, prepare, recreate, resolve_worktree
from ..lifecycle_commands import run_lifecycle
from ..rollback import Rollback
from ..settings import checked_settings, trusted_devcontainer
from ..reconcile import converge_quietly


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktree = resolve_worktree(info, args.worktree)
    known = state.load(info.common_dir).find(worktree.path)
    engine = Engine()
    if known is not None and args.verb != "stop" and (
            known.pending or known.container not in {c.name for c in engine.list_managed()}):
        engine.ensure_image(known.image)  # a pull takes as long as the registry makes it: not under the repo lock
    with state.locked(info.common_dir) as current:
        binding = current.find(worktree.path)
        if binding is None:
            raise not_bound(info, worktree, args.verb)  # a run's worktree: named, with the run's verbs
        if args.verb == "stop" and binding.pending:
            print(f"{worktree.path} is pending ({binding.pending}): no container to stop")
            return 0
        if args.verb in ("stop", "restart") and not binding.pending:
            engine.stop(binding.container, owner_of(current, binding))
            if args.verb == "stop":
                engine.keep_up(binding.container, False)  # stopped stays stopped, through engine restarts too
                print(f"Stopped {binding.container} (its GPUs stay reserved; `git gpuspace remove` frees them)")
                return 0
        listed = {c.name: c for c in engine.list_managed()}
        fresh = binding.pending or binding.container not in listed
        shared_git = not fresh and listed[binding.container].labels.get(LABEL_GIT) != PRIVATE_GIT
        if binding.pending:
            plan = prepare(checked_settings(info, current.path, current.bindings.index(binding), binding, worktree), engine)
            with Rollback() as undo:
                binding, _ = bind_worktree(info, plan, current, worktree, start=True, undo=undo)
            print(f"Started {binding.container} (was pending)")
        elif fresh:
            binding = recreate(info, engine, current, binding, worktree)
            print(f"Made {binding.container} again (the container was gone) and started it")
        elif binding.repo not in (None, str(current.path.parent)):  # its mounts name where the repository was
            engine.require_owner(binding.container, owner_of(current, binding))
            binding = recreate(info, engine, current, binding, worktree)
            fresh = True
            print(f"Made {binding.container} again (the repository moved) and started it")
        elif shared_git:  # made by an earlier version: its git wrote the repository's git dir
            binding = recreate(info, engine, current, binding, worktree)
            fresh = True
            print(f"Made {binding.container} again, with a git dir of its own (it wrote the repository's), "
                  f"and started it")
        else:
            fresh = engine.never_started(binding.container)  # made with --no-start: its create commands are due
            engine.keep_up(binding.container, True)
            engine.start(binding.container)
            print(f"{'Restarted' if args.verb == 'restart' else 'Started'} {binding.container}")
        converge_quietly(info, engine, current)
    private_git.sync_bindings(info, engine, [binding], [worktree], {binding.container})  # what the host committed meanwhile
    # postStartCommand after every start (a new container's all of them), from the devcontainer.json
    # as it is trusted now
    trusted = trusted_devcontainer(info, binding, worktree) if binding.devcontainer else None
    commands = trusted.lifecycle if trusted is not None else None if binding.devcontainer else {}
    ran = run_lifecycle(engine, binding, commands, first_start=bool(fresh))
    services.report_services(binding, services.wait_for_services(binding))
    return 0 if ran else 1
