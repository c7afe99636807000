"""Parsing of what users type: sizes, CPU counts, GPU specs. Pure functions."""

from __future__ import annotations

import os
import re

from .errors import UsageError
from .model import GpuRequest, PortRequest

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# The engine refuses memory limits below 6 MiB; say so before it does.
MIN_MEMORY = 6 << 20


def parse_size(text: str, what: str, minimum: int = 1) -> int:
    """'16g', '512m', '8GiB', '1073741824' -> bytes (binary units, as Docker reads them)."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(
            f"invalid {what} '{text}'",
            hint="use a number with an optional unit: 512m, 16g, 1.5t",
        )
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < minimum:
        raise UsageError(f"{what} '{text}' is too small (at least {format_size(minimum)})")
    return int(value)


def host_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def parse_limit(text: str, what: str, minimum: int = 1, hint: str | None = None) -> int:
    """A memory-like limit (--memory, --shm-size: /dev/shm is memory too): a size no larger than
    this host's memory."""
    size = parse_size(text, what, minimum)
    total = host_memory()
    if total and size > total:
        raise UsageError(f"{what} {text} is more than this host's memory ({format_size(total)})", hint=hint)
    return size


def format_size(num_bytes: int) -> str:
    for unit in ("t", "g", "m", "k"):
        size = _UNITS[unit]
        if num_bytes >= size and num_bytes % size == 0:
            return f"{num_bytes // size}{unit}"
    for unit in ("t", "g", "m", "k"):
        if num_bytes >= _UNITS[unit]:
            return f"{num_bytes / _UNITS[unit]:.1f}{unit}"
    return str(num_bytes)


def parse_cpus(text: str) -> float:
    try:
        cpus = float(text)
    except ValueError:
        raise UsageError(f"invalid --cpus '{text}'", hint="use a number such as 4 or 2.5") from None
    host = os.cpu_count() or 1
    if not 0.01 <= cpus <= host:
        raise UsageError(f"--cpus {text} is out of range: this host has {host} CPUs (0.01 to {host})")
    return cpus


_GPU_ID = re.compile(r"^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$")


def parse_gpus(text: str) -> GpuRequest:
    """'2' = any two free GPUs; '0,2' or 'GPU-…' = those; 'all'; 'none'.

    A single number is a count, as with `docker run --gpus 2`; to name GPU 1 alone,
    write `1,` or `device=1`.
    """
    spec = str(text).strip()
    if spec.startswith("device="):
        spec = spec[len("device="):].strip() + ","
    lowered = spec.lower()
    if lowered == "all":
        return GpuRequest(all=True)
    if lowered in ("none", "0", ""):
        return GpuRequest()
    if spec.isdigit():
        return GpuRequest(count=int(spec))
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids:
        raise UsageError(f"invalid --gpus '{text}'", hint=_GPU_HINT)
    for gpu_id in ids:
        if not _GPU_ID.fullmatch(gpu_id):
            raise UsageError(f"invalid GPU id '{gpu_id}' in --gpus '{text}'", hint=_GPU_HINT)
    duplicates = sorted({gpu_id for gpu_id in ids if ids.count(gpu_id) > 1})
    if duplicates:
        raise UsageError(f"GPU {', '.join(duplicates)} is listed twice in --gpus '{text}'")
    return GpuRequest(ids=tuple(ids))


_GPU_HINT = "use a count (2), indices or UUIDs (0,2 or GPU-…), 'all' or 'none'"


_PORT = re.compile(r"^([a-z][a-z0-9_-]{0,30})=(\d{1,5})(?::(\d{1,5}))?$")


def parse_port(text: str) -> PortRequest:
    """`NAME=CONTAINER_PORT[:HOST_PORT]`: the host port is chosen when not given."""
    match = _PORT.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"invalid --port '{text}'",
            hint="write NAME=CONTAINER_PORT or NAME=CONTAINER_PORT:HOST_PORT, e.g. --port web=8000",
        )
    name, container_port = match.group(1), _port_number(match.group(2), text)
    host_port = _port_number(match.group(3), text) if match.group(3) else None
    return PortRequest(name, container_port, host_port)


def _port_number(digits: str, text: str) -> int:
    number = int(digits)
    if not 1 <= number <= 65535:
        raise UsageError(f"port {number} in '{text}' is out of range (1-65535)")
    return number


def parse_address(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise UsageError(f"invalid --publish-address '{text}'", hint="an IP address such as 127.0.0.1") from None
