"""Choosing GPUs and host ports: pure functions of what exists, what is held and what is asked."""

from __future__ import annotations

import hashlib
from typing import Callable

from .errors import GpusUnavailable, PortTaken, UsageError
from .model import Gpu, GpuRequest, Holder, PortMap, PortRequest, current_user

PORT_RANGE = range(20000, 30000)  # chosen host ports; below the kernel's ephemeral range

Leases = dict[str, list[Holder]]  # GPU UUID -> who holds it, from container labels


def choose(request: GpuRequest, inventory: list[Gpu], leases: Leases, share: bool,
           pack: tuple[str, int] | None = None) -> list[Gpu]:
    """The GPUs to give a new binding, or an error that names who holds the rest.

    A GPU is available when nobody holds it, or, with `share`, when every holder also
    opted in to sharing, or, with `pack` (group, K), when it holds fewer than K runs of that
    group and nothing else. Counts prefer free GPUs, then the least shared ones.
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
        candidates = [gpu for gpu in inventory if _available(gpu, leases, share, pack)]
        candidates.sort(key=lambda gpu: (len(leases.get(gpu.uuid, [])), gpu.index))
        if len(candidates) >= request.count:
            return sorted(candidates[: request.count], key=lambda gpu: gpu.index)
        taken = [gpu for gpu in inventory if not _available(gpu, leases, share, pack)]
        raise _busy(f"asked for {request.count} GPU{'s' if request.count > 1 else ''}, "
                    f"{len(candidates)} free; {_describe(taken, leases)}", share, taken, leases)
    taken = [gpu for gpu in wanted if not _available(gpu, leases, share, pack)]
    if taken:
        raise _busy(_describe(taken, leases), share, taken, leases)
    return wanted


def _busy(message: str, share: bool, taken: list[Gpu], leases: Leases) -> GpusUnavailable:
    """The refusal, with who holds each GPU taken (a queue says what its runs wait for)."""
    error = GpusUnavailable(message, hint=_busy_hint(share, taken, leases))
    error.held = {gpu.index: _who(leases.get(gpu.uuid, [])) for gpu in taken}
    return error


def _lookup(gpu_id: str, inventory: list[Gpu]) -> Gpu:
    for gpu in inventory:
        if gpu_id == gpu.uuid or (gpu_id.isdigit() and int(gpu_id) == gpu.index):
            return gpu
    indices = ", ".join(str(gpu.index) for gpu in inventory)
    raise GpusUnavailable(f"unknown GPU '{gpu_id}'", hint=f"this host has GPUs {indices}; see `git gpuspace gpus`")


def _available(gpu: Gpu, leases: Leases, share: bool, pack: tuple[str, int] | None = None) -> bool:
    holders = leases.get(gpu.uuid, [])
    if pack is not None and holders and all(holder.pack == pack[0] for holder in holders):
        return len(holders) < pack[1]
    return not holders or (share and all(holder.share for holder in holders))


def _describe(taken: list[Gpu], leases: Leases) -> str:
    return "; ".join(f"GPU {gpu.index} is held by {_who(leases.get(gpu.uuid, []))}" for gpu in taken)


def _who(holders: list[Holder]) -> str:
    return " and ".join(
        f"{holder.worktree}" + (f" ({holder.branch})" if holder.branch else "")
        + (f" of user {holder.user}" if holder.user and holder.user != current_user() else "") for holder in holders
    )


def _busy_hint(share: bool, taken: list[Gpu], leases: Leases) -> str:
    if any(not holder.container for gpu in taken for holder in leases.get(gpu.uuid, [])):
        return "a process outside gpuspace computes on it: wait for it to end, or ask for another GPU"
    holders = [holder for gpu in taken for holder in leases.get(gpu.uuid, [])]
    if holders and all(holder.user and holder.user != current_user() for holder in holders):
        return "another user holds it: ask them, or wait (`git gpuspace gpus` shows who holds what)"
    if share:
        return "a GPU is shared only when every holder passed --share; free one with `git gpuspace remove <path>`"
    return "free one with `git gpuspace remove <path>`, or pass --share to share a GPU on purpose"



def choose_ports(
    requests: list[PortRequest],
    taken: set[int],
    address: str,
    is_free: Callable[[str, int], bool],
    seed: str,
) -> list[PortMap]:
    """Host ports for `requests`: the one asked for, or a free one from PORT_RANGE.

    A port is free when no container publishes or reserves it and it can be bound on the
    host. Each worktree starts its search at its own place in the range, so neighbours rarely
    meet. A port asked for that is taken is an error, never silently remapped.
    """
    chosen: list[PortMap] = []
    taken = set(taken)
    for request in requests:
        if request.host_port is not None:
            if request.host_port in taken or not is_free(address, request.host_port):
                raise PortTaken(
                    f"host port {request.host_port} ({request.name}) is already in use",
                    hint=f"pick another, or write --port {request.name}={request.container_port} to get a free one",
                )
            port = request.host_port
        else:
            digest = int(hashlib.sha256(f"{seed}\0{request.name}".encode()).hexdigest(), 16)
            start = digest % len(PORT_RANGE)
            ordered = [PORT_RANGE[(start + i) % len(PORT_RANGE)] for i in range(len(PORT_RANGE))]
            port = next((p for p in ordered if p not in taken and is_free(address, p)), None)
            if port is None:
                raise PortTaken(f"no free host port for {request.name} in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")
        taken.add(port)
        chosen.append(PortMap(request.name, request.container_port, port, address, request.origin))
    return chosen
