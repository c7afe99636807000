"""Plain-text tables for people; JSON goes through json.dumps directly."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
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
