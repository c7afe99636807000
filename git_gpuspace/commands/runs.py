"""`git gpuspace runs [--sweep NAME] [--state S] [--sort METRIC] [--json]`: the queue and its
history; `git gpuspace runs resume`: dispatch what is queued (after Ctrl-C, kill -9, a reboot)."""

from __future__ import annotations

import argparse
import json
import sys

from .. import output, worktrees
from ..errors import UsageError
from ..runs import results
from ..runs import store as run_store
from ..runs.dispatch import alive, dispatch


def run(args: argparse.Namespace) -> int:
    info = worktrees.discover()
    if args.action == "resume":
        ended = dispatch(info)
        failed = [r for r in ended if r.state != "succeeded"]
        print(f"{len(ended) - len(failed)} succeeded, {len(failed)} failed or stopped", file=sys.stderr)
        return 1 if failed else 0
    runs = run_store.load(info.common_dir).runs
    if args.sweep:
        runs = [run for run in runs if run.sweep == args.sweep]
    if args.state:
        runs = [run for run in runs if run.state == args.state]
    records = [_record(run) for run in runs]
    if args.sort:
        key, descending = args.sort.lstrip("-"), args.sort.startswith("-")
        if records and not any(key in r["metrics"] for r in records):
            raise UsageError(f"no run has a metric '{key}'",
                             hint=f"metrics seen: {', '.join(sorted({m for r in records for m in r['metrics']})) or 'none'}")
        present = sorted((r for r in records if key in r["metrics"]), key=lambda r: r["metrics"][key], reverse=descending)
        records = present + [r for r in records if key not in r["metrics"]]
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        print()
        return 0
    names = sorted({name for r in records for name in r["metrics"]})
    rows = [[r["id"], r["sweep"] or "-", " ".join(f"{k}={v}" for k, v in r["params"].items()) or "-",
             r["state"], "-" if r["exit_code"] is None else str(r["exit_code"]),
             "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}s", str(len(r["gpus"])),
             *[f"{r['metrics'][n]:g}" if n in r["metrics"] else "-" for n in names]] for r in records]
    print(output.table(["RUN", "SWEEP", "PARAMS", "STATE", "EXIT", "TIME", "GPUS", *[n.upper() for n in names]], rows))
    if any(r["state"] == "queued" for r in records) and not alive(info):
        print("git-gpuspace: runs are queued and no dispatcher is running: `git gpuspace runs resume`", file=sys.stderr)
    return 0


def _record(run: run_store.Run) -> dict:
    """One run in the documented `runs --json` schema."""
    return {
        "id": run.id, "sweep": run.sweep, "params": dict(run.params), "commit": run.commit,
        "state": run.state, "reason": run.reason, "exit_code": run.exit_code,
        "started": run.started.isoformat() if run.started else None,
        "finished": run.finished.isoformat() if run.finished else None,
        "duration_s": run.duration_s, "gpus": list(run.gpus), "worktree": run.worktree,
        "data_dir": run.data_dir, "metrics": results.metrics(run.data_dir),
    }
