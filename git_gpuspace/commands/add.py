"""`git gpuspace add [-b <new-branch>] [<path>] [<commit-ish>]`: worktree + container + GPUs."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from .. import allocate, gpus, services, state
from ..git import worktrees
from ..engine.containers import Engine
from ..errors import GitRefusal, GpusUnavailable, GpuspaceError, UsageError
from ..faults import checkpoint
from ..leases import leases
from ..lifecycle import absolute, bind_worktree, default_worktree_path, prepare, require_unbound
from ..lifecycle_commands import file_commands, run_lifecycle
from ..rollback import Rollback
from ..settings import settings_for_worktree, settings_from
from ..runs.host_queue import Board, decide
from ..model import Binding, Gpu, GpuRequest, current_user
from ..runs.schedule import Want
from ..output import escape
from ..reconcile import converge_quietly
from ..specs import format_size


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    worktrees.require_plain_repo(info)
    path, checkout = plan_checkout(info, args)
    worktrees.check_candidate_path(info, path, checkout.force, shown=args.path)
    flags = flag_settings(args)
    # Everything the flags say is checked, and GPUs looked at, before a big checkout.
    known = state.load(info.common_dir)  # read again under the lock before anything is recorded
    defaults = known.defaults
    early = settings_from(defaults, flags, args.share)
    engine = Engine()
    bound = known.find(path)
    if bound is not None and not bound.pending and worktrees.find_worktree(info, path) is None:
        # bound to a worktree git has since removed (`git worktree remove`): as the README says,
        # the next command cleans up after plain git, and this is that command
        with state.locked(info.common_dir) as current:
            converge_quietly(info, engine, current)
        known = state.load(info.common_dir)
    require_unbound(known, path)
    wait = _wait_seconds(args.wait)
    if args.preempt and wait is None:
        wait = PREEMPT_WAIT_S  # the runs it takes GPUs from have their grace period to checkpoint
    if args.gpus is not None and wait is None:  # without the flag, the checked-out devcontainer.json may decide
        allocate.choose(early.request, gpus.inventory() if not early.request.none else [],
                        leases(engine.list_managed()), args.share)
    with Rollback() as undo:
        made_dirs = worktrees.missing_parents(path)
        worktree = worktrees.add(info, path, checkout)
        undo.push(f"remove worktree {path}", lambda: _undo_worktree(info, worktree, checkout, made_dirs))
        checkpoint("after-worktree-add")
        # as `git worktree add` runs it (not with --no-checkout: git checks nothing out)
        hook_status = worktrees.run_post_checkout(info, worktree) if checkout.populate else 0
        if hook_status != 0:
            print(f"git-gpuspace: warning: the post-checkout hook exited {hook_status} (the worktree is kept, "
                  f"as git keeps it)", file=sys.stderr)
        # The checked-out devcontainer.json is a layer of its own. Reading it and pulling or
        # building its image take as long as the repository makes them: not under the repo lock.
        settings = settings_for_worktree(info, defaults, flags, args.share, worktree, args.devcontainer, args.trust)
        deadline = None if wait is None else time.monotonic() + wait
        said = ""
        queue = InLine(engine, info, path, settings, args.preempt) if wait is not None else None
        try:
            while True:
                try:
                    # waiting, it takes its turn in the host's plan (fair share, reservations,
                    # preemption), not whatever frees first
                    asked = queue.turn() if queue is not None else settings
                    plan = prepare(asked, engine)
                    with state.locked(info.common_dir) as current:
                        require_unbound(current, path)
                        converge_quietly(info, engine, current)
                        binding, chosen = bind_worktree(info, plan, current, worktree, start=not args.no_start,
                                                        undo=undo)
                    break
                except GpusUnavailable as error:  # with --wait: until a GPU is free, or the wait is over
                    if deadline is None or time.monotonic() >= deadline:
                        raise
                    if str(error) != said:  # said when it changes
                        print(f"git-gpuspace: waiting for GPUs ({error})", file=sys.stderr)
                        said = str(error)
                    time.sleep(WAIT_POLL_S)
        finally:
            if queue is not None:
                queue.leave()
    report(binding, chosen, started=not args.no_start)
    if not args.no_start:
        ran = run_lifecycle(engine, binding, file_commands(plan.settings), first_start=True)
        services.report_services(binding, services.wait_for_services(binding))
        if not ran:
            return 1
    return 0


WAIT_POLL_S = 0.5
PREEMPT_WAIT_S = 300.0  # --preempt without --wait: the grace periods of the runs it stops, and some


class InLine:
    """`add --wait` (or `--preempt`) as one of those waiting for GPUs on this machine: posted for
    every dispatcher to see, so that GPUs are held back for it as they free (a stream of 1-GPU
    runs does not starve it) and preemptible runs yield to it with `--preempt`."""

    def __init__(self, engine: Engine, info, path: Path, settings, preempt: bool) -> None:
        self.engine, self.settings = engine, settings
        self.board = Board(engine, str(path))
        self.want = Want(key=str(path), user=current_user(), repo=str(info.common_dir), since=time.time(),
                         preempt=preempt, interactive=True)

    def turn(self):
        """The settings to bind with once the plan grants GPUs (those GPUs, by UUID); else
        GpusUnavailable with why it waits, its request posted."""
        request = self.settings.request
        if request.none:
            return self.settings
        inventory = gpus.inventory()
        want = replace(self.want, count=len(inventory) if request.all else request.count or len(request.ids) or 1,
                       gpus=tuple({str(gpu.index): gpu.uuid for gpu in inventory}.get(i, i) for i in request.ids))
        managed = self.engine.list_managed()
        plan = decide(self.engine, managed, inventory, [want], self.board)
        granted = plan.grants.get(want.key)
        if granted is None:
            self.board.post(self.settings.image, [want], [gpu.uuid for gpu in inventory])
            why = plan.waits.get(want.key, "no GPU free")
            if why.startswith("waiting for"):  # none free: the allocator's refusal says who holds them
                allocate.choose(request, inventory, leases(managed), self.settings.share, self.settings.pack)
            raise GpusUnavailable(why)
        return replace(self.settings, request=GpuRequest(ids=granted))

    def leave(self) -> None:
        try:
            self.board.clear()
        except GpuspaceError:
            pass  # a dead poster's post is removed by whoever reads it next


def _wait_seconds(text: str | None) -> float | None:
    """--wait (no bound), --wait=90, --wait=10m, --wait=2h; None without --wait."""
    if text is None:
        return None
    if text == "forever":
        return float("inf")
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found:
        raise UsageError(f"invalid --wait '{text}'", hint="a time such as 90, 90s, 10m or 2h")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


FLAG_KEYS = ("image", "gpus", "memory", "cpus", "shm_size", "jupyter", "ssh", "tensorboard", "ports", "ssh_keys",
             "publish_address", "data_root")


def flag_settings(args: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(args, key) for key in FLAG_KEYS}


def plan_checkout(info: worktrees.RepoInfo, args: argparse.Namespace) -> tuple[Path, worktrees.Checkout]:
    """Mirror `git worktree add`: -b makes a branch (-B makes or resets it); a branch name checks
    it out; else detach. Prints git's "Preparing worktree" line (unless --quiet) where git does:
    once the commit is known, before the refusals that follow it."""
    if sum(1 for given in (args.new_branch, args.new_branch_force) if given is not None) + args.detach > 1:
        raise GitRefusal("options '-b', '-B', and '--detach' cannot be used together")
    if args.reason is not None and not args.lock:
        raise GitRefusal("the option '--reason' requires '--lock'")
    new_branch = args.new_branch if args.new_branch is not None else args.new_branch_force
    if new_branch is not None:
        try:
            worktrees.validate_branch_name(new_branch)
            bad_name = None
        except UsageError as error:  # git's `branch` dies on it (255), after the Preparing line
            bad_name = error
        exists = bad_name is None and worktrees.branch_exists(info, new_branch)
        holder = None
        if args.new_branch_force is not None and exists:
            holder = next((w for w in worktrees.list_worktrees(info) if w.branch == new_branch), None)
            if holder is not None and not args.force:
                raise worktrees.checked_out_refusal(new_branch, holder.path)
        try:
            commit = worktrees.resolve_commit(info, args.commitish) if args.commitish else worktrees.head_commit(info)
        except UsageError as error:  # git's `branch` dies on it (255), after the Preparing line
            _say_preparing(info, args, worktrees.Checkout(commit="", branch=new_branch, create_branch=True))
            raise GitRefusal(f"not a valid object name: '{args.commitish}'", hint=error.hint, exit_code=255) from None
        path = absolute(args.path) if args.path else default_worktree_path(info, new_branch)
        implicit = worktrees.upstream_of(info, args.commitish) if args.commitish else None
        checkout = worktrees.Checkout(
            commit=commit, branch=new_branch, create_branch=True, start_point=args.commitish or "HEAD",
            reset_from=worktrees.resolve_commit(info, f"refs/heads/{new_branch}") if exists and args.new_branch_force
            else None)
        _say_preparing(info, args, checkout)
        if bad_name is not None:
            raise GitRefusal(str(bad_name), hint=bad_name.hint, exit_code=255)
        if exists and args.new_branch_force is None:
            # git's `branch`, which `worktree add` runs, dies: 255
            raise GitRefusal(f"a branch named '{new_branch}' already exists", hint="drop -b to check it out",
                             exit_code=255)
        if holder is not None:  # forced: `git branch --force`, which git runs, refuses it still
            raise GitRefusal(f"cannot force update the branch '{new_branch}' checked out at '{holder.path}'",
                             exit_code=255)
        checkout = replace(checkout, track=_tracking(info, args.track, args.commitish or "HEAD", implicit))
    elif args.path is None:
        raise UsageError("give a path, or -b <new-branch> to use ../worktrees/<branch>")
    else:
        path = absolute(args.path)
        checkout = _existing_or_detached(info, args, path)
        _say_preparing(info, args, checkout)
        if args.track is not None and not checkout.create_branch:
            raise GitRefusal("--[no-]track can only be used if a new branch is created")
        if checkout.create_branch:
            checkout = replace(checkout, track=_tracking(info, args.track, checkout.start_point, checkout.track))
    lock_reason = args.reason if args.reason is not None else "added with --lock" if args.lock else None
    checkout = replace(checkout, force=args.force, populate=args.checkout, lock_reason=lock_reason)
    too_long = next((part for part in path.parts if len(part.encode()) > 255), None)
    if too_long:
        raise UsageError(f"'{too_long[:40]}…' is too long a file name (over 255 bytes)")
    if path == info.common_dir or info.common_dir in path.parents:
        raise UsageError(f"'{path}' is inside the git directory", hint="put worktrees outside .git, e.g. ../worktrees/<name>")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GitRefusal(f"'{args.path or path}' already exists", hint="choose a new path (an empty directory is fine)")
    return path, checkout


def _existing_or_detached(info: worktrees.RepoInfo, args: argparse.Namespace, path: Path) -> worktrees.Checkout:
    if args.commitish is None:
        # git's convenience: a branch named after the directory, made from HEAD if missing
        name = path.name
        worktrees.validate_branch_name(name)
        if worktrees.branch_exists(info, name) and not args.detach:
            return worktrees.Checkout(commit=worktrees.resolve_commit(info, name), branch=name)
        if args.detach:
            return worktrees.Checkout(commit=worktrees.head_commit(info))
        # --guess-remote (or worktree.guessRemote): the new branch starts at, and tracks, the
        # one remote-tracking branch of its name
        tracking = worktrees.remote_tracking(info, name) if _guess_remote(info, args) else None
        if tracking is not None:
            remote, commit = tracking
            return worktrees.Checkout(commit=commit, branch=name, create_branch=True,
                                      start_point=f"refs/remotes/{remote}/{name}", track=(remote, name))
        return worktrees.Checkout(commit=worktrees.head_commit(info), branch=name, create_branch=True)
    try:
        commit = worktrees.resolve_commit(info, args.commitish)
    except UsageError as error:
        # git's convenience: no such commit, but exactly one remote has a branch of that name
        tracking = None if args.detach else worktrees.remote_tracking(info, args.commitish)
        if tracking is None:  # git's worktree add dies on it (128)
            raise GitRefusal(str(error), hint=error.hint) from None
        remote, commit = tracking
        worktrees.validate_branch_name(args.commitish)
        return worktrees.Checkout(commit=commit, branch=args.commitish, create_branch=True,
                                  start_point=f"refs/remotes/{remote}/{args.commitish}", track=(remote, args.commitish))
    if worktrees.branch_exists(info, args.commitish) and not args.detach:
        return worktrees.Checkout(commit=commit, branch=args.commitish)
    return worktrees.Checkout(commit=commit)


def _guess_remote(info: worktrees.RepoInfo, args: argparse.Namespace) -> bool:
    if args.guess_remote is not None:
        return args.guess_remote
    value = worktrees.config_value(info, "worktree", "guessRemote") or ""
    return value.lower() in ("true", "yes", "on", "1")


def _tracking(info: worktrees.RepoInfo, option: str | None, start: str,
              implicit: tuple[str, str] | None) -> tuple[str, str] | None:
    """What the new branch tracks, as `git branch [--track|--no-track] <new> <start>` sets it:
    --track: the local or remote-tracking branch `start` names (refused if it names none);
    without either: `implicit` (a remote-tracking start, under branch.autoSetupMerge)."""
    if option == "no":
        return None
    if option is None:
        return implicit
    full = "" if start.startswith("-") else info.git("rev-parse", "--symbolic-full-name", start).stdout.strip()
    if full.startswith("refs/heads/"):
        return ".", full[len("refs/heads/"):]
    parts = full.split("/", 3)
    if full.startswith("refs/remotes/") and len(parts) == 4:
        return parts[2], parts[3]
    raise GitRefusal(f"cannot set up tracking information; starting point '{start}' is not a branch", exit_code=255)


def _say_preparing(info: worktrees.RepoInfo, args: argparse.Namespace, checkout: worktrees.Checkout) -> None:
    """git's first line of `worktree add`, on stderr."""
    if args.quiet:
        return
    if checkout.reset_from:
        what = f"resetting branch '{checkout.branch}'; was at {_abbrev(info, checkout.reset_from)}"
    elif checkout.create_branch:
        what = f"new branch '{checkout.branch}'"
    elif checkout.branch:
        what = f"checking out '{checkout.branch}'"
    else:
        what = f"detached HEAD {_abbrev(info, checkout.commit)}"
    print(escape(f"Preparing worktree ({what})"), file=sys.stderr)  # a branch name is anyone's to choose


def _abbrev(info: worktrees.RepoInfo, commit: str) -> str:
    return info.git("rev-parse", "--short", commit).stdout.strip() or commit[:7]


def _undo_worktree(
    info: worktrees.RepoInfo, worktree: worktrees.Worktree, checkout: worktrees.Checkout, made_dirs: list[Path]
) -> None:
    found = worktrees.find_worktree(info, worktree.path)
    if found is not None:
        worktrees.remove(info, found, force=True)
    for directory in made_dirs:  # deepest first: the parents `add` had to make
        with contextlib.suppress(OSError):
            directory.rmdir()
    if checkout.create_branch and checkout.branch and checkout.reset_from:  # -B reset a branch that was there
        worktrees.restore_branch(info, checkout.branch, checkout.commit, checkout.reset_from)
    elif checkout.create_branch and checkout.branch:
        worktrees.delete_branch(info, checkout.branch, checkout.commit)


def report(binding: Binding, chosen: list[Gpu], started: bool, stream: TextIO = sys.stdout) -> None:
    where = f"branch {binding.branch}" if binding.branch else "detached HEAD"
    print(escape(f"Worktree {binding.path} ({where})"), file=stream)  # a branch name is anyone's to choose
    gpu_text = ", ".join(f"GPU {gpu.index}" + (f" ({gpu.name})" if gpu.name else "") for gpu in chosen) or "no GPU"
    limits = [
        f"{label} {value}"
        for label, value in (
            ("memory", format_size(binding.limits.memory_bytes) if binding.limits.memory_bytes else None),
            ("cpus", f"{binding.limits.cpus:g}" if binding.limits.cpus else None),
            ("shm", format_size(binding.limits.shm_bytes) if binding.limits.shm_bytes else None),
        )
        if value
    ]
    verb = "running" if started else "created (not started)"
    print(
        escape(f"Container {binding.container} {verb}: {binding.image}, {gpu_text}"
               + (f", {', '.join(limits)}" if limits else "")),
        file=stream,
    )
