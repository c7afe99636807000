"""Verdicts of checks, kept in git: one note per commit under `refs/notes/gpuspace/<check>`,
written when a check's run ends, and the same note on the commit's tree, so that any commit with
that tree (a rebase that kept it) has its verdict without running again.

A note's first line is `pass` or `fail`; then the exit code, duration, image, GPU and the path
of the full log, and an SSH signature over the check, the commit or tree and that text
(signing.py). A note counts only when that signature is by a key the user trusts: any other
(unsigned, forged in a container, pushed by a collaborator whose key is not trusted, copied from
another object) is "not checked". `git log --notes=gpuspace/<check>` shows them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .git import worktrees
from .errors import GpuspaceError, UsageError
if TYPE_CHECKING:  # the run store's import is for a run that ended, not for reading verdicts
    from .runs.model import Run

NOTES = "refs/notes/gpuspace/"
CHECK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")  # a ref component, and a sweep name's tail


@dataclass
class Check:
    name: str
    command: list[str]
    gpus: str | None = None
    image: str | None = None
    on_commit: bool = False

    def flags(self) -> dict[str, str]:
        return {key: value for key, value in (("gpus", self.gpus), ("image", self.image)) if value is not None}


@dataclass
class Verdict:
    passed: bool
    text: str
    own: bool = True  # False: found by the commit's tree, from another commit with that tree

    @property
    def word(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def log(self) -> str | None:
        """The full log's path, as the note gives it (None when the note names none)."""
        for line in self.text.splitlines():
            if line.startswith("log: ") and line[5:].strip() not in ("", "-"):
                return line[5:].strip()
        return None


@dataclass
class Checks:
    """The repo's named checks, as kept in the state file's [checks] table."""

    entries: dict[str, Check] = field(default_factory=dict)

    @classmethod
    def from_state(cls, raw: dict) -> Checks:
        return cls({name: Check(name, list(entry["command"]), entry.get("gpus"), entry.get("image"),
                                bool(entry.get("on_commit", False))) for name, entry in raw.items()})

    def to_state(self) -> dict:
        return {check.name: {key: value for key, value in (("command", check.command), ("gpus", check.gpus),
                                                           ("image", check.image), ("on_commit", check.on_commit))
                             if value not in (None, False)} for check in self.entries.values()}


def check_name(name: str) -> str:
    if not CHECK_NAME.fullmatch(name):  # not match: its $ lets a final newline through
        raise UsageError(f"invalid check name '{name}'", hint="lower-case letters, digits, '.', '_' and '-' (it names a "
                         "notes ref)")
    return name


def sweep_of(name: str) -> str:
    """Each check's runs are one sweep of the queue."""
    return f"verify-{name}"


@dataclass(frozen=True)
class Ignored:
    """A note that does not count, and why."""

    commit: str
    on_tree: bool  # the note was on the commit's tree
    why: str

    def line(self, name: str) -> str:
        where = f"{self.commit[:7]}'s tree" if self.on_tree else self.commit[:7]
        return f"git-gpuspace: ignored the note on {where} ({name}): {self.why}"


def verdict(info: worktrees.RepoInfo, name: str, commit: str) -> Verdict | None:
    return verdicts(info, name, [commit])[commit]


def verdicts(info: worktrees.RepoInfo, name: str, commits: list[str],
             ignored: list[Ignored] | None = None) -> dict[str, Verdict | None]:
    """The check's verdict for each commit: its own note, or one its tree got from another commit,
    each only when signed by a trusted key; the notes that do not count go to `ignored`."""
    found: dict[str, Verdict | None] = dict.fromkeys(commits)
    notes = worktrees.read_notes(info, NOTES + name, commits, with_trees=True)
    if notes is None:  # no such notes ref
        return found
    from .signing import Verifier

    seen: set[str] = set()  # a tree shared by commits of the range is said once
    with Verifier(info) as verifier:
        for commit in commits:
            for own in (True, False):  # the commit's own note, else its tree's
                target, note = notes[commit][0 if own else 1]
                if note is None:
                    continue
                text, why = verifier.check(name, target, note)
                if why is None:
                    found[commit] = _parse(text, own)
                    break
                if ignored is not None and target not in seen:
                    seen.add(target)
                    ignored.append(Ignored(commit, not own, why))
    return found


def copy_verdict(info: worktrees.RepoInfo, name: str, commit: str, found: Verdict) -> None:
    """A commit with an already checked tree gets that verdict as its own note."""
    _write(info, name, commit, found.text, also_tree=False)  # signed again: for this commit


def record(info: worktrees.RepoInfo, run: Run, image: str) -> None:
    """A check's run ended: its verdict becomes the commit's note (and its tree's)."""
    if run.state not in ("succeeded", "failed") or run.exit_code is None:
        return  # stopped or interrupted: no verdict about the code
    from . import gpus

    models = {gpu.uuid: gpu.name for gpu in gpus.inventory()} if run.gpus else {}
    text = "\n".join([
        "pass" if run.exit_code == 0 else "fail",
        "",
        f"exit code: {run.exit_code}",
        f"duration: {run.duration_s:.1f} s" if run.duration_s is not None else "duration: -",
        f"image: {image}",
        "gpu: " + (", ".join(f"{models.get(uuid) or '?'} ({uuid})" for uuid in run.gpus) or "none"),
        f"log: {log_of(run) or '-'}",
        f"command: {' '.join(run.command)}",
        f"commit: {run.commit}",
        f"run: {run.id}",
    ]) + "\n"
    try:
        _write(info, run.check or "default", run.commit, text, also_tree=True)
    except GpuspaceError as error:  # the run is recorded all the same; the commit stays "not checked"
        print(f"git-gpuspace: the verdict of {run.commit[:7]} ({run.check or 'default'}) was not written: {error}"
              + (f" ({error.hint})" if error.hint else ""), file=sys.stderr)


def log_of(run: Run) -> str | None:
    """Where the run's output is on the host: the wrapper's log in its data dir."""
    from .runs.wrapper import LOG  # the wrapper pulls in the engine's modules: only when a run is at hand

    return str(Path(run.data_dir) / LOG) if run.data_dir else None


def _write(info: worktrees.RepoInfo, name: str, commit: str, text: str, also_tree: bool) -> None:
    """The note on the commit (and its tree), each signed for where it is; it replaces any other."""
    from .signing import Trust, ensure_key, sign

    ensure_key()  # before the keys are read: the first verdict's is remembered as verified under them
    trust = Trust.load(info)
    targets = [commit] + ([worktrees.tree_of(info, commit)] if also_tree else [])
    worktrees.write_notes(info, NOTES + name, {target: sign(name, target, text, trust) for target in targets},
                          message=f"git-gpuspace verify {name}")


def _parse(text: str, own: bool = True) -> Verdict:
    return Verdict(text.split("\n", 1)[0].strip() == "pass", text, own)
