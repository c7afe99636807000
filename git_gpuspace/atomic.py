"""Replace a file whole: what a reader sees, or what a crash leaves, is the old file or the new
one, never a part of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


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
