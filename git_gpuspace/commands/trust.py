"""`git gpuspace trust [<worktree>] [--list | --revoke]`: trust a worktree's devcontainer.json,
as it is now, in this repository (see trust.py)."""

from __future__ import annotations

import argparse

from ..devcontainer import parser as devcontainer
from .. import output, trust
from ..git import worktrees
from ..errors import UsageError
from ..lifecycle import resolve_worktree


def run(args: argparse.Namespace) -> int:
    if args.list:
        found = trust.records()
        for record in found:
            covers = record.covers or "the file alone (an older record: it no longer matches; trust the file again)"
            print(output.escape(f"{record.sha256[:12]}  {record.trusted:%Y-%m-%d %H:%M}  {record.path}  "
                                f"covers {covers}"))
        if not found:
            print("No devcontainer.json is trusted.")
        return 0
    info = worktrees.discover()
    worktree = resolve_worktree(info, args.worktree)
    path = devcontainer.locate(worktree.path, args.devcontainer)
    if path is None:
        raise UsageError(f"{worktree.path} has no devcontainer.json", hint="nothing to trust")
    content = devcontainer.read(path, worktree.path, info.anchor)
    covered = trust.coverage(path, content, worktree.path, info.anchor)
    if args.revoke:
        if trust.revoke(info.common_dir, path, covered):
            print(f"No longer trusted: {path}")
        else:
            print(f"{path} was not trusted")
        return 0
    asks = devcontainer.load(path, content, worktree.path, info.anchor, False).skipped  # and: it parses
    if not trust.grant(info.common_dir, covered):
        print(output.escape(f"{path} is already trusted (sha256 {covered.sha256[:12]}, covering {covered.describe()})"))
    else:
        print(output.escape(f"Trusted {path} as it is now (sha256 {covered.sha256[:12]}, covering "
                            f"{covered.describe()}); a change to any of it makes it untrusted again."))
        if asks:
            print(output.escape(f"It may now: {', '.join(asks)}"))
    if covered.not_covered():  # a repository's names: shown escaped
        print(output.escape(f"Note: {covered.not_covered()}"))
    return 0
