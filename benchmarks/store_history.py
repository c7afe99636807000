#!/usr/bin/env python3
"""A history of finished runs for the run-store benchmark (benchmarks/run.py, section `store`).

    python benchmarks/store_history.py REPO COUNT [--worktrees] [--no-store] [--seed N]

Writes COUNT finished runs into REPO's run store through the store's own Python API
(`store.locked(common_dir)`, `Runs.next_id`, `store.Run`, `Runs.save`), so the same history
is made whatever the store keeps its runs in. Each run has a command, the repo's HEAD, its
worktree path (`<repo parent>/worktrees/runs/<repo>/<id>`, as `run` gives it), a state (succeeded or,
one in seven, failed), submitted/started/finished times over the last 90 days, an exit code, a
GPU, a container name and a data dir that exists (made as a run's is, in the user's data root)
with `logs/run.log` holding a few lines of metrics (`loss=...`, `acc=...`). Six runs in ten
belong to sweeps of 24 (lr x seed params), the rest are single runs.

With --worktrees each run also gets what a real run leaves in git, which `runs clean` removes:
a detached worktree at its path (`git worktree add --detach`) and `refs/gpuspace/runs/<id>`
at HEAD. With --no-store only those are made (for runs that are not written to the store:
the benchmark's git-only anchor); the ids are then `run-<n>` after the ones given before.

Runs with the interpreter and PYTHONPATH of the code measured: the first line of its output
is the file of the store module it wrote through; the second the number of runs written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import random
import subprocess
import sys
from pathlib import Path

SWEEP_SIZE = 24
LRS = ("0.0001", "0.0003", "0.001")
CHUNK = 250  # runs written per lock and save: a sweep is submitted at once, single runs one by one


def git(*args: str, cwd: Path, stdin: str | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"store_history: git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def log_text(rng: random.Random, failed: bool) -> str:
    loss = rng.uniform(1.5, 2.5)
    lines = [f"epoch 0 loss={loss:.4f}"]
    for epoch in range(1, 5 if not failed else 3):
        loss *= rng.uniform(0.3, 0.7)
        lines.append(f"epoch {epoch} step {epoch * 500} loss={loss:.4f} lr={rng.choice(LRS)}")
    if failed:
        lines.append("Traceback (most recent call last):\nRuntimeError: CUDA out of memory")
    else:
        lines.append(f"eval acc={rng.uniform(0.8, 0.97):.4f} loss={loss:.4f}")
    return "\n".join(lines) + "\n"


def make_data_dir(root: Path, name: str, origin: tuple[Path, Path], text: str) -> str:
    """The data dir as a run's is made (owner mark, checkpoints/, logs/), with its log."""
    try:
        try:
            from git_gpuspace import data_dirs as layout
        except ImportError:  # the code before data_dirs.py
            from git_gpuspace import workspace as layout

        path, _ = layout.create_data_dir(root, name, origin)
    except (ImportError, AttributeError, TypeError):  # another layout of the code: a plain dir
        path = root / name
        (path / "logs").mkdir(parents=True, exist_ok=True)
    (path / "logs" / "run.log").write_text(text)
    return str(path)


def plan_ids(count: int, rng: random.Random, sweeps_before: int) -> list[tuple[str | None, dict[str, str]]]:
    """(sweep or None, params) for each run: about six in ten in sweeps of SWEEP_SIZE."""
    planned: list[tuple[str | None, dict[str, str]]] = []
    sweep_n = sweeps_before
    while len(planned) < count:
        if rng.random() < 0.6 / (0.6 + 0.4 * SWEEP_SIZE):  # a sweep as often as 24 single runs x 0.4/0.6
            sweep_n += 1
            name = f"lr-seed-{sweep_n}"
            for lr in LRS:
                for seed in range(SWEEP_SIZE // len(LRS)):
                    planned.append((name, {"lr": lr, "seed": str(seed)}))
        else:
            planned.append((None, {}))
    return planned[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--worktrees", action="store_true", help="also each run's worktree and ref, as a run leaves them")
    parser.add_argument("--no-store", action="store_true", help="only worktrees and refs, nothing in the store")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from git_gpuspace.config import default_data_root
    from git_gpuspace.runs import results, store

    repo = args.repo.resolve()
    common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=repo))
    head = git("rev-parse", "HEAD", cwd=repo)
    where = repo.parent / "worktrees" / "runs" / repo.name
    data_root = default_data_root()
    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    print(store.__file__, flush=True)

    ids: list[str] = []
    if args.no_store:
        taken = {path.name for path in where.iterdir()} if where.is_dir() else set()
        number = 0
        while len(ids) < args.count:
            number += 1
            if f"run-{number}" not in taken:
                ids.append(f"run-{number}")
    else:
        with store.locked(common) as runs:
            sweeps_before = len(runs.sweeps)
        planned = plan_ids(args.count, rng, sweeps_before)
        for first in range(0, len(planned), CHUNK):
            with store.locked(common) as runs:
                for sweep, params in planned[first:first + CHUNK]:
                    run_id = runs.next_id(sweep or "run")
                    if sweep:
                        runs.sweeps.setdefault(sweep, store.Sweep(sweep))
                    failed = rng.random() < 1 / 7
                    started = now - dt.timedelta(days=rng.uniform(0, 90))
                    submitted = started - dt.timedelta(seconds=rng.uniform(0.5, 600))
                    finished = started + dt.timedelta(seconds=rng.uniform(20, 3 * 3600))
                    worktree = where / run_id
                    container = f"gpuspace-{repo.name}-{run_id}"
                    command = ["python", "train.py", "--epochs", "5"]
                    if params:
                        command += ["--lr", params["lr"], "--seed", params["seed"]]
                    data_dir = make_data_dir(data_root, container, (common, worktree), log_text(rng, failed))
                    runs.runs.append(store.Run(
                        id=run_id, command=command, commit=head, worktree=str(worktree), flags={"gpus": "1"},
                        sweep=sweep, params=dict(params), state="failed" if failed else "succeeded",
                        exit_code=1 if failed else 0, submitted=submitted, started=started, finished=finished,
                        gpus=[f"GPU-bench000-0000-4000-8000-{rng.randrange(8):012d}"], container=container,
                        data_dir=data_dir,
                    ))
                    if "metrics" in {f.name for f in dataclasses.fields(store.Run)}:
                        # as a run that ends records them (a store that keeps them reads the log once)
                        runs.runs[-1].metrics = results.metrics(data_dir)
                    ids.append(run_id)
                runs.save()
    if args.worktrees or args.no_store:
        for run_id in ids:
            git("worktree", "add", "-q", "--detach", str(where / run_id), head, cwd=repo)
        git("update-ref", "--stdin", cwd=repo,
            stdin="".join(f"update refs/gpuspace/runs/{run_id} {head}\n" for run_id in ids))
    print(len(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
