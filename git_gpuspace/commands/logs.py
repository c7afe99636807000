"""`git gpuspace logs [-f] [--tail N] <worktree>`: the container's output, exactly as it was written,
on stdout; a header line on stderr says whose output it is."""

from __future__ import annotations

import argparse
import sys

from .. import output
from ..git import worktrees
from ..errors import UsageError
from ..engine.containers import Engine
from ..lifecycle import resolve_worktree
from ..runs import backend as backends
from ..runs import results
from ..runs import store as run_store
from ..runs.model import ACTIVE, Run
from .exec import running_binding


def _run_log(found: Run, args: argparse.Namespace) -> int:
    """A run's output: with -f, as its backend has it while it is queued or running, else its
    kept run.log."""
    header = (f"run {found.id}" + (f" of sweep {found.sweep}" if found.sweep else "")
              + "".join(f" {key}={value}" for key, value in found.params.items())
              + f" at {found.commit[:8]}: {found.state}"
              + (f" (exit {found.exit_code})" if found.exit_code is not None else ""))
    if args.follow and found.state in ACTIVE:
        _header(header)
        backends.of(found).follow_log(worktrees.discover(), found, args.tail)
        return 0
    if not found.data_dir:
        raise UsageError(f"run {found.id} has no log: " + ("its data dir was deleted by `runs clean --purge`"
                         if found.cleaned else f"it has not started yet ({found.state})"))
    _header(header)
    lines = results.read_log(found.data_dir).splitlines(keepends=True)
    sys.stdout.write("".join(lines[-args.tail:] if args.tail else lines))
    return 0


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    found = run_store.load(info.common_dir, ids={args.worktree}).find(args.worktree) if args.worktree else None
    if found is not None:
        return _run_log(found, args)
    binding = running_binding(info, resolve_worktree(info, args.worktree))
    _header(f"container {binding.container} of {binding.path}"
            + (f" (branch {binding.branch})" if binding.branch else " (detached HEAD)"))
    Engine().logs(binding.container, follow=args.follow, tail=args.tail if args.tail is not None else "all",
                  output=sys.stdout.buffer)
    return 0


def _header(line: str) -> None:
    """Whose output follows, on stderr (stdout is the log itself, for pipes); its values escaped:
    a branch name or a parameter value is anyone's to choose."""
    print(f"==> {output.escape(line)} <==", file=sys.stderr, flush=True)
