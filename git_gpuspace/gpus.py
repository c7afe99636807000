"""GPU inventory: NVML (nvidia-ml-py) when the driver answers, else `nvidia-smi`, else none."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from typing import Any, Iterator

from .model import Gpu

QUERY_FIELDS = "index,uuid,name,memory.total,memory.used,utilization.gpu"


def inventory() -> list[Gpu]:
    """All GPUs on this host, by index. Never raises: no driver means no GPUs."""
    return probe()[1]


def probe() -> tuple[str, list[Gpu]]:
    """(which path answered: 'nvml', 'nvidia-smi' or 'none', the GPUs it found)."""
    for name, query in (("nvml", _from_nvml), ("nvidia-smi", _from_nvidia_smi)):
        found = query()
        if found is not None:
            return name, sorted(found, key=lambda gpu: gpu.index)
    return "none", []


@contextlib.contextmanager
def _nvml() -> Iterator[Any]:
    """pynvml, initialized (and shut down after), or None without the library or a driver, or
    when GPUSPACE_GPU_SOURCE=nvidia-smi says to ask `nvidia-smi` only (the tests' stand-in)."""
    if os.environ.get("GPUSPACE_GPU_SOURCE") == "nvidia-smi":
        yield None
        return
    try:
        import pynvml
    except ImportError:
        yield None
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None  # no driver library, or no driver loaded
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _from_nvml() -> list[Gpu] | None:
    with _nvml() as pynvml:
        return None if pynvml is None else _nvml_gpus(pynvml)


def _nvml_gpus(pynvml) -> list[Gpu] | None:
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
            utilization = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
            gpus.append(
                Gpu(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_mib=memory.total >> 20 if memory else None,
                    memory_used_mib=memory.used >> 20 if memory else None,
                    utilization_pct=utilization.gpu if utilization else None,
                )
            )
        return gpus
    except pynvml.NVMLError:
        return None


def _optional(query, handle):
    """Some boards (and MIG) do not report every figure; a missing figure is not an error."""
    import pynvml

    try:
        return query(handle)
    except pynvml.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _from_nvidia_smi() -> list[Gpu] | None:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [gpu for gpu in map(_parse_smi_line, result.stdout.splitlines()) if gpu is not None]


def _parse_smi_line(line: str) -> Gpu | None:
    fields = [field.strip() for field in line.split(",")]
    if len(fields) < 3 or not fields[0].isdigit():
        return None
    return Gpu(
        index=int(fields[0]),
        uuid=fields[1],
        name=fields[2],
        memory_total_mib=_number(fields, 3),
        memory_used_mib=_number(fields, 4),
        utilization_pct=_number(fields, 5),
    )


def _number(fields: list[str], position: int) -> int | None:
    """nvidia-smi prints '[N/A]' or '[Not Supported]' where a figure is missing."""
    try:
        return int(float(fields[position]))
    except (IndexError, ValueError):
        return None


def compute_processes() -> dict[str, list[int]] | None:
    """GPU UUID -> pids of the compute processes on it (NVML, else nvidia-smi); None: unknown.
    Memory in use alone says little (an idle GPU shows some); a compute process is a user."""
    found = _processes_from_nvml()
    return found if found is not None else _processes_from_nvidia_smi()


def _processes_from_nvml() -> dict[str, list[int]] | None:
    with _nvml() as pynvml:
        if pynvml is None:
            return None
        try:
            found: dict[str, list[int]] = {}
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
                found[uuid] = [process.pid for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
            return found
        except pynvml.NVMLError:
            return None


def _processes_from_nvidia_smi() -> dict[str, list[int]] | None:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run([executable, "--query-compute-apps=pid,gpu_uuid,used_memory",
                                 "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    found: dict[str, list[int]] = {}
    for line in result.stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) >= 2 and fields[0].isdigit():
            found.setdefault(fields[1], []).append(int(fields[0]))
    return found


def busy_outside(container_ids: set[str]) -> dict[str, list[int]]:
    """GPU UUID -> pids computing on it that no container of ours explains (a process is ours
    when its cgroup names one of our containers)."""
    busy: dict[str, list[int]] = {}
    for uuid, pids in (compute_processes() or {}).items():
        strangers = [pid for pid in pids if not _in_our_container(pid, container_ids)]
        if strangers:
            busy[uuid] = strangers
    return busy


def _in_our_container(pid: int, container_ids: set[str]) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False  # not a process we can see: someone else's
    return any(container_id in text for container_id in container_ids)
