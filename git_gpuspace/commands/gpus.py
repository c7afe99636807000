"""`git gpuspace gpus [--json]`: the host's GPUs and which worktree (of any repo) holds each."""

from __future__ import annotations

import argparse
import json
import sys

from .. import gpus as inventory_source
from .. import output
from ..engine.containers import Engine
from ..errors import EngineUnavailable
from ..leases import leases, release_vanished


def run(args: argparse.Namespace) -> int:
    source, inventory = inventory_source.probe()
    reserved: dict[str, str] = {}  # GPU UUID -> the waiting request it is held back for
    try:
        engine = Engine()
        managed = release_vanished(engine, engine.list_managed())  # one call, every repo on the engine
        held = leases(managed)
        reserved = _reservations(engine, managed, inventory)
    except EngineUnavailable as error:
        print(f"warning: {error}; holders unknown", file=sys.stderr)
        held = None
    records = [
        {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "name": gpu.name,
            "memory_used_mib": gpu.memory_used_mib,
            "memory_total_mib": gpu.memory_total_mib,
            "utilization_pct": gpu.utilization_pct,
            "holders": None
            if held is None
            else [
                {"worktree": h.worktree, "branch": h.branch, "repo": h.repo, "container": h.container, "share": h.share,
                 "user": h.user}
                for h in held.get(gpu.uuid, [])
            ],
            "reserved_for": reserved.get(gpu.uuid),
        }
        for gpu in inventory
    ]
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        print()
        return 0
    if not inventory:
        print("No NVIDIA GPU found (NVML and nvidia-smi found none).")
        return 0
    rows = []
    for record in records:
        holders = record["holders"]
        if holders is None:
            who = "?"
        else:
            who = ", ".join((f"{h['user']}: " if h["user"] else "") + h["worktree"] + (f" ({h['branch']})" if h["branch"] else "")
                            for h in holders) or "free"
            if record["reserved_for"]:
                who += f"; reserved for {record['reserved_for']}"
        memory = (
            f"{(record['memory_used_mib'] or 0) / 1024:.1f}/{record['memory_total_mib'] / 1024:.1f}G"
            if record["memory_total_mib"] is not None
            else "-"
        )
        util = f"{record['utilization_pct']}%" if record["utilization_pct"] is not None else "-"
        rows.append([str(record["index"]), record["uuid"], record["name"], memory, util, who])
    print(output.table(["GPU", "UUID", "NAME", "MEMORY", "UTIL", "HELD BY"], rows))
    print(f"(inventory from {source})")
    return 0


def _reservations(engine: Engine, managed: list, inventory: list) -> dict[str, str]:
    """GPUs the host's plan holds back for a waiting request (one for several GPUs collects them
    as they free), or frees for one by preemption: GPU UUID -> that request, as `user: what`."""
    from ..runs.host_queue import decide, waiting

    wants = waiting(engine, None, {gpu.uuid for gpu in inventory})
    if not wants:
        return {}
    plan = decide(engine, managed, inventory, [], others=wants)
    whose = {want.key: f"{want.user}: {want.key.replace('#', ' run ')}" for want in wants}
    return {gpu: whose.get(key, key) for key, gpus in plan.reserved.items() for gpu in gpus}
