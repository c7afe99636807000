"""Replace a file whole: what a reader sees, or what a crash leaves, is the old file or the new
one, never a part of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import StateError
from .faults import checkpoint


def replace_file(path: Path, data: bytes, mode: int = 0o600, before_rename: Callable[[], None] | None = None) -> None:
    """Write `data` to a new file beside `path` (`mode`: 0600 unless asked, so that what is
    private never shows to others even for a moment), fsync it, then rename it over `path`.
    Nothing is left behind on failure; OSError goes to the caller."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write(path: Path, data: bytes,
                 hint: str = "free some space, or make the git dir writable; the old file is unchanged") -> None:
    """A file of ours in the git dir or the config dir, replaced whole (replace_file): a full
    disk or a read-only dir is one line naming the file; nothing is left behind."""
    try:
        replace_file(path, data, before_rename=lambda: checkpoint("before-state-rename"))
    except OSError as error:
        raise StateError(f"cannot write {path}: {error.strerror or error}", hint=hint) from None
