"""`git gpuspace status [--json]`: git + container + GPUs for every worktree of the repo."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from .. import gpus, output, reconcile, services, state, verify
from ..git import hooks, private_git, worktrees
from ..engine.containers import LABEL_GIT, PRIVATE_GIT, Engine
from ..errors import EngineUnavailable
from ..runs import store as run_store
from ..runs.at_work import alive
from ..runs.model import STATES, Run
from ..specs import format_size


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    known = worktrees.list_worktrees(info)
    try:
        engine = Engine()
        containers = engine.list_managed()  # one call for every container
    except EngineUnavailable as error:
        print(f"warning: {error}; container states unknown", file=sys.stderr)
        engine, containers = None, None
    if engine is not None:
        # Clean up after plain git, unless another command holds the lock (status never waits).
        with state.locked_if_free(info.common_dir) as locked_state:
            if locked_state is not None and reconcile.converge_quietly(
                info, engine, locked_state, worktrees=known, containers=containers
            ):
                containers = engine.list_managed()
    current = state.load(info.common_dir)
    if engine is not None:  # what containers committed comes in first: the heads shown are the imported ones
        synced = private_git.sync_bindings(info, engine, current.bindings, known,
                                             private_git.running_names(containers))
        if any(outcome.moved for outcome in synced.values()):
            known = worktrees.list_worktrees(info)
        _warn_shared_git(current, containers or [])
    # a pending binding's cause may have gone (the engine is back, a GPU is free): retried in the
    # background, as the hooks do, so that status never waits for an image pull
    retrying = engine is not None and any(binding.pending for binding in current.bindings)
    if retrying:
        hooks.converge_in_background(info)
    bound_gpus = any(b.gpus for b in current.bindings)
    by_uuid = {gpu.uuid: gpu for gpu in gpus.inventory()} if bound_gpus else {}
    runs = run_store.load(info.common_dir).runs
    run_paths = {run.worktree for run in runs}
    # a run's worktree is the queue's: runs are summarized per sweep below, not listed one by one
    views = [view for view in reconcile.survey(current, known, containers)
             if view.binding is not None or str(view.path) not in run_paths]
    present = [view.path for view in views if view.worktree is not None and not view.worktree.prunable]
    dirty = worktrees.dirty_of(present)  # one git status per worktree, side by side
    records = [_record(view, by_uuid, dirty.get(view.path)) for view in views]
    if current.checks:  # each worktree's HEAD, as each check found it (or is finding it)
        heads = [record["head"] for record in records if record["head"]]
        found = {name: verify.verdicts(info, name, heads) for name in current.checks}
        # a preempted check is on its way back to the queue
        busy = {(run.check, run.commit): "queued" if run.state == "preempted" else run.state
                for run in runs if run.check and run.state in ("queued", "running", "preempted")}
        for record in records:
            record["checks"] = {name: busy.get((name, record["head"])) or (found[name][record["head"]].word
                                if record["head"] and found[name].get(record["head"]) else "-")
                                for name in current.checks}
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        print()
        return 0
    rows = [
        [
            record["path"] + (" (main)" if record["main"] else ""),
            record["branch"] or "(detached)",
            (record["head"] or "-")[:8],
            {True: "dirty", False: "clean", None: "-"}[record["dirty"]],
            record["state"],  # a pending binding's reason goes below the table: it is a sentence
            ", ".join(
                output.gpu_summary(g["index"], g["name"], g["memory_used_mib"], g["memory_total_mib"], g["utilization_pct"])
                for g in record["gpus"]
            )
            or "-",
            " ".join(f"{p['name']}:{p['host_port']}" for p in record["ports"]) or "-",
            record["image"] or "-",
        ] + ([" ".join(f"{name}:{word}" for name, word in record["checks"].items())] if current.checks else [])
        for record in records
    ]
    print(output.table(["WORKTREE", "BRANCH", "HEAD", "DIRTY", "STATE", "GPUS", "PORTS", "IMAGE"]
                       + (["CHECKS"] if current.checks else []), rows))
    for record in records:
        if record["reason"]:
            print(f"  {output.escape(record['path'])}  pending: {output.escape(record['reason'])}"
                  + ("; retrying now" if retrying else ""))
        origins = {port["name"]: port for port in record["ports"] if port["origin"]}
        for name, url in record["urls"].items():
            if name not in origins:
                print(output.escape(f"  {record['path']}  {name}: {url}"))
        if not record["reason"]:  # where devcontainer.json's ports are (the host port is the binding's for its life)
            for name, port in origins.items():
                print(output.escape(f"  {record['path']}  {name}: {port['container_port']} -> {port['address']}:"
                                    f"{port['host_port']} ({_ORIGIN_WORDS[port['origin']]})"))
        for name, why in record["services_down"].items():
            print(output.escape(f"  {record['path']}  {name}: down ({why})"))
    for line in _run_summary([run for run in runs if not run.cleaned]):  # what `runs clean` let go is history
        print(output.escape(line))
    if any(run.state == "queued" for run in runs) and not alive(info.common_dir):
        print("git-gpuspace: runs are queued and no dispatcher is running: `git gpuspace runs resume`", file=sys.stderr)
    return 0


_ORIGIN_WORDS = {"forwarded": "forwarded", "app": "appPort"}  # model.PORT_ORIGINS, as status names them


def _warn_shared_git(current: state.State, containers: list) -> None:
    """Containers made by an earlier version write the repository's own git dir."""
    by_name = {container.name: container for container in containers}
    for binding in current.bindings:
        container = by_name.get(binding.container)
        if container is not None and container.labels.get(LABEL_GIT) != PRIVATE_GIT:
            print(output.escape(f"git-gpuspace: warning: the container of {binding.path} writes the repository's "
                                f"git dir (made by an earlier version); `git gpuspace restart {binding.path}` makes "
                                f"it again with a git dir of its own"), file=sys.stderr)


def _run_summary(runs: list[Run]) -> list[str]:
    """One line per sweep (and one for single runs): how many runs are in each state."""
    groups: dict[str, Counter] = {}
    for run in runs:
        groups.setdefault(f"sweep {run.sweep}" if run.sweep else "runs", Counter())[run.state] += 1
    return [f"{name}: " + ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
            + " (`git gpuspace runs` for details)" for name, counts in groups.items()]


def _record(view: reconcile.View, by_uuid: dict, dirty: bool | None) -> dict:
    """One worktree in the documented `status --json` schema (see README)."""
    worktree, binding = view.worktree, view.binding
    present = worktree is not None and not worktree.prunable
    # a published port whose service does not answer is shown as down, not as a URL to click
    urls = services.urls(binding) if binding and not binding.pending and view.state == "running" else {}
    # a devcontainer.json's port is the app's: whether it listens yet is the app's business
    down = {port.name: why for port in binding.ports if port.name in urls and not port.origin
            and (why := services.service_state(binding, port))} if urls else {}
    limits = binding.limits if binding else None
    return {
        "path": str(view.path),
        "main": bool(worktree and worktree.is_main),
        "branch": worktree.branch if worktree else (binding.branch if binding else None),
        "head": worktree.head if worktree else None,
        "dirty": dirty if present else None,
        "container": binding.container if binding else None,
        "state": view.state,
        "reason": binding.pending if binding else None,
        "image": binding.image if binding else None,
        "gpus": [_gpu(uuid, by_uuid.get(uuid)) for uuid in (binding.gpus if binding else [])],
        "ports": [
            {"name": p.name, "container_port": p.container_port, "host_port": p.host_port, "address": p.address,
             "origin": p.origin or None}
            for p in (binding.ports if binding else [])
        ],
        "urls": {name: url for name, url in urls.items() if name not in down},
        "services_down": down,
        "data_dir": binding.data_dir if binding else None,
        "limits": {
            "memory": format_size(limits.memory_bytes) if limits and limits.memory_bytes else None,
            "cpus": limits.cpus if limits else None,
            "shm_size": format_size(limits.shm_bytes) if limits and limits.shm_bytes else None,
        },
    }


def _gpu(uuid: str, gpu) -> dict:
    return {
        "index": gpu.index if gpu else None,
        "uuid": uuid,
        "name": gpu.name if gpu else "",
        "memory_used_mib": gpu.memory_used_mib if gpu else None,
        "memory_total_mib": gpu.memory_total_mib if gpu else None,
        "utilization_pct": gpu.utilization_pct if gpu else None,
    }
