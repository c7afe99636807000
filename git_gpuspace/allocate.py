"""Choosing GPUs: pure functions of the inventory, the leases and the request."""

from __future__ import annotations

from .errors import GpusUnavailable, UsageError
from .model import Gpu, GpuRequest, Holder

Leases = dict[str, list[Holder]]  # GPU UUID -> who holds it, from container labels


def choose(request: GpuRequest, inventory: list[Gpu], leases: Leases, share: bool) -> list[Gpu]:
    """The GPUs to give a new binding, or an error that names who holds the rest.

    A GPU is available when nobody holds it, or, with `share`, when every holder also
    opted in to sharing. Counts prefer free GPUs, then the least shared ones.
    """
    if request.none:
        return []
    if not inventory:
        raise GpusUnavailable(
            "no NVIDIA GPU found on this host (NVML and nvidia-smi found none)",
            hint="use --gpus none for a container without GPUs",
        )
    if request.ids:
        wanted = [_lookup(gpu_id, inventory) for gpu_id in request.ids]
        if len({gpu.uuid for gpu in wanted}) != len(wanted):
            raise UsageError(f"the same GPU is named twice in --gpus {','.join(request.ids)}")
    elif request.all:
        wanted = list(inventory)
    else:
        assert request.count is not None
        if request.count > len(inventory):
            raise GpusUnavailable(
                f"asked for {request.count} GPUs, but this host has {len(inventory)}",
                hint=f"use --gpus {len(inventory)} or fewer",
            )
        candidates = [gpu for gpu in inventory if _available(gpu, leases, share)]
        candidates.sort(key=lambda gpu: (len(leases.get(gpu.uuid, [])), gpu.index))
        if len(candidates) >= request.count:
            return sorted(candidates[: request.count], key=lambda gpu: gpu.index)
        taken = [gpu for gpu in inventory if not _available(gpu, leases, share)]
        raise GpusUnavailable(
            f"asked for {request.count} GPU{'s' if request.count > 1 else ''}, "
            f"{len(candidates)} free; {_describe(taken, leases)}",
            hint=_busy_hint(share),
        )
    taken = [gpu for gpu in wanted if not _available(gpu, leases, share)]
    if taken:
        raise GpusUnavailable(_describe(taken, leases), hint=_busy_hint(share))
    return wanted


def _lookup(gpu_id: str, inventory: list[Gpu]) -> Gpu:
    for gpu in inventory:
        if gpu_id == gpu.uuid or (gpu_id.isdigit() and int(gpu_id) == gpu.index):
            return gpu
    indices = ", ".join(str(gpu.index) for gpu in inventory)
    raise GpusUnavailable(f"unknown GPU '{gpu_id}'", hint=f"this host has GPUs {indices}; see `git gpuspace gpus`")


def _available(gpu: Gpu, leases: Leases, share: bool) -> bool:
    holders = leases.get(gpu.uuid, [])
    return not holders or (share and all(holder.share for holder in holders))


def _describe(taken: list[Gpu], leases: Leases) -> str:
    parts = []
    for gpu in taken:
        holders = leases.get(gpu.uuid, [])
        who = " and ".join(
            f"{holder.worktree}" + (f" ({holder.branch})" if holder.branch else "") for holder in holders
        )
        parts.append(f"GPU {gpu.index} is held by {who}")
    return "; ".join(parts)


def _busy_hint(share: bool) -> str:
    if share:
        return "a GPU is shared only when every holder passed --share; free one with `git gpuspace remove <path>`"
    return "free one with `git gpuspace remove <path>`, or pass --share to share a GPU on purpose"
