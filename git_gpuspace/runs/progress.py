"""What a dispatching command shows: a line per start and end (plain, for logs and pipes), and
on a terminal a live block under them: each running run with its elapsed time, and the counts."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from ..output import escape
from .model import Run


class Progress:
    def __init__(self, out: TextIO, live: bool = True) -> None:
        self.out = out
        self.live = live and out.isatty()
        self.drawn = 0  # lines of the live block now on screen
        self.seen: dict[str, str] = {}  # run id -> state last shown

    def event(self, line: str) -> None:
        self._clear()
        print(escape(line), file=self.out, flush=True)  # it names a run's command: its values are anyone's

    def changes(self, runs: list[Run]) -> None:
        """Lines for state changes made by another dispatcher (we only follow it)."""
        for run in runs:
            if self.seen.get(run.id, run.state) != run.state:
                self.event(f"{run.id} {run.state}" + (f" (exit {run.exit_code})" if run.exit_code is not None else ""))
            self.seen[run.id] = run.state

    def show(self, runs: list[Run]) -> None:
        for run in runs:
            self.seen.setdefault(run.id, run.state)
        if not self.live:
            return
        self._clear()
        counts = Counter(run.state for run in runs)
        lines = [f"  {run.id:<16} running {run.duration_s or 0:7.1f} s  {escape(' '.join(run.command))[:60]}"
                 for run in runs if run.state == "running"]
        shown = ("queued", "running", "succeeded", "failed", "stopped") + (("pruned",) if counts["pruned"] else ())
        lines.append("  " + ", ".join(f"{counts[state]} {state}" for state in shown))
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, clear to the end
            self.drawn = 0
