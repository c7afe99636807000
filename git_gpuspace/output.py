"""Plain-text tables for people; JSON goes through json.dumps directly (which escapes what it must)."""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls: a branch name, a parameter value or a metric name read from
# a repository or a container may carry them, and a terminal would act on them (ESC starts a
# colour or a cursor move, CR overwrites the line). The backslash is escaped too, so that what
# is shown reads back one way only.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def escape(text: object) -> str:
    """`text` safe to print: each control character as `\\xNN` (ESC as `\\x1b`), a backslash as `\\\\`."""
    text = str(text)
    if text.isprintable() and "\\" not in text:  # most cells of a long table: nothing to replace
        return text
    return _UNSAFE.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\x{ord(m.group()):02x}", str(text))


def printable(text: object) -> str:
    """`text` with its control characters as `\\xNN` (backslashes as they are): for one-line
    messages, which are read, not parsed back."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; every cell escaped (see `escape`)."""
    headers, rows = list(map(str, headers)), [list(map(str, row)) for row in rows]
    every = "".join(headers) + "".join(["".join(row) for row in rows])
    if not (every.isprintable() and "\\" not in every):  # one look at all of it: mostly nothing to escape
        headers = [escape(cell) for cell in headers]
        rows = [[escape(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )


def gpu_summary(index: int | None, name: str, used_mib: int | None, total_mib: int | None, util: int | None) -> str:
    """'1 H200 10.2/139.8G 35%': index, short name, memory used/total, utilisation."""
    parts = [str(index) if index is not None else "?"]
    if name:
        parts.append(name.replace("NVIDIA ", ""))
    if total_mib is not None:
        used = f"{used_mib / 1024:.1f}" if used_mib is not None else "?"
        parts.append(f"{used}/{total_mib / 1024:.1f}G")
    if util is not None:
        parts.append(f"{util}%")
    return " ".join(parts)
