"""`git gpuspace runs plot --sweep NAME --metric M -o FILE.png`: the metric's curve of each run of
a sweep, as its log has it (each `M=value` line the next step; `step=`/`epoch=` on the line sets
it, as the tracker reads it), drawn with matplotlib (which comes with MLflow)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..git import worktrees
from ..errors import NotARegularFile, UsageError
from ..output import escape
from ..runs import store as run_store
from ..runs.model import Run
from ..runs.results import read_log
from ..runs.tracking import parse

FORMATS = (".png", ".pdf", ".svg")


def curve(run: Run, metric: str) -> list[tuple[int, float]]:
    """The metric's (step, value) points in the run's log, in order."""
    if not run.data_dir:
        return []
    try:
        text = read_log(run.data_dir)
    except (OSError, NotARegularFile):  # a link or FIFO where the log goes: no curve
        return []
    return [(at, value) for name, value, at in parse(text, {}) if name == metric]


def _short(value: str) -> str:
    """A parameter for a legend: a float to four digits (a search's are exact, and long)."""
    try:
        return value if float(value).is_integer() or "." not in value else format(float(value), ".4g")
    except ValueError:
        return value


def plot(info: worktrees.RepoInfo, args: argparse.Namespace) -> int:
    if not args.metric:
        raise UsageError("runs plot needs --metric NAME", hint="git gpuspace runs plot --sweep NAME --metric loss -o loss.png")
    if not args.output:
        raise UsageError("runs plot needs -o FILE (.png, .pdf or .svg)")
    output = Path(args.output)
    if output.suffix.lower() not in FORMATS:
        raise UsageError(f"cannot draw '{args.output}': give a file ending in {', '.join(FORMATS)}")
    if not output.parent.is_dir():
        raise UsageError(f"no directory '{output.parent}' for {args.output}")
    known = run_store.load(info.common_dir, ids=set())
    if args.sweep and args.sweep not in known.sweeps:
        raise UsageError(f"no sweep '{args.sweep}'", hint="`git gpuspace runs` lists the runs and their sweeps")
    runs = run_store.load(info.common_dir, sweep=args.sweep).runs if args.sweep else \
        run_store.load(info.common_dir, ids={args.run} if args.run else None).runs
    curves = [(run, points) for run in runs if (points := curve(run, args.metric))]
    if not curves:
        raise UsageError(f"no run {'of sweep ' + args.sweep + ' ' if args.sweep else ''}printed {args.metric}=...",
                         hint="`git gpuspace runs --sweep NAME` shows the metrics each run printed")
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        from matplotlib import pyplot
    except ImportError:
        raise UsageError("matplotlib is not installed", hint="pip install 'git-gpuspace[mlflow]' (it comes with MLflow)") from None
    figure, axes = pyplot.subplots(figsize=(8, 5))
    for run, points in curves:
        params = " ".join(f"{key}={_short(value)}" for key, value in run.params.items())
        axes.plot([at for at, _ in points], [value for _, value in points], marker="." if len(points) < 50 else None,
                  label=escape(f"{run.id} ({run.state}) {params}")[:80])
    axes.set_xlabel("step")
    axes.set_ylabel(args.metric)
    axes.set_title(f"{args.metric} of {'sweep ' + args.sweep if args.sweep else info.name}")
    axes.grid(alpha=0.3)
    if len(curves) <= 20:
        axes.legend(fontsize="small")
    temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp{output.suffix}")
    try:
        figure.savefig(temporary, format=output.suffix[1:].lower(), bbox_inches="tight")
        os.replace(temporary, output)  # a file that is there is whole
    finally:
        pyplot.close(figure)
        temporary.unlink(missing_ok=True)
    print(f"{output}: {args.metric} of {len(curves)} run{'s' if len(curves) > 1 else ''}", file=sys.stderr)
    return 0
