"""Undo what a command made when it fails part way: nothing is left half-made."""

from __future__ import annotations

import sys
from typing import Callable


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
