#!/usr/bin/env python3
"""git-gpuspace benchmarks: every figure next to its anchor, measured in one run.

    python benchmarks/run.py            # the full run; writes benchmarks/RESULTS.md
    python benchmarks/run.py --smoke    # small sizes, one repetition, no thresholds (CI)

It makes its own inputs (generated repositories, bindings on the test image) in a temporary
directory, runs each figure and its anchor alternately (the order rotates every repetition)
and reports medians. Everything it made, containers included, is removed at the end, also
after a failure or an interrupt. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import pstats
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAKES = ROOT / "tests" / "engine"
sys.path.insert(0, str(HERE))

from engine_proxy import EngineProxy  # noqa: E402

MIB = 1024 * 1024
# `python -m cProfile` swallows SystemExit, so a failing command would look fine: this one
# keeps the exit status. argv: output file, script, its arguments.
PROFILE_WRAPPER = """
import cProfile, runpy, sys
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
profiler, code = cProfile.Profile(), 0
profiler.enable()
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else (stop.code is not None)
finally:
    profiler.disable()
    profiler.dump_stats(out)
sys.exit(code)
"""
FLOOR_IMPORTS = "import docker, dulwich.repo"
LABEL_REPO = "gpuspace.repo"


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    reps: int  # repetitions of the quick figures
    reps_slow: int  # repetitions of the 20k-file figures
    small: tuple[int, int]  # (directories, files per directory) of the "1k" repository
    large: tuple[int, int]  # ... of the "20k" repository
    project: tuple[int, int]  # ... of the repository that status, gpus and add scale in
    scale: tuple[int, ...]  # binding counts for the scaling table
    status_at: int  # the binding count of the status figure (one of `scale`)
    hook_bindings: int
    tmpfs: bool  # also the 20k worktree on tmpfs (no disk: what the CPU costs)
    before: bool  # also dulwich's own reset_index, the checkout this project had before
    profiles: bool  # profile what misses its target
    warmup: bool  # one unmeasured run of every arm first
    quiet_s: int  # pause before the 20k-file figures (see README: recently freed inodes)
    queue: tuple[int, int, int] = (24, 4, 3)  # the queue figure: runs of `sleep S` on G GPUs: (runs, G, S)
    big_sweeps: tuple[int, int] = (12, 48)  # sweep sizes whose dispatcher memory and engine calls are compared
    slurm_sweep: tuple[int, int] = (16, 2)  # the Slurm figures: runs of `sleep S`: (runs, S)
    verify_sizes: tuple[int, int, int] = (20, 8, 2)  # commits already checked; unchecked ones; their `sleep S`
    kills: tuple[int, int, int, float] = (50, 24, 4, 3.0)  # kill -9s of the dispatcher; runs of `sleep S` on G GPUs
    # the run store: finished runs in the history, in its anchor, cleaned by `runs clean`; repetitions of the clean
    store: tuple[int, int, int, int] = (5000, 10, 500, 5)
    # the scheduler: two repos' sweeps of R runs of `sleep S` on G GPUs: (R, S, G); and the time slices: R runs (every
    # third long) of L or T one-second units on G GPUs, with and without a slice of D seconds: (R, L, T, G, D)
    sched: tuple[int, float, int] = (12, 2.0, 4)
    sched_slice: tuple[int, int, int, int, float] = (12, 20, 2, 2, 5.0)
    # searches: T trials of each sampler over K seeds, on G GPUs, runs of E epochs (S seconds each): (T, K, G, E, S)
    search: tuple[int, int, int, int, float] = (32, 5, 4, 10, 1.0)
    profile_all: bool = False  # ... and what meets it
    only: str | None = None  # one section of SECTIONS, not all


SECTIONS = {"creation": "creation", "hook": "hook", "add": "add_end_to_end", "scale": "scale", "queue": "queue", "verify": "verify",
            "slurm": "slurm", "kills": "kills", "store": "store", "scheduler": "scheduler", "search": "search",
            "tracking": "tracking"}


FULL = Plan(
    reps=9, reps_slow=5, small=(10, 100), large=(200, 100), project=(10, 10),
    scale=(1, 10, 20, 50), status_at=20, hook_bindings=3, tmpfs=True, before=True, profiles=True,
    warmup=True, quiet_s=40,
)
# sched: runs of 3 s, so that repo A's sweep still runs when B's is queued on a loaded machine
# (B's `sweep` took 1.8 s beside a second copy of the test suite).
SMOKE = Plan(
    reps=1, reps_slow=1, small=(5, 10), large=(10, 20), project=(2, 5),
    scale=(1, 3), status_at=3, hook_bindings=2, tmpfs=False, before=False, profiles=False,
    warmup=False, quiet_s=0, queue=(4, 2, 1), big_sweeps=(2, 4), slurm_sweep=(4, 1), verify_sizes=(3, 2, 1),
    kills=(2, 2, 2, 0.5), store=(200, 10, 20, 1), sched=(3, 3.0, 4), sched_slice=(3, 3, 1, 2, 2.0),
    search=(3, 1, 2, 2, 0.1),
)


# --------------------------------------------------------------------------- running commands


class CommandFailed(RuntimeError):
    pass


@dataclass
class Sample:
    seconds: float
    rss_kib: int  # peak resident set of the command (and the children it waited for)


class Runner:
    """Runs commands in the benchmark's own environment and measures them.

    Peak RSS comes from GNU time, which runs each command as its own child: the `ru_maxrss`
    that `wait4` reports for a child of this (large) process starts at this process's own
    peak, which Linux hands on at exec.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.gnu_time = _gnu_time()

    def run(self, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Sample:
        """Wall time and peak RSS of one command; raises with its output when it fails."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                tempfile.NamedTemporaryFile("r", prefix="rss-") as rss:
            launch = [self.gnu_time, "-f", "%M", "-o", rss.name, *command] if self.gnu_time else command
            start = time.perf_counter()
            process = subprocess.Popen(launch, cwd=cwd, env=env or self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                _, status, usage = os.wait4(process.pid, 0)
            except BaseException:
                process.kill()
                process.wait()
                raise
            seconds = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                out.seek(0)
                err.seek(0)
                raise CommandFailed(
                    f"`{shlex.join(command)}` in {cwd} exited {process.returncode}:\n"
                    f"{out.read().decode(errors='replace')[-2000:]}{err.read().decode(errors='replace')[-2000:]}"
                )
            peak = usage.ru_maxrss
            if self.gnu_time:
                peak = int(rss.read().split()[-1])
        return Sample(seconds, peak)

    def output(self, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(command, cwd=cwd, env=env or self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise CommandFailed(f"`{shlex.join(command)}` in {cwd} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout


def _gnu_time() -> str | None:
    path = "/usr/bin/time"
    try:
        probe = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if probe.returncode == 0 and probe.stderr.strip().isdigit() else None


def gpuspace_script() -> Path:
    beside = Path(sys.executable).parent / "git-gpuspace"
    if beside.exists():
        return beside
    found = shutil.which("git-gpuspace")
    if found is None:
        sys.exit("benchmarks: git-gpuspace is not installed here; run: pip install -e .")
    return Path(found)


def make_env(base: Path, seed: str, image: str) -> dict[str, str]:
    """Isolated HOME and config, the fake nvidia-smi, our own GPU UUIDs and lock directory."""
    home = base / "home"
    # PYTHONDONTWRITEBYTECODE is dropped: an installed program has its bytecode compiled
    env = {key: value for key, value in os.environ.items()
           if key not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "PYTHONDONTWRITEBYTECODE")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        PATH=os.pathsep.join([str(FAKES), str(gpuspace_script().parent), os.environ.get("PATH", "")]),
        FAKE_GPU_SEED=seed,
        FAKE_GPU_COUNT="8",
        GPUSPACE_GPU_SOURCE="nvidia-smi",  # the stand-in, even where NVML would find real GPUs
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
        GIT_CONFIG_NOSYSTEM="1",
    )
    (home / "config" / "git-gpuspace").mkdir(parents=True)
    (home / "config" / "git-gpuspace" / "config.toml").write_text(f'[defaults]\nimage = "{image}"\n')
    (base / "locks").mkdir()
    return env


# --------------------------------------------------------------------------- inputs


def file_content(directory: int, number: int, revision: int = 0) -> bytes:
    """Python-like text of 0.4 to 2 KB; files share most lines, as real code does (deltas)."""
    lines = [f'"""Module {directory}.{number} (revision {revision})."""', "import math", ""]
    for i in range(8 + (directory * 7 + number * 13) % 40):
        lines.append(f"def step_{i}(x):\n    return math.sqrt(x * {i + directory} + {number + revision})\n")
    return "\n".join(lines).encode()


def make_repo(runner: Runner, path: Path, dirs: int, files: int) -> Path:
    """A repository with `dirs` x `files` files on branch main, and a branch `other` that
    changes ten files and adds one; packed (with deltas) as a clone is."""
    path.mkdir(parents=True)
    runner.output(["git", "init", "-q", "-b", "main"], cwd=path)
    stream = io.BytesIO()

    def commit(branch: str, parent: str | None, changes: list[tuple[str, bytes]], message: str) -> None:
        stream.write(f"commit refs/heads/{branch}\ncommitter Bench <bench@example.com> 1700000000 +0000\n".encode())
        stream.write(f"data {len(message)}\n{message}\n".encode())
        if parent:
            stream.write(f"from {parent}\n".encode())
        for name, data in changes:
            stream.write(f"M 100644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n")

    tree = [(f"pkg{d:03d}/module{f:03d}.py", file_content(d, f)) for d in range(dirs) for f in range(files)]
    commit("main", None, tree, "generated tree")
    changed = [(name, data + b"\n# changed on other\n") for name, data in tree[:10]]
    commit("other", "refs/heads/main", changed + [("NEWS.md", b"other\n")], "a few changes")
    imported = subprocess.run(["git", "fast-import", "--quiet"], cwd=path, env=runner.env, input=stream.getvalue(), capture_output=True)
    if imported.returncode != 0:
        raise CommandFailed(f"git fast-import failed: {imported.stderr.decode(errors='replace')}")
    runner.output(["git", "reset", "-q", "--hard", "main"], cwd=path)
    runner.output(["git", "repack", "-adfq"], cwd=path)
    return path


SHM = Path("/dev/shm")


def tmpfs_room() -> bool:
    return SHM.is_dir() and shutil.disk_usage(SHM).free >= 2 * 1024 * MIB


def settle() -> None:
    """Between runs: let the disk finish what the last run (and its cleanup) left it."""
    os.sync()


# --------------------------------------------------------------------------- figures


@dataclass
class Arm:
    label: str
    measure: Callable[[int], Sample]  # repetition number -> one measured sample
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(sample.seconds for sample in self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        return min(sample.seconds for sample in self.samples), max(sample.seconds for sample in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(sample.rss_kib for sample in self.samples) / 1024


def alternate(arms: list[Arm], reps: int, say: Callable[[str], None], warmup: bool = False) -> None:
    """Each repetition runs every arm once; the order rotates, so no arm always goes first.
    With `warmup`, a first repetition (number 0) is run and thrown away."""
    for rep in range(0 if warmup else 1, reps + 1):
        shift = rep % len(arms)
        done = {}
        for arm in arms[shift:] + arms[:shift]:
            done[arm.label] = arm.measure(rep)
            if rep:
                arm.samples.append(done[arm.label])
        say("  %s: %s" % (f"rep {rep}/{reps}" if rep else "warm-up", ", ".join(f"{arm.label} {done[arm.label].seconds * 1000:.0f} ms" for arm in arms)))


@dataclass
class Figure:
    title: str
    ours: str  # what was measured
    anchor: str
    ours_s: float | None  # medians (seconds), or a value in `unit`
    anchor_s: float | None
    kind: str  # "ratio", "added" (ours - anchor, ms), "absolute" (ours, ms), "mib", "calls", "growth" (MiB), "count"
    # or "gpus" (GPUs held on average)
    target: float | None
    target_text: str
    note: str = ""
    ours_spread: tuple[float, float] | None = None  # fastest and slowest run
    anchor_spread: tuple[float, float] | None = None
    low: float | None = None  # a lower bound of the target too (a range: 2 +- 1 GPUs)
    unit: str | None = None  # ours_s and anchor_s are values in this unit, not seconds ("" for none)

    @property
    def value(self) -> float | None:
        if self.ours_s is None:
            return None
        if self.kind == "ratio":
            return self.ours_s / self.anchor_s if self.anchor_s else None
        if self.kind == "added":
            return (self.ours_s - self.anchor_s) * 1000
        if self.kind == "absolute":
            return self.ours_s * 1000
        return self.ours_s  # mib

    @property
    def result(self) -> str:
        value = self.value
        if value is None:
            return "-"
        return {"ratio": f"{value:.2f}x", "added": f"{value:+.0f} ms", "absolute": f"{value:.0f} ms", "mib": f"{value:.1f} MiB",
                "calls": f"{value:+.0f} calls", "growth": f"{value:+.1f} MiB", "count": f"{value:.0f}",
                "gpus": f"{value:.2f} GPUs"}[self.kind]

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.value <= self.target and (self.low is None or self.value >= self.low)

    def cells(self) -> list[str]:
        verdict = {True: "met", False: "**missed**", None: "-"}[self.met]
        if self.kind in ("calls", "growth", "count", "gpus"):  # `ours` already says what was counted
            return [self.title, self.ours, "-", self.result, self.target_text, verdict]
        ours = self._show(self.ours_s, self.ours_spread)
        anchor = self._show(self.anchor_s, self.anchor_spread)
        return [self.title, f"{self.ours}: {ours}", f"{self.anchor}: {anchor}" if self.anchor else "-", self.result, self.target_text, verdict]

    def _show(self, seconds: float | None, spread: tuple[float, float] | None = None) -> str:
        if seconds is None:
            return "-"
        if self.kind == "mib":
            return f"{seconds:.1f} MiB"
        if self.unit is not None:
            return f"{seconds:.4g}{' ' + self.unit if self.unit else ''}"
        text = _duration(seconds)
        if spread and spread[0] != spread[1]:
            text += f" ({_duration(spread[0])}-{_duration(spread[1])})"
        return text


def _working_in(folder: Path) -> list[int]:
    """The processes whose current directory is in `folder` (a tracker a run started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(folder)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def pair(title: str, ours: Arm, anchor: Arm, kind: str, target: float | None, target_text: str, **more) -> Figure:
    """A figure from two measured arms: medians and spreads."""
    return Figure(title, more.pop("ours_text", ours.label), more.pop("anchor_text", anchor.label), ours.median, anchor.median,
                  kind, target, target_text, ours_spread=ours.spread, anchor_spread=anchor.spread, **more)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Bench:
    def __init__(self, plan: Plan, base: Path, image: str) -> None:
        self.plan = plan
        self.base = base
        self.image = image
        self.seed = secrets.token_hex(4)
        self.env = make_env(base, self.seed, image)
        self.runner = Runner(self.env)
        # a unix socket's path has room for 107 bytes: `base` (under --tmp, or a test's tmp_path) may be longer
        sockets = Path(tempfile.mkdtemp(prefix="gpuspace-proxy-"))
        self.proxy = EngineProxy(str(sockets / "engine.sock"))
        self.counted_env = {**self.env, "DOCKER_HOST": self.proxy.docker_host}
        self.figures: list[Figure] = []
        self.scaling: list[list[str]] = []
        self.scaling_raw: dict[int, dict[str, tuple[float, float, int]]] = {}
        self.requests: dict[str, Counter] = {}
        self.inputs: list[str] = []
        self.profiles: list[tuple[str, str]] = []
        self.roots = [base, sockets]  # every directory whose containers and files are ours
        self.git_gpuspace = ["git", "gpuspace"]

    # helpers
    def say(self, text: str) -> None:
        print(text, flush=True)

    def gs(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Sample:
        return self.runner.run([*self.git_gpuspace, *args], cwd=cwd, env=env)

    def git(self, *args: str, cwd: Path) -> str:
        return self.runner.output(["git", *args], cwd=cwd)

    def retire(self, repo: Path, path: Path, branch: str | None, bound: bool) -> None:
        """Take a worktree out of the way without deleting a file (not timed): unbind it, move
        it aside (a rename), let git forget it. Files are deleted only at the end of the run:
        on a file system without a journal, ext4 skips recently freed inodes when it
        allocates new ones, so deleting 20k files just before a measured checkout slows that
        checkout for reasons that have nothing to do with it."""
        if bound:
            self.gs("remove", "--keep-worktree", str(path), cwd=repo)
        graveyard = path.parent / ".retired"
        graveyard.mkdir(exist_ok=True)
        os.rename(path, graveyard / f"{path.name}-{secrets.token_hex(3)}")
        self.git("worktree", "prune", cwd=repo)
        if branch:
            self.git("branch", "-D", branch, cwd=repo)

    def counted(self, command: list[str], cwd: Path) -> Counter:
        """Engine requests one command makes, through the counting proxy."""
        self.proxy.take()
        self.runner.run(command, cwd=cwd, env=self.counted_env)
        return Counter(f"{method} {_api_path(path)}" for method, path in self.proxy.take())

    def repo(self, name: str, shape: tuple[int, int], where: Path | None = None) -> Path:
        start = time.perf_counter()
        path = make_repo(self.runner, (where or self.base) / name, *shape)
        self.say(f"made {name}: {shape[0] * shape[1]} files in {time.perf_counter() - start:.1f} s")
        return path

    def gpu_uuid(self, index: int) -> str:
        return f"GPU-{self.seed}-0000-4000-8000-{index:012d}"

    # the figures
    def run_all(self) -> None:
        plan = self.plan
        small_n = plan.small[0] * plan.small[1]
        large_n = plan.large[0] * plan.large[1]
        self.inputs.append(
            f"Repositories made by `git fast-import` (Python-like files of 0.4-2 KB), checked out, then "
            f"packed with deltas (`git repack -adf`) as a clone is: {small_n} files "
            f"({plan.small[0]} dirs x {plan.small[1]}), {large_n} files ({plan.large[0]} dirs x {plan.large[1]}), and a "
            f"{plan.project[0] * plan.project[1]}-file project for status, gpus and add scaling."
        )
        with self.proxy:
            self.version()
            if plan.only:
                getattr(self, SECTIONS[plan.only])()
                return
            small = self.repo(f"repo-{small_n}", plan.small)
            self.worktree_creation(small, f"{small_n} files", plan.reps, self.base / "wt")
            large = self.repo(f"repo-{large_n}", plan.large)
            if plan.quiet_s:
                self.say(f"waiting {plan.quiet_s} s: inodes freed just before would slow the first checkouts (see README)")
                time.sleep(plan.quiet_s)
            # The target is judged where neither side waits for the disk: on this kind of machine
            # (ext4 without a journal, shared with other work) git's own time for the same
            # checkout swings tenfold with inodes freed recently anywhere on the disk.
            on_tmpfs = plan.tmpfs and tmpfs_room()
            self.worktree_creation(large, f"{large_n} files", plan.reps_slow, self.base / "wt", memory=True,
                                   target=None if on_tmpfs else 1.5,
                                   note="on this disk; judged on tmpfs (next rows), see the analysis" if on_tmpfs else "")
            if plan.before:
                self.checkout_before_after(large, f"{large_n} files")
            if on_tmpfs:
                self.tmpfs_creation(large, f"{large_n} files", target=1.5)
            self.fixed_cost()
            self.hook()
            self.add_end_to_end()
            self.scale()
            self.queue()
            self.verify()
            self.slurm()
            self.kills()
            self.store()
            self.scheduler()
            self.search()
            self.tracking()

    def measure(self, arms: list[Arm], reps: int) -> None:
        alternate(arms, reps, self.say, warmup=self.plan.warmup)

    def wants_profile(self, figure: Figure) -> bool:
        return self.plan.profiles and (figure.met is False or self.plan.profile_all)

    def version(self) -> None:
        self.say("== git gpuspace --version vs python -c pass")
        ours = Arm("`git gpuspace --version`", lambda rep: self.gs("--version", cwd=self.base))
        anchor = Arm("`python -c pass`", lambda rep: self.runner.run([sys.executable, "-c", "pass"], cwd=self.base))
        floor = Arm(f"`python -c '{FLOOR_IMPORTS}'`", lambda rep: self.runner.run([sys.executable, "-c", FLOOR_IMPORTS], cwd=self.base))
        self.measure([ours, anchor, floor], max(self.plan.reps, 15) if self.plan.reps > 1 else 1)
        figure = pair("`--version`", ours, anchor, "absolute", 60, "<= 60 ms",
                      note=f"{(ours.median - anchor.median) * 1000:+.0f} ms over the bare interpreter, which "
                           f"itself takes {anchor.median * 1000:.0f} ms here")
        self.figures.append(figure)
        self.figures.append(
            pair("import floor of every engine command", floor, anchor, "added", None, "(reported)",
                 note="what any command that talks to the engine pays before its first request (the Docker SDK, "
                      "requests, urllib3, dulwich)")
        )
        if self.wants_profile(figure):
            self.profile_imports()

    def worktree_creation(self, repo: Path, label: str, reps: int, where: Path, target: float | None = None,
                          title_suffix: str = "", memory: bool = False, note: str = "") -> None:
        self.say(f"== worktree creation, {label}{title_suffix}")
        where.mkdir(exist_ok=True)
        add = ["add", "--no-start", "--gpus", "none", "--image", self.image]

        def ours(rep: int) -> Sample:
            path = where / f"ours-{rep}"
            sample = self.gs(*add, "-b", f"ours-{rep}", str(path), cwd=repo)
            self.retire(repo, path, f"ours-{rep}", bound=True)
            settle()
            return sample

        def anchor(rep: int) -> Sample:
            path = where / f"git-{rep}"
            sample = self.runner.run(["git", "worktree", "add", "-q", "-b", f"git-{rep}", str(path)], cwd=repo)
            self.retire(repo, path, f"git-{rep}", bound=False)
            settle()
            return sample

        arms = [Arm("`git gpuspace add --no-start --gpus none`", ours), Arm("`git worktree add`", anchor)]
        self.measure(arms, reps)
        figure = pair(f"worktree creation, {label}{title_suffix}", *arms, "ratio", target,
                      f"<= {target}x (stretch 1.0x)" if target else "(reported)", note=note)
        self.figures.append(figure)
        if memory:
            self.figures.append(
                Figure(f"peak memory, `add`, {label}", f"max RSS over {len(arms[0].samples)} runs", "", arms[0].peak_rss_mib,
                       None, "mib", 80, "<= 80 MiB", note="the largest process of the command (each checkout process "
                       "maps the same pages; they are not added up)")
            )
        if self.wants_profile(figure):
            path = where / "profiled"
            text = self.cprofile([str(gpuspace_script()), *add, "-b", "profiled", str(path)], repo)
            self.retire(repo, path, "profiled", bound=True)
            self.profiles.append((f"`git gpuspace add --no-start --gpus none`, {label}{title_suffix}", text))

    def checkout_before_after(self, repo: Path, label: str) -> None:
        """The materialization alone, in a fresh interpreter: dulwich's reset_index (what `add`
        used before), git_gpuspace/git/checkout.py (what it uses now), and git."""
        self.say(f"== materialization alone, {label}: dulwich reset_index vs checkout.py vs git")
        where = self.base / "wt-checkout"
        where.mkdir(exist_ok=True)
        helper = HERE / "checkout_only.py"

        def python_arm(mode: str) -> Callable[[int], Sample]:
            def measure(rep: int) -> Sample:
                path = where / f"{mode}-{rep}"
                sample = self.runner.run([sys.executable, str(helper), mode, str(repo), str(path)], cwd=repo)
                self.retire(repo, path, None, bound=False)
                settle()
                return sample
            return measure

        def git_arm(rep: int) -> Sample:
            path = where / f"git-{rep}"
            sample = self.runner.run(["git", "worktree", "add", "-q", "--detach", str(path)], cwd=repo)
            self.retire(repo, path, None, bound=False)
            settle()
            return sample

        arms = [Arm("before: dulwich setup + `reset_index`", python_arm("dulwich")),
                Arm("now: `checkout.py`", python_arm("checkout")),
                Arm("`git worktree add --detach`", git_arm)]
        self.measure(arms, max(2, self.plan.reps_slow - 2))
        for arm in arms[:2]:
            self.figures.append(
                pair(f"materialization alone, {label}", arm, arms[2], "ratio", None, "(profile)",
                     note="" if arm is arms[1] else "a fresh interpreter that only makes the worktree; before, dulwich's "
                     "linked-worktree setup checked out the main HEAD and then `reset_index` the commit: twice")
            )

    def creation(self) -> None:
        """Worktree creation alone (the --only section): the 20k-file tree on tmpfs (with its
        conversions, sparse and index v4 rows) and the fixed cost of `add --no-start`."""
        plan = self.plan
        large = self.repo(f"repo-{plan.large[0] * plan.large[1]}", plan.large)
        if plan.tmpfs and tmpfs_room():
            self.tmpfs_creation(large, f"{plan.large[0] * plan.large[1]} files", target=1.5, memory=True)
        else:
            self.worktree_creation(large, f"{plan.large[0] * plan.large[1]} files", plan.reps_slow, self.base / "wt",
                                   memory=True, target=1.5)
        self.fixed_cost()

    def adding(self, repo: Path, where: Path, add: list[str]) -> Callable[[int], Sample]:
        """An arm: `git gpuspace ADD -b ours-N where/ours-N`, its worktree retired after."""
        def ours(rep: int) -> Sample:
            path = where / f"ours-{rep}"
            sample = self.gs(*add, "-b", f"ours-{rep}", str(path), cwd=repo)
            self.retire(repo, path, f"ours-{rep}", bound=True)
            return sample

        return ours

    def fixed_cost(self) -> None:
        """`add --no-start` of a 2-file repository against what it stands for by hand:
        `git worktree add` and `docker create`."""
        self.say("== fixed cost: add --no-start, 2 files")
        repo = self.repo("repo-2", (1, 2))
        where = self.base / "wt-fixed"
        where.mkdir()
        add = ["add", "--no-start", "--gpus", "none", "--image", self.image]

        ours = self.adding(repo, where, add)

        def by_hand(rep: int) -> Sample:
            path = where / f"hand-{rep}"
            name = f"gpuspace-bench-{self.seed}-fixed-{rep}"
            first = self.runner.run(["git", "worktree", "add", "-q", "-b", f"hand-{rep}", str(path)], cwd=repo)
            second = self.runner.run(
                ["docker", "create", "--name", name, "--label", f"{LABEL_REPO}={self.base / 'by-hand'}",
                 "--mount", f"type=bind,source={path},target=/workspace", "-w", "/workspace", self.image,
                 "sleep", "infinity"], cwd=repo)
            self.runner.output(["docker", "rm", "-f", name], cwd=repo)
            self.retire(repo, path, f"hand-{rep}", bound=False)
            return Sample(first.seconds + second.seconds, max(first.rss_kib, second.rss_kib))

        arms = [Arm("`git gpuspace add --no-start --gpus none`", ours), Arm("`git worktree add` + `docker create`", by_hand)]
        self.measure(arms, self.plan.reps)
        figure = pair("`add --no-start`, 2 files (the fixed cost)", *arms, "ratio", 2.0, "<= 2x", note="the part of `add` that does not grow with the tree")
        self.figures.append(figure)
        if self.wants_profile(figure):
            path = where / "profiled"
            text = self.cprofile([str(gpuspace_script()), *add, "-b", "profiled", str(path)], repo)
            self.retire(repo, path, "profiled", bound=True)
            self.profiles.append(("`git gpuspace add --no-start --gpus none`, 2 files", text))

    def tmpfs_creation(self, disk_repo: Path, label: str, target: float | None, memory: bool = False) -> None:
        base = Path(tempfile.mkdtemp(prefix="gpuspace-bench-", dir=SHM)).resolve()
        self.roots.append(base)
        repo = base / "repo"
        self.git("clone", "-q", "--no-hardlinks", str(disk_repo), str(repo), cwd=self.base)
        self.worktree_creation(repo, label, self.plan.reps_slow, base / "wt", title_suffix=", on tmpfs", target=target,
                               memory=memory, note="repository and worktrees in memory (/dev/shm): what the CPU costs")
        self.git("config", "index.version", "4", cwd=repo)
        self.worktree_creation(repo, label, self.plan.reps_slow, base / "wt-v4", title_suffix=", on tmpfs, index v4",
                               target=target, note="index.version=4: paths prefix-compressed, as git writes them")
        self.git("config", "--unset", "index.version", cwd=repo)
        # the other ways through the checkout: every file through a conversion, and a sparse main worktree
        attributes = repo / ".git" / "info" / "attributes"
        attributes.parent.mkdir(exist_ok=True)
        attributes.write_text("*.py text eol=crlf\n")
        self.worktree_creation(repo, label, self.plan.reps_slow, base / "wt-eol", title_suffix=", on tmpfs, eol=crlf",
                               note="info/attributes converts every file (one process: the conversion is dulwich's)")
        attributes.unlink()
        kept = [f"pkg{d:03d}" for d in range(0, self.plan.large[0], 10)]
        self.git("sparse-checkout", "set", "--cone", *kept, cwd=repo)
        self.worktree_creation(repo, label, self.plan.reps_slow, base / "wt-sparse",
                               title_suffix=f", on tmpfs, sparse ({len(kept)} of {self.plan.large[0]} dirs)",
                               note="the main worktree is a cone-mode sparse checkout: the new one inherits it")
        self.git("sparse-checkout", "disable", cwd=repo)

    def hook(self) -> None:
        """A plain branch switch in a repo with our hooks and a few bindings, vs the same
        switch with hooks turned off (core.hooksPath at an empty directory)."""
        plan = self.plan
        self.say("== post-checkout hook overhead")
        repo = self.repo("repo-hook", plan.small)
        self.gs("init", "--image", self.image, "--gpus", "none", cwd=repo)
        hook = Path(self.git("rev-parse", "--git-path", "hooks/post-checkout", cwd=repo).strip())
        if "git-gpuspace-hook" not in (repo / hook).read_text():
            raise CommandFailed("git gpuspace init did not install the post-checkout hook")
        for k in range(plan.hook_bindings):
            self.gs("add", "-b", f"bound-{k}", str(self.base / "hook-wt" / f"bound-{k}"), "--no-start", "--gpus", "none",
                    "--image", self.image, cwd=repo)
        no_hooks = self.base / "no-hooks"
        no_hooks.mkdir()
        branch = {"now": "main"}

        def switch(prefix: list[str]) -> Sample:
            target = "other" if branch["now"] == "main" else "main"
            sample = self.runner.run(["git", *prefix, "checkout", "-q", target], cwd=repo)
            branch["now"] = target
            return sample

        arms = [Arm(f"`git checkout` (hooks, {plan.hook_bindings} bindings)", lambda rep: switch([])),
                Arm("same, hooks off", lambda rep: switch(["-c", f"core.hooksPath={no_hooks}"]))]
        self.measure(arms, max(plan.reps, 15) if plan.reps > 1 else 2)
        self.figures.append(pair("post-checkout hook", *arms, "added", 25, "<= 25 ms added",
                                 note=f"a switch between two branches that differ in 11 of {plan.small[0] * plan.small[1]} files"))

    def add_end_to_end(self) -> None:
        """`git gpuspace add` (GPU, started container) vs the same by hand."""
        plan = self.plan
        self.say("== add end to end vs git worktree add + docker run -d")
        repo = self.repo("repo-add", plan.small)
        common = (repo / ".git").resolve()
        where = self.base / "wt-add"
        where.mkdir()
        uuid = self.gpu_uuid(0)
        manual_repo_label = str(self.base / "by-hand")
        add = ["add", "--gpus", "1", "--image", self.image]
        files = plan.small[0] * plan.small[1]

        ours = self.adding(repo, where, add)

        def by_hand(rep: int) -> Sample:
            path = where / f"hand-{rep}"
            name = f"gpuspace-bench-{self.seed}-hand-{rep}"
            first = self.runner.run(["git", "worktree", "add", "-q", "-b", f"hand-{rep}", str(path)], cwd=repo)
            identity = ["-e", "HOME=/root"]
            if os.getuid() != 0:
                identity = ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/home/gpuspace",
                            "--tmpfs", f"/home/gpuspace:uid={os.getuid()},gid={os.getgid()},mode=0700,exec"]
            second = self.runner.run(
                ["docker", "run", "-d", "--name", name, "--init", "--restart", "unless-stopped",
                 "--label", f"{LABEL_REPO}={manual_repo_label}", "--label", f"gpuspace.worktree={path}",
                 "--label", f"gpuspace.branch=hand-{rep}", "--label", f"gpuspace.gpus={uuid}", "--label", "gpuspace.share=false",
                 "--mount", f"type=bind,source={path},target=/workspace", "--mount", f"type=bind,source={common},target={common}",
                 "-w", "/workspace", *identity, "--shm-size", "8g", "--gpus", f"device={uuid}", self.image, "sleep", "infinity"],
                cwd=repo,
            )
            self.runner.output(["docker", "rm", "-f", name], cwd=repo)
            self.retire(repo, path, f"hand-{rep}", bound=False)
            return Sample(first.seconds + second.seconds, max(first.rss_kib, second.rss_kib))

        arms = [Arm("`git gpuspace add --gpus 1` (started)", ours), Arm("`git worktree add` + `docker run -d`", by_hand)]
        self.measure(arms, plan.reps)
        figure = pair("`add` end to end", *arms, "ratio", 1.5, "<= 1.5x",
                      note=f"{files} files; the same labels, init, restart policy, shm size and GPU device request; by hand mounts the worktree and the git dir, ours also the protected git-dir layout, data dir and caches")
        self.figures.append(figure)
        self.figures.append(
            Figure(f"peak memory, `add`, {files} files", f"max RSS over {len(arms[0].samples)} runs", "", arms[0].peak_rss_mib,
                   None, "mib", 80, "<= 80 MiB")
        )
        if self.wants_profile(figure):
            path = where / "profiled"
            text = self.cprofile([str(gpuspace_script()), *add, "-b", "profiled", str(path)], repo)
            self.retire(repo, path, "profiled", bound=True)
            self.profiles.append((f"`git gpuspace add --gpus 1`, {files} files", text))

    def scale(self) -> None:
        """Grow one project's bindings (each holding a shared GPU, created not started) and
        measure status, gpus and add at each size: time, peak RSS, engine requests."""
        plan = self.plan
        repo = self.repo("repo-project", plan.project)
        common = (repo / ".git").resolve()
        where = self.base / "wt-project"
        where.mkdir()
        add = ["add", "--no-start", "--gpus", "1", "--share", "--image", self.image]
        bound = 0
        extra = {"n": 0}

        def add_one(rep: int) -> Sample:
            extra["n"] += 1
            path = where / f"extra-{extra['n']}"
            sample = self.gs(*add, "-b", f"extra-{extra['n']}", str(path), cwd=repo)
            self.retire(repo, path, f"extra-{extra['n']}", bound=True)
            return sample

        def anchor(rep: int) -> Sample:
            ps = self.runner.run(["docker", "ps", "-a", "--filter", f"label={LABEL_REPO}={common}"], cwd=repo)
            listing = self.runner.run(["git", "worktree", "list"], cwd=repo)
            return Sample(ps.seconds + listing.seconds, max(ps.rss_kib, listing.rss_kib))

        for count in plan.scale:
            self.say(f"== {count} bindings")
            while bound < count:
                self.gs(*add, "-b", f"exp-{bound}", str(where / f"exp-{bound}"), cwd=repo)
                bound += 1
            arms = [
                Arm("status", lambda rep: self.gs("status", cwd=repo)),
                Arm("gpus", lambda rep: self.gs("gpus", cwd=repo)),
                Arm("add", add_one),
            ]
            if count == plan.status_at:
                arms.append(Arm("`docker ps -a` + `git worktree list`", anchor))
            self.measure(arms, plan.reps)
            calls = {
                "status": self.counted([*self.git_gpuspace, "status"], repo),
                "gpus": self.counted([*self.git_gpuspace, "gpus"], repo),
            }
            extra["n"] += 1
            path = where / f"extra-{extra['n']}"
            calls["add"] = self.counted([*self.git_gpuspace, *add, "-b", f"extra-{extra['n']}", str(path)], repo)
            self.retire(repo, path, f"extra-{extra['n']}", bound=True)
            for name, counter in calls.items():
                self.requests[f"{name} at {count} bindings"] = counter
            self.scaling_raw[count] = {
                arm.label: (arm.median, arm.peak_rss_mib, sum(calls[arm.label].values())) for arm in arms[:3]
            }
            self.scaling.append(
                [str(count)]
                + [f"{arm.median * 1000:.0f} ms, {sum(calls[arm.label].values())} calls, {arm.peak_rss_mib:.1f} MiB" for arm in arms[:3]]
            )
            if count == plan.status_at:
                figure = pair(f"`status`, {count} bindings", arms[0], arms[3], "ratio", 8.0, "<= 8x their sum",
                              ours_text="`git gpuspace status`",
                              note=f"a {plan.project[0] * plan.project[1]}-file project: {count + 1} worktrees, each "
                                   "checked for changes")
                self.figures.append(figure)
                self.figures.append(
                    Figure(f"peak memory, `status` ({count} bindings)", f"max RSS over {len(arms[0].samples)} runs", "",
                           arms[0].peak_rss_mib, None, "mib", 80, "<= 80 MiB")
                )
                if self.wants_profile(figure):
                    self.profiles.append((f"`git gpuspace status`, {count} bindings",
                                          self.cprofile([str(gpuspace_script()), "status"], repo)))
        first, last = plan.scale[0], plan.scale[-1]
        for name in ("status", "gpus", "add"):
            low, high = self.scaling_raw[first][name], self.scaling_raw[last][name]
            self.figures.append(
                Figure(f"`{name}` engine calls, {first} -> {last} bindings", f"{low[2]} -> {high[2]}", "", float(high[2] - low[2]),
                       None, "calls", 0, "constant")
            )
        for name in ("status", "add"):
            low, high = self.scaling_raw[first][name], self.scaling_raw[last][name]
            tolerance = max(2.0, 0.1 * low[1])
            self.figures.append(
                Figure(f"peak memory growth, `{name}`, {first} -> {last} bindings", f"{low[1]:.1f} -> {high[1]:.1f} MiB", "",
                       high[1] - low[1], None, "growth", tolerance, f"flat (<= +{tolerance:.1f} MiB)")
            )

    # profiles
    def queue(self) -> None:
        """The run queue. Each run prints the machine's uptime (one clock for the host and every
        container) when its command starts and ends, so the figures are the commands' own times."""
        runs_n, gpus_n, sleep_s = self.plan.queue
        repo = self.repo("repo-queue", self.plan.project)
        # GPUs of their own: the scaling figures' bindings still hold some of the others
        self.queue_seed = secrets.token_hex(4)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": self.queue_seed}
        ideal = runs_n / gpus_n * sleep_s
        self.say(f"== queue: {runs_n} runs of sleep {sleep_s} on {gpus_n} GPUs")
        command = ["sh", "-c", f"echo start $({UPTIME}); sleep {sleep_s}; echo end $({UPTIME}); : {{n}}"]
        wall = self.runner.run([*self.git_gpuspace, "sweep", "queue", "-p", "n=" + ",".join(map(str, range(runs_n))),
                                "--gpus", "1", "--", *command], cwd=repo, env=env)
        stamps = self.run_stamps(repo, "queue")
        makespan = max(end for _, end, _ in stamps) - min(start for start, _, _ in stamps)
        by_hand = self.sweep_by_hand(repo, runs_n, gpus_n, sleep_s)
        title = f"sweep makespan, {runs_n} runs of `sleep {sleep_s}` on {gpus_n} GPUs"
        note = (f"the whole `sweep` command, its worktrees made and every run ended; from the first command's start "
                f"to the last one's end: {makespan:.1f} s")
        self.figures.append(Figure(title, "`git gpuspace sweep`", f"by hand: worktree add + `docker run --rm`, "
                                   f"`xargs -P{gpus_n}`", wall.seconds, by_hand, "ratio", 0.85, "<= 0.85x", note=note))
        self.figures.append(Figure(f"{title}: efficiency", "`git gpuspace sweep`", "ideal", wall.seconds, ideal,
                                   "ratio", 1 / 0.85, "efficiency >= 0.85 (<= 1.18x ideal)",
                                   note=f"ideal: {runs_n} x {sleep_s} s / {gpus_n} GPUs"))
        self.anchor_scheduler(runs_n, gpus_n, sleep_s, ideal)
        gaps = []
        for uuid in {gpu for _, _, gpu in stamps}:
            on_gpu = sorted((start, end) for start, end, gpu in stamps if gpu == uuid)
            gaps += [later[0] - earlier[1] for earlier, later in zip(on_gpu, on_gpu[1:])]
        if gaps:
            gaps.sort()
            p95 = gaps[min(len(gaps) - 1, int(round(0.95 * (len(gaps) - 1))))]
            self.figures.append(Figure("dispatch gap, p95", f"p95 (median {statistics.median(gaps) * 1000:.0f} ms)",
                                       "", p95, None, "absolute", 1000, "p95 <= 1 s",
                                       note=f"{len(gaps)} gaps: a run's command ends -> the next command starts on that GPU"))
        self.run_to_start(repo, env)
        self.big_sweeps(repo, env)

    def kills(self) -> None:
        """kill -9 of the dispatcher at random moments (benchmarks/kills.py): starts counted from the
        runs' own files, the engine's device requests sampled meanwhile."""
        from kills import campaign

        count, runs_n, gpus_n, sleep_s = self.plan.kills
        repo = self.repo("repo-kills", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": secrets.token_hex(4)}
        self.say(f"== kills: {count} x kill -9 of the dispatcher, {runs_n} runs of sleep {sleep_s:g} on {gpus_n} GPUs")
        result = campaign(repo, count, runs_n, sleep_s, env, say=self.say)
        self.say(result.summary())
        title = f"kill -9 of the dispatcher, {count} random moments ({runs_n} runs of `sleep {sleep_s:g}` on {gpus_n} GPUs)"
        self.figures.append(Figure(f"{title}: extra starts", f"{result.extra_starts} extra, {result.never_started} never "
                                   f"started, {len(result.not_succeeded)} not succeeded", "", result.extra_starts
                                   + result.never_started + len(result.not_succeeded), None, "count", 0, "0",
                                   note=f"starts counted from each run's own /data/starts; {result.seconds:.0f} s"
                                   + (", the first kill during the submission" if result.killed_while_submitting else "")))
        self.figures.append(Figure(f"{title}: GPUs with two holders", f"{result.double_samples} of {result.samples} "
                                   f"engine samples, {result.overlaps} overlapping commands", "",
                                   result.double_samples + result.overlaps, None, "count", 0, "0",
                                   note="the device requests of the repo's running containers, sampled every 20 ms; "
                                        "and the commands' own start and end times on each GPU"))

    def store(self) -> None:
        """The run store against the history it holds: `runs` (the table) and `run -- true` with
        many finished runs against a few, measured alternately, and `runs clean` of a batch of
        finished runs whose worktrees and refs are as runs leave them, against git removing the
        same worktrees and refs by itself. The history is written through the store's own Python
        API (benchmarks/store_history.py), so it is the same whatever the store keeps it in."""
        history_n, few_n, clean_n, clean_reps = self.plan.store
        env = {**self.env, "FAKE_GPU_SEED": secrets.token_hex(4)}  # GPUs of its own
        code = self.measured_code(env)
        self.say(f"== run store: {history_n} vs {few_n} finished runs, `runs clean` of {clean_n}; measuring {code}")
        repos = {}
        for count in (history_n, few_n):
            where = self.base / f"store-{count}"  # a parent of its own: run worktrees go to <parent>/worktrees/runs/<repo>/<id>
            where.mkdir()
            repos[count] = self.repo("repo", self.plan.project, where=where)
            start = time.perf_counter()
            module = self.history(repos[count], count, env)
            self.say(f"  {count} finished runs written through {module} in {time.perf_counter() - start:.1f} s")
        self.inputs.append(
            f"The run store figures measured the git_gpuspace of {code}. Their history: finished runs written through "
            f"the store's API by benchmarks/store_history.py into a {self.plan.project[0] * self.plan.project[1]}-file "
            "project, each with a command, the repo's HEAD, its worktree path, succeeded or (1 in 7) failed, "
            "submitted/started/finished times, an exit code, a GPU, a container name and a data dir with "
            "`logs/run.log` (loss=, acc=, lr= lines); 6 in 10 in sweeps of 24 (lr x seed). For `runs` and `run` the "
            "history's worktrees are not made (what is measured is the store); for `runs clean` every run has its "
            "worktree (`git worktree add --detach`) and `refs/gpuspace/runs/<id>`."
        )

        def listing(count: int) -> Callable[[int], Sample]:
            return lambda rep: self.runner.run([*self.git_gpuspace, "runs"], cwd=repos[count], env=env)

        arms = [Arm(f"`runs`, {history_n} runs", listing(history_n)), Arm(f"`runs`, {few_n} runs", listing(few_n))]
        self.measure(arms, self.plan.reps)
        listed = pair(f"`runs` (the table), {history_n} finished runs", *arms, "absolute", 300, "<= 300 ms",
                      note=f"the anchor: the same table with {few_n} finished runs")
        self.figures.append(listed)
        self.figures.append(Figure(f"peak memory, `runs`, {history_n} finished runs", f"max RSS over "
                                   f"{len(arms[0].samples)} runs", "", arms[0].peak_rss_mib, None, "mib", None,
                                   "(reported)", note=f"{arms[1].peak_rss_mib:.1f} MiB with {few_n} runs"))

        def submit(count: int) -> Callable[[int], Sample]:
            def measure(rep: int) -> Sample:
                start = time.perf_counter()
                done = subprocess.run([*self.git_gpuspace, "run", "--", "true"], cwd=repos[count], env=env,
                                      stdin=subprocess.DEVNULL, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    raise CommandFailed(f"`git gpuspace run -- true` with {count} runs exited {done.returncode}:\n"
                                        f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
                queued = re.search(r"Queued 1 run\b.*: ([a-z0-9][a-z0-9._-]*)\s*$", done.stderr, re.MULTILINE)
                if queued:  # the store stays at `count` finished runs (not timed)
                    self.runner.output([*self.git_gpuspace, "runs", "forget", queued.group(1)], cwd=repos[count], env=env)
                else:
                    self.say("  (no run id in the output of `run`: its run stays, the store grows by one)")
                return Sample(seconds, 0)
            return measure

        arms = [Arm(f"`run -- true`, {history_n} runs", submit(history_n)), Arm(f"`run -- true`, {few_n} runs", submit(few_n))]
        self.measure(arms, self.plan.reps)
        submitted = pair(f"`run -- true` (foreground), {history_n} finished runs", *arms, "ratio", 1.1,
                         "<= 1.1x (at most 10% slower)",
                         note=f"the test image, a stand-in GPU; against {few_n} finished runs; each repetition's run "
                              "is dropped again by `runs forget ID` (not timed)")
        self.figures.append(submitted)
        if self.wants_profile(listed):
            self.profiles.append((f"`git gpuspace runs`, {history_n} finished runs",
                                  self.cprofile([str(gpuspace_script()), "runs"], repos[history_n])))
        if self.wants_profile(submitted):  # its run is left in the store: the repo is not measured again
            self.profiles.append((f"`git gpuspace run -- true`, {history_n} finished runs",
                                  self.cprofile([str(gpuspace_script()), "run", "--", "true"], repos[history_n])))

        # judged on tmpfs when there is room: deleting the worktrees' files is the same for ours and the anchor,
        # and on a shared disk without a journal it alone swings tenfold (see the README)
        on_tmpfs = tmpfs_room()
        if on_tmpfs:
            self.roots.append(Path(tempfile.mkdtemp(prefix="gpuspace-bench-", dir=SHM)).resolve())
        where = (self.roots[-1] if on_tmpfs else self.base) / "store-clean"
        where.mkdir()
        repo = self.repo("repo", self.plan.project, where=where)
        runs_dir = where / "worktrees" / "runs" / repo.name

        def deleting() -> list[Path]:
            """What `runs clean` moved aside for its background deletion, not deleted yet."""
            return [p for folder in (runs_dir, repo / ".git") if folder.is_dir()
                    for p in folder.iterdir() if p.name.startswith(".gpuspace-deleting-")]

        def left() -> str:
            refs = self.git("for-each-ref", "refs/gpuspace/runs", cwd=repo)
            worktrees = [p.name for p in runs_dir.iterdir() if p not in deleting()] if runs_dir.is_dir() else []
            return f"{len(refs.splitlines())} refs and {len(worktrees)} worktrees left" if refs or worktrees else ""

        background: list[float] = []  # how long the files took to go after `runs clean` returned

        def clean(rep: int) -> Sample:
            self.history(repo, clean_n, env, "--worktrees")
            settle()
            sample = self.runner.run([*self.git_gpuspace, "runs", "clean"], cwd=repo, env=env)
            if left():
                raise CommandFailed(f"`git gpuspace runs clean` of {clean_n} runs: {left()}")
            started = time.monotonic()
            while deleting() and time.monotonic() - started < 600:  # not timed: the next repetition starts clean
                time.sleep(0.05)
            background.append(time.monotonic() - started)
            return sample

        by_git_script = (f"rm -rf {shlex.quote(str(runs_dir))} && git worktree prune && "
                         "git for-each-ref --format='delete %(refname)' refs/gpuspace/runs | git update-ref --stdin")

        def by_git(rep: int) -> Sample:
            self.history(repo, clean_n, env, "--no-store")
            settle()
            sample = self.runner.run(["sh", "-c", by_git_script], cwd=repo, env=env)
            if left():
                raise CommandFailed(f"the git anchor of `runs clean`: {left()}")
            return sample

        self.say(f"== `runs clean` of {clean_n} finished runs{' on tmpfs' if on_tmpfs else ''} (each repetition "
                 "restores them first, not timed)")
        arms = [Arm(f"`runs clean`, {clean_n} runs", clean),
                Arm("`rm -rf` + `git worktree prune` + `git update-ref --stdin`", by_git)]
        alternate(arms, clean_reps, self.say)
        cleaned = pair(f"`runs clean`, {clean_n} finished runs" + (", on tmpfs" if on_tmpfs else ""), *arms,
                       "absolute", 3000, "<= 3 s",
                       note=f"median of {clean_reps}; each run with its worktree (`git worktree add --detach`) and "
                            "ref, made again before every repetition (not timed); the anchor is git removing the same "
                            "worktrees and refs by itself, with no store; `runs clean` returns once git has forgotten "
                            "the worktrees and their files are moved aside, which a process of its own then deletes "
                            f"(within {statistics.median(background) if background else 0:.1f} s, median, waited for "
                            "before the next repetition, not timed)"
                            + ("; repository and worktrees in memory (/dev/shm), the store's history and data dirs "
                               "on disk" if on_tmpfs else ""))
        self.figures.append(cleaned)
        self.figures.append(pair(f"`runs clean`, {clean_n} finished runs, over git's own removal", *arms, "added", None,
                                 "(reported)", note="deleting the worktrees' files is the same work for both; on a "
                                 "slow disk it alone can take more than the target"))
        if self.wants_profile(cleaned):
            self.history(repo, clean_n, env, "--worktrees")
            settle()
            self.profiles.append((f"`git gpuspace runs clean`, {clean_n} finished runs",
                                  self.cprofile([str(gpuspace_script()), "runs", "clean"], repo)))

    # the scheduler
    def scheduler(self) -> None:
        """The host's scheduler (git_gpuspace/runs/schedule.py) as people meet it: two repos' sweeps
        sharing the GPUs, an `add --wait` for 2 GPUs behind them, and time slices letting short
        runs through long ones. Every figure comes from the runs' own `runs --json` records."""
        runs_n, sleep_s, gpus_n = self.plan.sched
        first = self.repo("repo-sched-a", self.plan.project)
        second = self.repo("repo-sched-b", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": secrets.token_hex(4)}  # GPUs of its own
        # requests for GPUs posted on the engine by anything else (another checkout's tests): a post counts
        # only for GPUs its poster shares, so stand-ins of other seeds hold ours back in nothing; still
        # sampled all along, and each figure says when there were some
        self.others = OtherWants(self.base)
        with self.others:
            self.sched_fairness(first, second, env)
            self.sched_starvation(first, second, env)
            self.sched_slices()
        self.inputs.append(
            f"The scheduler figures: two repositories of one user, sweeps of {runs_n} runs of `sleep {sleep_s:g}` "
            f"submitted with `--detach` on {gpus_n} stand-in GPUs of their own; the time slices: "
            f"{self.plan.sched_slice[0]} runs on {self.plan.sched_slice[3]} GPUs. Requests for GPUs posted on the "
            f"engine by anything else while they ran (sampled every second): {self.others.summary(0, float('inf'))}."
        )

    # a known function of the parameters, lowest (0.1) at lr=1e-2, d=0.3; each epoch prints the loss so far,
    # falling to it as 1/epoch (a poor trial is poor from its first epochs: what a pruner can see); products,
    # not ^ or log: the test image's awk is busybox's, without its maths
    SEARCH_OBJECTIVE = ('i=1; while [ $i -le {epochs} ]; do awk "BEGIN {{ a = ({{lr}} - 0.01) * 10; b = {{d}} - 0.3; '
                        'printf \\"epoch=$i loss=%.6f\\n\\", (a * a + b * b + 0.1) * (1 + 2 / $i) }}"; '
                        'sleep {sleep}; i=$((i+1)); done')

    def search(self) -> None:
        """`sweep --search` (Optuna) against itself: the best value TPE finds against random
        search at the same number of trials (median over seeds), and the GPU-seconds the median
        pruner saves at the same trials (the random sampler with one seed draws the same trials
        with and without it). Figures from the runs' `runs --json` records."""
        import json
        import statistics

        trials, seeds, gpus_n, epochs, sleep_s = self.plan.search
        repo = self.repo("repo-search", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": secrets.token_hex(4)}
        quick = ["sh", "-c", self.SEARCH_OBJECTIVE.format(epochs=epochs, sleep="0")]  # what is found, not how long
        timed = ["sh", "-c", self.SEARCH_OBJECTIVE.format(epochs=epochs, sleep=f"{sleep_s:g}")]

        def sweep(name: str, sampler: str, seed: int, prune: str, command: list[str] = quick) -> list[dict]:
            self.runner.run([*self.git_gpuspace, "sweep", name, "--search", sampler, "--trials", str(trials), "--seed",
                             str(seed), "--max-parallel", str(gpus_n), "--metric", "loss", "--minimize", "--prune", prune,
                             "-p", "lr=loguniform(1e-4,1)", "-p", "d=uniform(0,1)", "--gpus", "1", "--", *command],
                            cwd=repo, env=env)
            return json.loads(self.runner.output([*self.git_gpuspace, "runs", "--json", "--sweep", name], cwd=repo, env=env))

        def best(records: list[dict]) -> float:
            return min(r["value"] for r in records if r["value"] is not None)

        def gpu_seconds(records: list[dict]) -> float:
            return sum((r["duration_s"] or 0) * max(1, len(r["gpus"])) for r in records)

        self.say(f"== search: {trials} trials of tpe and of random, {seeds} seeds, {gpus_n} GPUs, {epochs} epochs")
        found: dict[str, list[float]] = {"tpe": [], "random": []}
        for seed in range(seeds):
            for sampler in found:
                found[sampler].append(best(sweep(f"{sampler}-{seed}", sampler, seed, "none")))
        tpe, rand = statistics.median(found["tpe"]), statistics.median(found["random"])
        self.say(f"  best loss, tpe: {found['tpe']}; random: {found['random']}")
        self.figures.append(Figure(
            f"search, best loss of {trials} trials (median of {seeds} seeds; optimum 0.1 x (1 + 2/{epochs}))",
            "--search tpe", "--search random", tpe, rand, "ratio", 1.0, "<= 1 (TPE no worse)", unit="",
            note=f"tpe {', '.join(f'{v:.4f}' for v in found['tpe'])}; random {', '.join(f'{v:.4f}' for v in found['random'])}; "
                 f"at most {gpus_n} trials at once"))
        self.say(f"== search: --prune median against none, {trials} random trials (seed 0), epochs of {sleep_s:g} s")
        whole = sweep("prune-none", "random", 0, "none", timed)
        pruned = sweep("prune-median", "random", 0, "median", timed)
        cut = sum(1 for r in pruned if r["pruned"])
        used, used_whole = gpu_seconds(pruned), gpu_seconds(whole)
        self.figures.append(Figure(
            f"search, GPU-seconds of {trials} trials with --prune median", "pruned", "not pruned", used, used_whole,
            "ratio", 0.7, "<= 0.70 (>= 30% saved)", unit="GPU-s",
            note=f"{cut} of {trials} trials pruned; {used:.1f} against {used_whole:.1f} GPU-seconds, from the runs' "
                 f"durations and GPUs"))
        self.figures.append(Figure(
            "search, best loss with --prune median against without", "pruned", "not pruned", best(pruned),
            best(whole), "ratio", 1.1, "<= 1.10 (no more than 10% worse)", unit=""))
        self.inputs.append(
            f"The search figures: `sweep --search` of {trials} trials over lr=loguniform(1e-4,1), d=uniform(0,1), each "
            f"run printing `epoch=i loss=...` for {epochs} epochs (with `sleep {sleep_s:g}` each for the pruning "
            f"figures), at most {gpus_n} at once on {gpus_n} stand-in GPUs.")

    def tracking(self) -> None:
        """MLflow tracking's cost: a metric line's way to MLflow (the repo's own store, the tracker
        the dispatcher starts), and `run` with tracking against `run` with it off."""
        import json

        from git_gpuspace.runs import tracking

        if not tracking.installed():
            raise CommandFailed("tracking: mlflow is not installed (pip install -e '.[mlflow]')")
        repo = self.repo("repo-tracking", self.plan.project)
        on = {**self.env, tracking.URI_ENV: ""}
        lines_n = 5 if self.plan.reps == 1 else 30
        self.say(f"== tracking: {lines_n} `at=<time>` lines, 0.5 s apart, to MLflow")
        self.runner.run([*self.git_gpuspace, "run", "--gpus", "none", "--quiet", "--", "sh", "-c",
                         f"i=0; while [ $i -lt {lines_n} ]; do echo at=$EPOCHREALTIME; sleep 0.5; i=$((i+1)); done"],
                        cwd=repo, env=on)
        common = Path(self.runner.output(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=repo,
                                         env=on).strip())
        deadline = time.monotonic() + 180
        while tracking.tracker_alive(common) and time.monotonic() < deadline:
            time.sleep(0.5)  # it logs the end, then goes
        # read in the benchmark's own environment (its HOME holds the lock under which a store is made,
        # which a tracker starting just then takes too)
        read = ("import json, sys\nfrom git_gpuspace.runs import tracking\n"
                "client = tracking.open_client(sys.argv[1])\n"
                "found = client.get_experiment_by_name(sys.argv[2])\n"
                "runs = client.search_runs([found.experiment_id]) if found else []\n"
                "print(json.dumps([(m.timestamp, m.value) for m in client.get_metric_history(runs[0].info.run_id, 'at')]"
                " if runs else []))\n")
        points = json.loads(self.runner.output([sys.executable, "-c", read, f"sqlite:///{common / tracking.DB_NAME}",
                                                repo.name], cwd=repo, env=on))
        if len(points) != lines_n:
            raise CommandFailed(f"tracking: {len(points)} of {lines_n} lines in MLflow")
        first = min(stamp for stamp, _ in points) / 1000
        startup = first - min(value for _, value in points)
        delays = sorted(stamp / 1000 - value for stamp, value in points if value > first)
        self.figures.append(Figure(
            "tracking, a metric line to MLflow (median, the tracker running)", "printed -> logged", "",
            statistics.median(delays) if delays else None, None, "absolute", 2000, "<= 2 s",
            note=f"{len(delays)} lines printed once the tracker was logging (max {max(delays, default=0):.2f} s); the "
                 f"first line waited {startup:.1f} s: the tracker starts with the run, and importing MLflow takes that"))
        arms = [Arm("tracking on", lambda rep: self.runner.run(
                    [*self.git_gpuspace, "run", "--gpus", "none", "--quiet", "--", "true"], cwd=repo, env=on)),
                Arm("tracking off", lambda rep: self.runner.run(
                    [*self.git_gpuspace, "run", "--gpus", "none", "--quiet", "--", "true"], cwd=repo,
                    env={**self.env, tracking.URI_ENV: "none"}))]
        alternate(arms, 3 if self.plan.reps == 1 else 15, self.say)
        self.figures.append(pair("tracking, `run --gpus none -- true` with MLflow tracking on", *arms, "ratio", 1.1,
                                 "<= 1.10x (not slower by more than 10%)"))
        deadline = time.monotonic() + 120
        while _working_in(repo) and time.monotonic() < deadline:
            time.sleep(0.5)  # the last runs' trackers log their ends, then go: nothing writes there after us

    def sched_records(self, repo: Path, env: dict[str, str], sweep: str) -> list[dict]:
        import json

        return json.loads(self.runner.output([*self.git_gpuspace, "runs", "--json", "--sweep", sweep], cwd=repo, env=env))

    def sched_submit(self, repo: Path, env: dict[str, str], sweep: str, size: int, command: list[str],
                     *options: str) -> float:
        """Submit a sweep with --detach (its runs queued, its dispatcher in the background); the
        epoch time it returned."""
        self.runner.run([*self.git_gpuspace, "sweep", sweep, "-p", "n=" + ",".join(map(str, range(size))),
                         "--gpus", "1", *options, "--detach", "--", *command], cwd=repo, env=env)
        return time.time()

    def sched_stop(self, started: list[tuple[Path, str]], env: dict[str, str]) -> None:
        """Stop what is left of these sweeps (their dispatchers then end): after a failure too."""
        for repo, sweep in started:
            try:
                subprocess.run([*self.git_gpuspace, "runs", "stop", "--sweep", sweep, "--all"], cwd=repo, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                self.say(f"  (`runs stop --sweep {sweep}` did not end in 120 s: its containers go at the end)")

    def sched_wait(self, sweeps: list[tuple[Path, str]], env: dict[str, str], after: float, limit: float) -> dict:
        """Wait (first `after` seconds, then looking every 2 s: `runs --json` costs CPU that the
        runs' dispatchers share) until these sweeps have nothing queued or running; their records.
        Meanwhile, the requests others posted on the engine are counted."""
        time.sleep(after)
        deadline = time.monotonic() + limit
        while True:
            records = {(repo, sweep): self.sched_records(repo, env, sweep) for repo, sweep in sweeps}
            active = [r["id"] for found in records.values() for r in found if r["state"] in ("queued", "running", "preempted")]
            if not active:
                failed = [f"{r['id']} {r['state']}" for found in records.values() for r in found if r["state"] != "succeeded"]
                if failed:
                    raise CommandFailed(f"scheduler: runs that did not succeed: {', '.join(failed)}")
                return records
            if time.monotonic() > deadline:
                raise CommandFailed(f"scheduler: still active after {after + limit:.0f} s: {', '.join(active)}")
            time.sleep(2)

    def sched_fairness(self, first: Path, second: Path, env: dict[str, str]) -> None:
        """Repo A's sweep at t=0, repo B's at t=0.5: the GPUs each held on average while both had
        work, and the runs each started in the first 6 s of it."""
        runs_n, sleep_s, gpus_n = self.plan.sched
        self.say(f"== scheduler, fair share: two repos' sweeps of {runs_n} runs of sleep {sleep_s:g} on {gpus_n} GPUs")
        command = ["sleep", f"{sleep_s:g}"]
        started: list[tuple[Path, str]] = []
        try:
            started.append((first, "fair-a"))
            a_queued = self.sched_submit(first, env, "fair-a", runs_n, command)
            time.sleep(0.5)
            started.append((second, "fair-b"))
            b_asked = time.time()
            b_queued = self.sched_submit(second, env, "fair-b", runs_n, command)
            records = self.sched_wait(started, env, 2 * runs_n * sleep_s / gpus_n, 300)
        finally:
            self.sched_stop(started, env)
        a, b = records[(first, "fair-a")], records[(second, "fair-b")]
        end = min(max(_moment(r["finished"]) for r in a), max(_moment(r["finished"]) for r in b))
        window = 6.0
        starts = [sum(1 for r in found if b_queued <= _moment(r["started"]) < b_queued + window) for found in (a, b)]
        self.say(f"  B's runs queued {b_queued - a_queued:.1f} s after A's (its `sweep` took {b_queued - b_asked:.1f} s); "
                 f"both had work for {end - b_queued:.1f} s; starts in the first {window:g} s: A {starts[0]}, B {starts[1]}")
        if end <= b_queued:
            raise CommandFailed("scheduler: repo A's sweep ended before repo B's runs were queued: no overlap to measure")
        title = f"fair share, two repos' sweeps of {runs_n} x `sleep {sleep_s:g}` on {gpus_n} GPUs"
        both = _held_average(a + b, b_queued, end)
        for name, found in (("A", a), ("B", b)):
            share = _held_average(found, b_queued, end)
            self.figures.append(Figure(
                f"{title}: repo {name}'s GPUs", f"{share:.2f} GPUs held on average", "", share, None, "gpus",
                gpus_n / 2 + 1, f"{gpus_n / 2:g} ± 1 GPUs", low=gpus_n / 2 - 1,
                note=f"while both had work: from B's runs queued ({b_queued - a_queued:.1f} s after A's; A's sweep at "
                     f"t=0, B's at t=0.5) to the end of the first sweep to finish ({end - b_queued:.1f} s later), from "
                     f"the runs' own started/finished/gpus; together {both:.2f} of {gpus_n}; other requests on the "
                     f"engine: {self.others.summary(a_queued, end)}; before the scheduler (first come, first served) "
                     "A kept 3 of the 4 GPUs" if name == "A" else ""))
        self.figures.append(Figure(
            f"{title}: runs started in the first {window:g} s, repo B's", f"A {starts[0]}, B {starts[1]}", "",
            float(starts[1]), None, "count", None, "(reported)",
            note="from B's runs queued; before the scheduler A had 12 starts in 14 s against B's 4"))

    def sched_starvation(self, first: Path, second: Path, env: dict[str, str]) -> None:
        """The same two sweeps, then `add --wait --gpus 2` in repo A: how long it waited, against
        the same `add` on the idle machine."""
        runs_n, sleep_s, gpus_n = self.plan.sched
        self.say(f"== scheduler, no starvation: add --wait --gpus 2 behind two sweeps of {runs_n} 1-GPU runs")
        command = ["sleep", f"{sleep_s:g}"]
        started: list[tuple[Path, str]] = []
        big = self.base / "sched-big"
        add = [*self.git_gpuspace, "add", "--no-start", "--gpus", "2", "--image", self.image]
        try:
            started.append((first, "starve-a"))
            self.sched_submit(first, env, "starve-a", runs_n, command)
            time.sleep(0.5)
            started.append((second, "starve-b"))
            self.sched_submit(second, env, "starve-b", runs_n, command)
            time.sleep(3)
            running = sum(1 for repo, sweep in started for r in self.sched_records(repo, env, sweep) if r["state"] == "running")
            clock, asked = time.perf_counter(), time.time()
            done = subprocess.run([*add, "--wait", "-b", "sched-big", str(big)], cwd=first, env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
            waited = time.perf_counter() - clock
            if done.returncode != 0:
                raise CommandFailed(f"`add --wait --gpus 2` exited {done.returncode}:\n{done.stderr[-2000:]}")
            self.runner.run([*self.git_gpuspace, "remove", "--force", str(big)], cwd=first, env=env)
            self.sched_wait(started, env, 0, 300)
        finally:
            if big.exists():
                subprocess.run([*self.git_gpuspace, "remove", "--force", str(big)], cwd=first, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            self.sched_stop(started, env)
        why = next((line.split("waiting for GPUs", 1)[1].strip() for line in done.stderr.splitlines()
                    if "waiting for GPUs" in line), "")
        idle_path = self.base / "sched-idle"
        idle = self.runner.run([*add, "--wait", "-b", "sched-idle", str(idle_path)], cwd=first, env=env)
        self.runner.run([*self.git_gpuspace, "remove", "--force", str(idle_path)], cwd=first, env=env)
        self.say(f"  add --wait took {waited:.1f} s ({running} runs running when asked), {idle.seconds:.1f} s on the idle machine; {why}")
        self.figures.append(Figure(
            f"`add --wait --gpus 2` behind two repos' sweeps of {runs_n} x `sleep {sleep_s:g}` on {gpus_n} GPUs",
            "`add --wait` on the busy machine", "the same `add` on the idle one", waited, idle.seconds, "added",
            sleep_s * 1000 + 1000, f"<= {sleep_s + 1:g} s added (one run's length + the 1 s dispatch gap)",
            note="the target: the second GPU it needs frees when a run that started just before it asked ends and "
                 "its container is gone (the queue's dispatch gap, p95 <= 1 s), then `add` looks again (every 0.5 s); "
                 f"asked 3 s after B's sweep was queued (A's at t=0, B's at t=0.5), {running} runs running; "
                 + (f"it said `waiting for GPUs {why}`" if why else "it did not wait")
                 + f"; other requests on the engine: {self.others.summary(asked, asked + waited)}; before the "
                 "scheduler it waited 20.6 s"))

    def sched_slices(self) -> None:
        """A sweep of short and long runs on few GPUs, with and without `--time-slice`: when the
        short runs' results come, and when the last run ends. The runs work in one-second units
        and checkpoint the count to /data, so a sliced run resumes where it was."""
        runs_n, long_u, short_u, gpus_n, slice_s = self.plan.sched_slice
        repo = self.repo("repo-sched-slice", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": secrets.token_hex(4)}
        self.say(f"== scheduler, time slices: {runs_n} runs (every third {long_u} s, the others {short_u} s) on "
                 f"{gpus_n} GPUs, without and with --time-slice {slice_s:g}s")
        script = (f"u={short_u}; [ $(({{n}} % 3)) -eq 0 ] && u={long_u}; n=0; "
                  '[ -n "$GPUSPACE_RESUME" ] && [ -f /data/ckpt ] && n=$(cat /data/ckpt); '
                  "trap 'exit 143' TERM; "
                  'while [ "$n" -lt "$u" ]; do sleep 1; n=$((n+1)); echo "unit $n"; echo "$n" > /data/ckpt; done')
        measured, spans = {}, {}
        work = (runs_n // 3 + (runs_n % 3 > 0)) * long_u + (runs_n - runs_n // 3 - (runs_n % 3 > 0)) * short_u
        for sweep, options in (("whole", ()), ("sliced", ("--time-slice", f"{slice_s:g}s"))):
            started = [(repo, sweep)]
            try:
                submitted = time.time()
                self.sched_submit(repo, env, sweep, runs_n, ["sh", "-c", script], *options)
                records = self.sched_wait(started, env, work / gpus_n * 0.8, 600)[(repo, sweep)]
                spans[sweep] = (submitted, max(_moment(r["finished"]) for r in records))
            finally:
                self.sched_stop(started, env)
            short = [r for r in records if int(r["params"]["n"]) % 3 != 0]
            to_result = statistics.mean(_moment(r["finished"]) - submitted for r in short)
            makespan = max(_moment(r["finished"]) for r in records) - submitted
            units = sum((Path(r["data_dir"]) / "logs" / "run.log").read_text().count("unit ") for r in records)
            measured[sweep] = (to_result, makespan, sum(r["restarts"] for r in records),
                               sum(r["lost_s"] for r in records), units - work)
            self.say(f"  {sweep}: short runs' mean time to result {to_result:.1f} s, makespan {makespan:.1f} s, "
                     f"{measured[sweep][2]} restarts, {measured[sweep][3]:.1f} s lost, {units - work} units done twice")
        whole, sliced = measured["whole"], measured["sliced"]
        title = (f"time slices, {runs_n} runs (every third {long_u} s, the others {short_u} s) on {gpus_n} GPUs")
        self.figures.append(Figure(
            f"{title}: the short runs' mean time to result", f"`--time-slice {slice_s:g}s`", "no slice", sliced[0],
            whole[0], "ratio", 1.0, "< 1x (the slice cuts it)",
            note="from the `sweep --detach` command's start (it makes the worktrees, then queues) to each short run's "
                 "finish, mean; the runs count one-second units checkpointed to /data, resumed after a slice; other "
                 f"requests on the engine: {self.others.summary(*spans['whole'])} without the slice, "
                 f"{self.others.summary(*spans['sliced'])} with it"))
        self.figures.append(Figure(
            f"{title}: makespan", f"`--time-slice {slice_s:g}s`", "no slice", sliced[1], whole[1], "ratio", None,
            "(reported)",
            note=f"from the sweep's start to its last run's end; sliced: {sliced[2]} restarts, {sliced[3]:.0f} s off "
                 f"the GPU, {sliced[4]} units of work done twice (a unit under way when SIGTERM came); ideal "
                 f"{work / gpus_n:.0f} s of work per GPU"))

    def history(self, repo: Path, count: int, env: dict[str, str], *options: str) -> str:
        """`count` finished runs in the repo's store (benchmarks/store_history.py); the file of the
        store module it wrote them through."""
        written = self.runner.output([sys.executable, str(HERE / "store_history.py"), str(repo), str(count), *options],
                                     cwd=repo, env=env)
        return written.splitlines()[0]

    def measured_code(self, env: dict[str, str]) -> str:
        """The git_gpuspace that `git gpuspace` imports here (PYTHONPATH may put another checkout
        first), from the measured process's own verbose import log, and its commit."""
        probe = subprocess.run([*self.git_gpuspace, "--version"], cwd=self.base, env={**env, "PYTHONVERBOSE": "1"},
                               capture_output=True, text=True)
        found = re.search(r"(/\S*)/git_gpuspace/__init__\.py\s*$", probe.stderr, re.MULTILINE)
        if found is None:
            raise CommandFailed(f"cannot tell where `git gpuspace` imports git_gpuspace from:\n{probe.stderr[-2000:]}")
        package = Path(found.group(1)) / "git_gpuspace"
        commit = subprocess.run(["git", "-C", str(package), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip()
        return f"{package}" + (f" (commit {commit})" if commit else "")

    def sweep_by_hand(self, repo: Path, runs_n: int, gpus_n: int, sleep_s: int) -> float:
        """The same sweep as a user would script it: per run a detached worktree and a container
        on GPU n % gpus_n, `gpus_n` at a time with xargs. Seconds, start to end."""
        where = self.base / "wt-sweep-hand"
        where.mkdir()
        uuid = f"GPU-{self.queue_seed}-0000-4000-8000-"
        script = where / "one.sh"
        script.write_text(
            'n=$1\n'
            f'git worktree add -q --detach "{where}/hand-$n" || exit 1\n'
            f'exec docker run --rm --label {LABEL_REPO}={self.base}/by-hand --gpus "device={uuid}$(printf %012d $((n % {gpus_n})))" '
            f'--mount type=bind,source="{where}/hand-$n",target=/workspace -w /workspace {self.image} sh -c "sleep {sleep_s}"\n')
        start = time.perf_counter()
        self.runner.output(["sh", "-c", f"seq 0 {runs_n - 1} | xargs -P {gpus_n} -n 1 sh {script}"], cwd=repo)
        seconds = time.perf_counter() - start
        for n in range(runs_n):
            self.retire(repo, where / f"hand-{n}", None, bound=False)
        return seconds

    def run_stamps(self, repo: Path, sweep: str) -> list[tuple[float, float, str]]:
        """(start, end, GPU) of each run of a sweep, from the uptime its command printed."""
        import json

        found = []
        for record in json.loads(self.runner.output([*self.git_gpuspace, "runs", "--json", "--sweep", sweep], cwd=repo)):
            log = (Path(record["data_dir"]) / "logs" / "run.log").read_text()
            start = float(log.split("start ", 1)[1].split()[0])
            end = float(log.split("end ", 1)[1].split()[0])
            found.append((start, end, ",".join(record["gpus"])))
        return found

    def anchor_scheduler(self, runs_n: int, gpus_n: int, sleep_s: int, ideal: float) -> None:
        """simple_gpu_scheduler (PyPI) runs the same commands on the host: no worktree, no container."""
        try:
            import simple_gpu_scheduler  # noqa: F401
        except ImportError:
            self.inputs.append("simple_gpu_scheduler is not installed (`pip install -e '.[bench]'`): its figure is left out.")
            return
        commands = "".join(f"sleep {sleep_s}\n" for _ in range(runs_n)).encode()
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "simple_gpu_scheduler.scheduler", "--gpus", *map(str, range(gpus_n))],
                       input=commands, capture_output=True, check=True, env=self.env)
        makespan = time.perf_counter() - start
        self.figures.append(Figure(f"queue makespan, the same {runs_n} commands under simple_gpu_scheduler",
                                   "simple_gpu_scheduler", "ideal", makespan, ideal,
                                   "ratio", None, "(anchor)", note="host processes: no worktree, container or pinning"))

    def run_to_start(self, repo: Path, env: dict[str, str]) -> None:
        """From invoking `git gpuspace run` to the command running on a free GPU, against `git
        worktree add --detach` + `docker run` by hand."""
        uuid = f"GPU-{self.queue_seed}-0000-4000-8000-{0:012d}"
        where = self.base / "wt-queue"
        where.mkdir(exist_ok=True)

        def ours(rep: int) -> Sample:
            before = uptime()
            self.runner.run([*self.git_gpuspace, "run", "--gpus", "1", "--", "sh", "-c", f"echo start $({UPTIME})"],
                            cwd=repo, env=env)
            import json

            record = json.loads(self.runner.output([*self.git_gpuspace, "runs", "--json"], cwd=repo, env=env))[-1]
            self.runner.output([*self.git_gpuspace, "runs", "clean"], cwd=repo, env=env)
            log = (Path(record["data_dir"]) / "logs" / "run.log").read_text()
            return Sample(float(log.rsplit("start ", 1)[1].split()[0]) - before, 0)

        def by_hand(rep: int) -> Sample:
            path, name = where / f"hand-{rep}", f"gpuspace-bench-{self.seed}-run-{rep}"
            before = uptime()
            self.runner.run(["git", "worktree", "add", "-q", "--detach", str(path)], cwd=repo)
            container = self.runner.output(["docker", "run", "-d", "--name", name, "--init", "--label",
                                            f"{LABEL_REPO}={self.base}/by-hand", "--mount",
                                            f"type=bind,source={path},target=/workspace", "-w", "/workspace",
                                            "--gpus", f"device={uuid}", self.image, "sh", "-c",
                                            f"echo start $({UPTIME})"], cwd=repo).strip()
            self.runner.output(["docker", "wait", container], cwd=repo)
            log = self.runner.output(["docker", "logs", container], cwd=repo)
            self.runner.output(["docker", "rm", "-f", container], cwd=repo)
            return Sample(float(log.split("start ", 1)[1].split()[0]) - before, 0)

        arms = [Arm("`git gpuspace run`", ours), Arm("`git worktree add --detach` + `docker run`", by_hand)]
        self.measure(arms, self.plan.reps)
        self.figures.append(pair("`run` to the command's start", *arms, "ratio", 1.5, "<= 1.5x (stretch 1.3x)",
                                 note="a free GPU; until the command prints the clock inside its container"))

    def verify(self) -> None:
        """`verify`: the cache path over a range already checked, against `git notes list`; and a
        range of unchecked commits, -j 4 on 4 GPUs, against the same checks one after another by
        hand (`git worktree add --detach` + `docker run`, then the note)."""
        checked_n, runs_n, sleep_s = self.plan.verify_sizes
        gpus_n = 4
        repo = self.repo("repo-verify", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": str(gpus_n), "FAKE_GPU_SEED": secrets.token_hex(4)}
        self.say("== verify: the cache, and a range of unchecked commits")
        for i in range(checked_n + 2 * runs_n):
            (repo / f"change-{i}.txt").write_text(f"{i}\n")
            self.git("add", f"change-{i}.txt", cwd=repo)
            self.git("commit", "-q", "-m", f"change {i}", cwd=repo)
        cached_range = f"HEAD~{checked_n + 2 * runs_n}..HEAD~{2 * runs_n}"
        self.runner.run([*self.git_gpuspace, "verify", "add", "quick", "--gpus", "1", "--", "true"], cwd=repo, env=env)
        self.runner.run([*self.git_gpuspace, "verify", cached_range, "--name", "quick", "-j", str(gpus_n)], cwd=repo,
                        env=env)

        def cached(rep: int) -> Sample:
            return self.runner.run([*self.git_gpuspace, "verify", cached_range, "--name", "quick"], cwd=repo, env=env)

        def version(rep: int) -> Sample:
            return self.runner.run([*self.git_gpuspace, "--version"], cwd=repo, env=env)

        def notes_list(rep: int) -> Sample:
            return self.runner.run(["git", "notes", "--ref=gpuspace/quick", "list"], cwd=repo, env=env)

        arms = [Arm(f"`git gpuspace verify` ({checked_n} commits, all cached)", cached),
                Arm("`git gpuspace --version`", version), Arm("`git notes list`", notes_list)]
        self.measure(arms, self.plan.reps)
        self.figures.append(pair(f"verify, the cache path over {checked_n} checked commits", arms[0], arms[1], "ratio",
                                 2.5, "<= 2.5x", note=f"`git notes list` alone: {arms[2].median * 1000:.0f} ms"))

        check = ["sh", "-c", f"sleep {sleep_s}"]
        self.runner.run([*self.git_gpuspace, "verify", "add", "slow", "--gpus", "1", "--", *check], cwd=repo, env=env)
        ours_range = f"HEAD~{2 * runs_n}..HEAD~{runs_n}"
        start = time.perf_counter()
        self.runner.run([*self.git_gpuspace, "verify", ours_range, "--name", "slow", "-j", str(gpus_n)], cwd=repo,
                        env=env)
        ours = time.perf_counter() - start
        uuid = f"GPU-{env['FAKE_GPU_SEED']}-0000-4000-8000-{0:012d}"
        start = time.perf_counter()
        for commit in self.git("rev-list", "--reverse", f"HEAD~{runs_n}..HEAD", cwd=repo).split():
            path = self.base / "verify-by-hand" / commit[:8]
            self.runner.run(["git", "worktree", "add", "-q", "--detach", str(path), commit], cwd=repo)
            self.runner.run(["docker", "run", "--rm", "--init", "--label", f"{LABEL_REPO}={self.base}/by-hand", "--mount",
                             f"type=bind,source={path},target=/workspace", "-w", "/workspace", "--gpus",
                             f"device={uuid}", self.image, *check], cwd=repo)
            self.runner.run(["git", "notes", "--ref=by-hand", "add", "-m", "pass", commit], cwd=repo)
        by_hand = time.perf_counter() - start
        self.figures.append(Figure(f"verify, {runs_n} unchecked commits (`{' '.join(check)}`), -j {gpus_n} on "
                                   f"{gpus_n} GPUs", "`git gpuspace verify -j 4`", "one after another by hand", ours,
                                   by_hand, "ratio", None, "(reported)",
                                   note="by hand: `git worktree add --detach`, `docker run`, `git notes add`, per commit"))

    def slurm(self) -> None:
        """The same 16-run sweep on the test Slurm cluster (scripts/slurm-up: one node, 2 GPUs) and
        on this machine's engine with 2 GPUs: the time to submit it, and the gap between one run's
        command ending and the next one's starting on that GPU."""
        conf = Path(os.environ.get("GPUSPACE_TEST_DIR", "/var/lib/gpuspace-test")) / "slurm" / "slurm.conf"
        if not conf.exists() or shutil.which("sbatch") is None:
            self.inputs.append("no test Slurm cluster (scripts/slurm-up): the Slurm figures are left out.")
            return
        runs_n, sleep_s = self.plan.slurm_sweep
        repo = self.repo("repo-slurm", self.plan.project)
        env = {**self.env, "FAKE_GPU_COUNT": "2", "FAKE_GPU_SEED": secrets.token_hex(4), "SLURM_CONF": str(conf)}
        command = ["sh", "-c", f"echo start $({UPTIME}); sleep {sleep_s}; echo end $({UPTIME}); : {{n}}"]
        self.say(f"== {runs_n} runs of sleep {sleep_s} on 2 GPUs: Slurm, then this machine's engine")
        measured = {}
        for backend in ("slurm", "local"):
            name = f"on-{backend}"
            submitted = self.runner.run([*self.git_gpuspace, "sweep", name, "-p", "n=" + ",".join(map(str, range(runs_n))),
                                         "--gpus", "1", "--backend", backend, "--detach", "--", *command], cwd=repo, env=env)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                import json

                states = [r["state"] for r in json.loads(self.runner.output(
                    [*self.git_gpuspace, "runs", "--json", "--sweep", name], cwd=repo, env=env))]
                if not any(state in ("queued", "running") for state in states):
                    break
                time.sleep(1)
            stamps = self.run_stamps(repo, name)
            gaps = []
            for uuid in {gpu for _, _, gpu in stamps}:
                on_gpu = sorted((start, end) for start, end, gpu in stamps if gpu == uuid)
                gaps += [later[0] - earlier[1] for earlier, later in zip(on_gpu, on_gpu[1:])]
            measured[backend] = (submitted.seconds, statistics.median(gaps) if gaps else None)
        self.figures.append(Figure(f"submitting a sweep of {runs_n} runs (worktrees made, then queued)",
                                   "`sweep --backend slurm --detach`", "`sweep --backend local --detach`",
                                   measured["slurm"][0], measured["local"][0], "ratio", None, "(reported)",
                                   note="one sbatch of a job array against the local queue file"))
        self.figures.append(Figure("gap from a run's end to the next run's start on its GPU, median",
                                   "Slurm (one node, 2 GPUs)", "this machine's engine", measured["slurm"][1],
                                   measured["local"][1], "ratio", None, "(reported)",
                                   note="Slurm's scheduler starts the next array task; then our task starts its container"))

    def big_sweeps(self, repo: Path, env: dict[str, str]) -> None:
        """A sweep's dispatcher memory and engine calls per run, at two sweep sizes."""
        measured = {}
        for size in self.plan.big_sweeps:
            self.say(f"== a sweep of {size} runs")
            self.proxy.take()
            sample = self.runner.run([*self.git_gpuspace, "sweep", f"big-{size}", "-p",
                                      "n=" + ",".join(map(str, range(size))), "--gpus", "1", "--", "echo", "{n}"],
                                     cwd=repo, env={**env, "DOCKER_HOST": self.proxy.docker_host})
            measured[size] = (sample.rss_kib / 1024, len(self.proxy.take()) / size)
        (low, high) = (measured[size] for size in self.plan.big_sweeps)
        first, last = self.plan.big_sweeps
        self.figures.append(Figure(f"engine calls per run, sweeps of {first} -> {last} runs",
                                   f"{low[1]:.1f} -> {high[1]:.1f}", "", high[1] - low[1], None, "calls", 2,
                                   "constant (<= +2 a run)"))
        tolerance = max(4.0, 0.1 * low[0])
        self.figures.append(Figure(f"peak memory growth, `sweep` (submit + dispatch), {first} -> {last} runs",
                                   f"{low[0]:.1f} -> {high[0]:.1f} MiB", "", high[0] - low[0], None, "growth", tolerance,
                                   f"flat (<= +{tolerance:.1f} MiB)"))

    def profile_imports(self) -> None:
        result = subprocess.run([sys.executable, "-X", "importtime", str(gpuspace_script()), "--version"], cwd=self.base,
                                env=self.env, capture_output=True, text=True)
        parsed = []
        for line in result.stderr.splitlines()[1:]:
            if line.startswith("import time:") and "|" in line:
                fields = [part.strip() for part in line.replace("import time:", "").split("|")]
                parsed.append((int(fields[1]), int(fields[0]), fields[2]))
        top = sorted(parsed, reverse=True)[:15]
        self.profiles.append(("`git gpuspace --version` (`python -X importtime`: cumulative and own, microseconds)",
                              "\n".join(f"{c:>8} {s:>8}  {n}" for c, s, n in top)))

    def cprofile(self, command: list[str], cwd: Path) -> str:
        """The command under cProfile: the top of the cumulative list (import machinery left
        out: the modules it imports show instead), then the top by own time."""
        out = self.base / "profile.out"
        self.runner.run([sys.executable, "-c", PROFILE_WRAPPER, str(out), *command], cwd=cwd)
        noise = ("<frozen importlib", "{built-in method builtins.exec}", "{built-in method builtins.__import__}",
                 "importlib/__init__.py", "<frozen ", "runpy.py", "<string>")

        def top(order: str, count: int) -> list[str]:
            buffer = io.StringIO()
            pstats.Stats(str(out), stream=buffer).sort_stats(order).print_stats(count * 3)
            lines = buffer.getvalue().splitlines()
            start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
            total = next((line.strip() for line in lines if "function calls" in line), "")
            rows = [line for line in lines[start + 1:] if line.strip() and not any(n in line for n in noise)][:count]
            return [total, lines[start], *rows]

        text = "\n".join(top("cumulative", 25) + ["", "by own time:"] + top("tottime", 12)[1:])
        for prefix in (str(ROOT) + "/", str(Path(sys.prefix)) + "/", str(Path(sys.base_prefix)) + "/"):
            text = text.replace(prefix, "")
        return text


class OtherWants:
    """Samples, every second in a thread of its own, the requests for GPUs that anything but this
    run posted on the engine (`gpuspace-want-*` containers: another checkout's dispatchers or
    tests). Our dispatchers' plans count only those posted for GPUs they share (none, for stand-in
    GPUs of another seed): the figures say how many there were, for the record."""

    def __init__(self, base: Path) -> None:
        import threading

        self.prefix = str(base) + os.sep
        self.samples: list[tuple[float, int]] = []  # (epoch seconds, requests of others)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "OtherWants":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=70)

    def _sample(self) -> None:
        import json

        while not self.done.is_set():
            try:
                listing = subprocess.run(["docker", "ps", "-a", "--filter", "label=gpuspace.wants", "--format",
                                          '{{.Label "gpuspace.wants"}}'], capture_output=True, text=True,
                                         timeout=60).stdout
            except (OSError, subprocess.TimeoutExpired):
                listing = None
            if listing is not None:
                count = 0
                for line in listing.splitlines():
                    try:
                        entries = json.loads(line)
                    except ValueError:
                        continue
                    count += sum(1 for entry in entries if isinstance(entry, dict)
                                 and not str(entry.get("repo", "")).startswith(self.prefix)) if isinstance(entries, list) else 0
                self.samples.append((time.time(), count))
            self.done.wait(1.0)

    def summary(self, start: float, end: float) -> str:
        """`none in 17 samples`, or `in 5 of 17 samples, up to 3 requests`."""
        within = [count for moment, count in self.samples if start <= moment <= end]
        seen = [count for count in within if count]
        if not seen:
            return f"none in {len(within)} sample{'s' * (len(within) != 1)}"
        return f"in {len(seen)} of {len(within)} samples, up to {max(seen)} request{'s' * (max(seen) != 1)}"


def _moment(text: str) -> float:
    """Epoch seconds of a `runs --json` time."""
    return datetime.datetime.fromisoformat(text).timestamp()


def _held_average(records: list[dict], start: float, end: float) -> float:
    """GPUs these runs held on average from `start` to `end` (sampled at 400 moments)."""
    steps = [start + (end - start) * (i + 0.5) / 400 for i in range(400)]
    return sum(len(r["gpus"]) for at in steps for r in records
               if r["started"] and _moment(r["started"]) <= at < (_moment(r["finished"]) if r["finished"] else float("inf"))
               ) / len(steps)


def _api_path(path: str) -> str:
    """/v1.41/containers/gpuspace-x-1/json -> /containers/{id}/json: requests grouped by kind."""
    parts = [part for part in path.split("/") if part]
    if parts and parts[0].startswith("v1."):
        parts = parts[1:]
    if len(parts) >= 3 and parts[0] in ("containers", "images"):
        parts = [parts[0], "{name}", *parts[-1:]]
    return "/" + "/".join(parts)


# --------------------------------------------------------------------------- the report


def machine() -> list[str]:
    def first_line(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    model = "?"
    memory = "?"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    system = "?"
    try:
        system = next(line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release") if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    try:
        import dulwich

        dulwich_version = ".".join(map(str, dulwich.__version__))
    except Exception:  # noqa: BLE001
        dulwich_version = "?"
    sys.path.insert(0, str(ROOT))
    from git_gpuspace import __version__

    temp = tempfile.gettempdir()
    try:
        source, fs = subprocess.run(["df", "--output=source,fstype", temp], capture_output=True, text=True).stdout.split()[-2:]
        if fs == "ext4":  # a journal-less ext4 behaves differently after deletions (see README)
            journal = any(Path("/proc/fs/jbd2").glob(f"{Path(source).name}-*"))
            fs += "" if journal else ", without a journal"
    except (OSError, ValueError):
        fs = "?"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip()
        branch = subprocess.run(["git", "-C", str(ROOT), "branch", "--show-current"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, branch = "?", "?"
    return [
        f"- Code: git-gpuspace at commit {commit} (branch {branch or 'detached'})"
        + (f"; PYTHONPATH={os.environ['PYTHONPATH']} (see the inputs for the code measured)" if os.environ.get("PYTHONPATH") else ""),
        f"- CPU: {os.cpu_count()} cores ({model}); load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Memory: {memory}",
        f"- Kernel: {platform.system()} {platform.release()} ({system})",
        f"- Python {platform.python_version()}, {first_line(['git', '--version'])}, Docker Engine "
        f"{first_line(['docker', 'version', '--format', '{{.Server.Version}} (API {{.Server.APIVersion}})'])}, "
        f"dulwich {dulwich_version}, git-gpuspace {__version__}",
        f"- Repositories and worktrees in {temp} ({fs})",
    ]


def report(bench: Bench, command: str, started: datetime.datetime, seconds: float, smoke: bool, machine_lines: list[str]) -> str:
    plan = bench.plan
    rows = [figure.cells() for figure in bench.figures]
    parts = [
        "# Benchmark results" + (" (smoke run: sizes too small to mean anything)" if smoke else ""),
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} minutes with:",
        "",
        "```",
        command,
        "```",
        "",
        "## Machine",
        "",
        *machine_lines,
        "",
        "## Figures",
        "",
        f"Medians of {plan.reps} repetitions ({max(2, plan.reps_slow - 2) if plan.before else plan.reps_slow} to "
        f"{plan.reps_slow} for the {plan.large[0] * plan.large[1]}-file figures, "
        f"{max(plan.reps, 15) if plan.reps > 1 else 1} for `--version` and the hook), with the fastest and slowest run "
        f"in brackets. In every repetition each figure and its anchor run once, in an order that rotates"
        f"{'; a first, unmeasured repetition warms caches' if plan.warmup else ''}. Ratios are ours / anchor.",
        "",
        table(["figure", "ours", "anchor", "result", "target", "verdict"], rows),
        "",
    ]
    notes = [f"- {figure.title}: {figure.note}" for figure in bench.figures if figure.note]
    if notes:
        parts += notes + [""]
    parts += [
        "## Scaling with the number of bindings",
        "",
        f"A {plan.project[0] * plan.project[1]}-file project; every binding holds one (shared) fake GPU and its container "
        f"is created, not started. Each cell: median time, engine API requests (counted by a proxy on a unix socket "
        f"in front of the engine's), peak RSS. `add` adds one more binding (removed again after each run).",
        "",
        table(["bindings", "status", "gpus", "add"], bench.scaling),
        "",
        "Engine requests, by kind, at the largest size:",
        "",
    ]
    last = plan.scale[-1]
    for name in ("status", "gpus", "add"):
        counter = bench.requests.get(f"{name} at {last} bindings", Counter())
        parts.append(f"- `{name}`: " + ", ".join(f"{key} x{value}" if value > 1 else key for key, value in sorted(counter.items())))
    parts += ["", "## Inputs", "", *[f"- {line}" for line in bench.inputs]]
    parts += [
        f"- Bindings on the local test image `{bench.image}` (busybox), with `--image`; GPUs from the stand-in "
        "`tests/engine/nvidia-smi` (8 fake GPUs, a UUID seed of this run's own) and the engine's NVIDIA device "
        "request served by the stand-in hook.",
        "- Every command runs as a fresh process, as a user would run it, with an isolated HOME and config, under "
        + ("GNU time, which gives its peak RSS." if bench.runner.gnu_time else "no GNU time: peak RSS from wait4 "
           "includes this process's own peak, so it is an upper bound.")
        + " After each run its worktree is unbound, moved aside and pruned from git, and the disk synced (not "
        "timed); files are deleted at the end (see the README).",
        "",
    ]
    if bench.profiles:
        parts += ["## Profiles of the figures that missed their target", ""]
        for title, text in bench.profiles:
            parts += [f"### {title}", "", "```", text, "```", ""]
    parts += [
        "## Not run: the real GPU",
        "",
        "Nothing here ran on a real GPU: this session had no GPU machine lent to it. On the real GPU machine (one "
        "H200, no Docker engine) what could be measured is the NVML inventory path (`git gpuspace gpus` with "
        "nvidia-ml-py on a real driver, about 0.2 s for the first NVML query in a fresh Python, per DESIGN.md) "
        "instead of the stand-in `nvidia-smi`; container figures need an engine, which that machine lacks.",
        "",
    ]
    analysis = HERE / "analysis.md"
    if analysis.exists() and not smoke:
        parts += [analysis.read_text().rstrip(), ""]
    return "\n".join(parts)


UPTIME = "cut -d' ' -f1 /proc/uptime"


def uptime() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


# --------------------------------------------------------------------------- cleanup and main


def remove_containers(roots: list[Path]) -> int:
    """Every container labelled as belonging to a repo under one of our directories."""
    try:
        listing = subprocess.run(
            ["docker", "ps", "-a", "--no-trunc", "--filter", f"label={LABEL_REPO}", "--format", '{{.ID}}\t{{.Label "gpuspace.repo"}}'],
            capture_output=True, text=True, timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    prefixes = tuple(str(root) + os.sep for root in roots)
    ours = [line.split("\t")[0] for line in listing.splitlines() if "\t" in line and line.split("\t", 1)[1].startswith(prefixes)]
    if ours:
        subprocess.run(["docker", "rm", "-f", *ours], capture_output=True, timeout=300)
    return len(ours)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="git-gpuspace benchmarks (see benchmarks/README.md)")
    parser.add_argument("--smoke", action="store_true", help="small sizes, one repetition: checks the benchmarks run (CI)")
    parser.add_argument("--reps", type=int, help="repetitions of the quick figures (default 9; 1 with --smoke)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: benchmarks/RESULTS.md; none with --smoke)")
    parser.add_argument("--image", default=os.environ.get("GPUSPACE_TEST_IMAGE", "gpuspace-test:latest"),
                        help="container image for the bindings (default: gpuspace-test:latest)")
    parser.add_argument("--tmp", type=Path, help="where to make repositories and worktrees (default: the temp dir)")
    parser.add_argument("--profile", action="store_true", help="profile every command figure, not only those that miss")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (containers are removed anyway)")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="measure one section (its report goes to --out only)")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.profile:
        plan = Plan(**{**plan.__dict__, "profiles": True, "profile_all": True})
    if args.only:
        plan = Plan(**{**plan.__dict__, "only": args.only})
    if args.reps:
        plan = Plan(**{**plan.__dict__, "reps": args.reps, "reps_slow": min(args.reps, plan.reps_slow) if not args.smoke else args.reps})
    out = args.out if args.out else (None if args.smoke or args.only else HERE / "RESULTS.md")
    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))

    if subprocess.run(["docker", "image", "inspect", args.image], capture_output=True).returncode != 0:
        print(f"benchmarks: the image {args.image} is not on the engine (or no engine): run scripts/engine-up first", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine_lines = machine()
    base = Path(tempfile.mkdtemp(prefix="gpuspace-bench-", dir=args.tmp)).resolve()
    bench = Bench(plan, base, args.image)
    clock = time.perf_counter()
    try:
        bench.run_all()
        text = report(bench, command, started, time.perf_counter() - clock, args.smoke, machine_lines)
    finally:
        removed = remove_containers(bench.roots)
        if removed:
            print(f"removed {removed} benchmark container(s)")
        deadline = time.monotonic() + 120
        while any(_working_in(root) for root in bench.roots) and time.monotonic() < deadline:
            time.sleep(0.5)  # runs' trackers logging their ends: gone before what they write is removed
        for root in bench.roots:
            if not args.keep or root != base:
                shutil.rmtree(root, ignore_errors=True)
    print()
    print(text)
    if out is not None:
        out.write_text(text)
        print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
