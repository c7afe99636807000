"""kill -9 of the dispatcher at random moments: does any run start twice, or any GPU get two holders?

A sweep is submitted in the foreground (so the first kill may land while its worktrees are being
made), then `runs resume` is started and killed with SIGKILL again and again, each after a random
delay; a last `runs resume` finishes the queue. Meanwhile a thread samples the engine: for every
running container of the repo, the GPUs in its device requests. Afterwards it counts, from the
runs' own files, how often each run's command started, and whether two commands ever computed on
one GPU at once.

    python benchmarks/kills.py --kills 50        # the figure in RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Each start appends "<uptime> <GPU>" to the run's own /data/starts, each end "<uptime>" to /data/ends:
# /proc/uptime is the host's clock in every container, so intervals of different runs compare.
COMMAND = ('echo "$(cut -d" " -f1 /proc/uptime) $NVIDIA_VISIBLE_DEVICES" >> /data/starts; echo run {i}; '
           'sleep SECONDS; cut -d" " -f1 /proc/uptime >> /data/ends')
# With time slices the runs are preempted by design: a start's end is written on SIGTERM too, a run
# starts once plus once per restart (its record's `restarts`), and its work (half-second units,
# counted in /data/done) goes on where the last turn left it
SLICED = ('trap \'cut -d" " -f1 /proc/uptime >> /data/ends; exit 143\' TERM; '
          'echo "$(cut -d" " -f1 /proc/uptime) $NVIDIA_VISIBLE_DEVICES" >> /data/starts; echo run {i}; '
          'n=$(cat /data/done 2>/dev/null || echo 0); while [ "$n" -lt UNITS ]; do sleep 0.5; n=$((n+1)); '
          'echo "$n" > /data/done; done; cut -d" " -f1 /proc/uptime >> /data/ends')


@dataclass
class Campaign:
    kills: int
    runs: int
    extra_starts: int = 0  # starts beyond one per run (and one per restart, with time slices)
    never_started: int = 0
    not_succeeded: list[str] = field(default_factory=list)
    double_samples: int = 0  # engine samples with a GPU in two running containers' device requests
    samples: int = 0
    overlaps: int = 0  # pairs of commands whose [start, end] on one GPU overlap
    killed_while_submitting: bool = False
    seconds: float = 0.0
    starts: Counter = field(default_factory=Counter)
    seen: list[str] = field(default_factory=list)  # the first samples with a GPU held twice
    spans: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)  # GPU -> (run, start, end)

    @property
    def clean(self) -> bool:
        return not (self.extra_starts or self.never_started or self.not_succeeded or self.double_samples
                    or self.overlaps)

    def summary(self) -> str:
        return (f"{self.kills} kills, {self.runs} runs: {self.extra_starts} extra starts, {self.never_started} never "
                f"started, {len(self.not_succeeded)} not succeeded, {self.double_samples} of {self.samples} engine "
                f"samples with a GPU held twice, {self.overlaps} overlapping commands on one GPU "
                f"({self.seconds:.1f} s{', first kill during submission' if self.killed_while_submitting else ''})"
                + (f"; not succeeded: {self.not_succeeded}; first samples: {self.seen}; commands per GPU: {self.spans}"
                   if not self.clean else ""))


class Sampler(threading.Thread):
    """Polls the engine for the repo's running containers and the GPUs their device requests name."""

    def __init__(self, common_dir: Path) -> None:
        super().__init__(daemon=True)
        import docker

        self.client = docker.from_env()
        self.label = f"gpuspace.repo={common_dir}"
        self.stop = threading.Event()
        self.samples = self.doubles = 0
        self.seen: list[str] = []

    def run(self) -> None:
        import docker.errors

        while not self.stop.is_set():
            try:
                running = self.client.containers.list(filters={"label": self.label, "status": "running"},
                                                      ignore_removed=True)
            except docker.errors.APIError:
                continue
            held: Counter = Counter()
            for container in running:
                for request in container.attrs.get("HostConfig", {}).get("DeviceRequests") or []:
                    held.update(request.get("DeviceIDs") or [])
            self.samples += 1
            if any(count > 1 for count in held.values()):
                self.doubles += 1
                self.seen.append(f"{time.time():.2f}: " + ", ".join(
                    f"{c.labels.get('gpuspace.run')} {c.attrs['State'].get('StartedAt', '')[11:23]} "
                    f"{','.join(r for q in c.attrs['HostConfig'].get('DeviceRequests') or [] for r in q.get('DeviceIDs') or [])[-4:]}"
                    for c in running))
            time.sleep(0.02)


def campaign(repo: Path, kills: int, runs: int = 8, seconds: float = 1.0, env: dict | None = None,
             seed: int | None = None, say=lambda line: None, time_slice: float | None = None) -> Campaign:
    """Run the campaign in `repo` (a git repository with a commit) with `kills` kill -9s;
    `time_slice`: the runs are preemptible and take turns on the GPUs that often."""
    rng = random.Random(seed)
    env = {**os.environ, **(env or {})}
    common_dir = Path(subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=repo,
                                     capture_output=True, text=True, check=True).stdout.strip())
    result = Campaign(kills=kills, runs=runs)
    sampler = Sampler(common_dir)
    sampler.start()
    began = time.monotonic()
    command = SLICED.replace("UNITS", str(round(seconds * 2))) if time_slice else COMMAND.replace("SECONDS", f"{seconds:g}")
    sweep = ["git-gpuspace", "sweep", "kd", "-p", "i=" + ",".join(str(i) for i in range(1, runs + 1)),
             "--gpus", "1", *(["--time-slice", f"{time_slice:g}s"] if time_slice else []), "--", "sh", "-c", command]
    log = open(repo.parent / "kills-dispatchers.log", "ab")  # what each dispatcher said, for a failure's story
    try:
        for number in range(kills):
            argv = sweep if number == 0 else ["git-gpuspace", "runs", "resume"]
            log.write(f"== {time.time():.2f} dispatcher {number + 1}\n".encode())
            log.flush()
            process = subprocess.Popen(argv, cwd=repo, env=env, stdout=log, stderr=log)
            if number == 0:  # once the sweep is in the store: killed before, nothing was submitted
                deadline = time.monotonic() + 60
                while not _store(common_dir) and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 2.0 if number else 1.0))
            if number == 0:
                result.killed_while_submitting = any(r.get("reason") == "preparing" for r in _store(common_dir))
            process.send_signal(signal.SIGKILL)
            process.wait()
            say(f"kill {number + 1}/{kills}")
        log.write(f"== {time.time():.2f} the last dispatcher\n".encode())
        log.flush()
        final = subprocess.run(["git-gpuspace", "runs", "resume"], cwd=repo, env=env, stdout=log, stderr=log,
                               timeout=300)
        if final.returncode not in (0, 1):
            raise RuntimeError(f"runs resume exited {final.returncode}: see {log.name}")
    finally:
        log.close()
        sampler.stop.set()
        sampler.join()
    result.seconds = time.monotonic() - began
    result.samples, result.double_samples, result.seen = sampler.samples, sampler.doubles, sampler.seen[:5]
    records = json.loads(subprocess.run(["git-gpuspace", "runs", "--json", "--sweep", "kd"], cwd=repo, env=env,
                                        capture_output=True, text=True, check=True).stdout)
    intervals: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        if record["state"] != "succeeded":
            result.not_succeeded.append(f"{record['id']} {record['state']} ({record['reason']})")
        data = Path(record["data_dir"]) if record["data_dir"] else None
        starts = _lines(data / "starts") if data else []
        ends = _lines(data / "ends") if data else []
        result.starts[record["id"]] = len(starts) - (record.get("restarts") or 0)
        result.extra_starts += max(0, len(starts) - 1 - (record.get("restarts") or 0))
        result.never_started += not starts
        for start, end in zip(starts, ends):
            moment, _, gpu = start.partition(" ")
            intervals.setdefault(gpu, []).append((float(moment), float(end), record["id"]))
    result.never_started += runs - len(records)
    for gpu, spans in intervals.items():
        spans.sort()
        result.overlaps += sum(1 for (_, end, _), (start, _, _) in zip(spans, spans[1:]) if start < end)
        result.spans[gpu[-4:]] = [(run, start, end) for start, end, run in spans]
    return result


def _store(common_dir: Path) -> list[dict]:
    """The runs in the store as they are now (a read sees the last commit whole, with no lock)."""
    from dataclasses import asdict

    from git_gpuspace.errors import StateError
    from git_gpuspace.runs import store

    try:
        return [asdict(run) for run in store.load(common_dir).runs]
    except StateError:
        return []


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--gpus", type=int, default=4, help="stand-in GPUs (tests/engine/nvidia-smi)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each run's command sleeps")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--time-slice", type=float, default=None, metavar="S",
                        help="the runs are preemptible and take turns every S seconds (their work resumes)")
    parser.add_argument("--image", default=os.environ.get("GPUSPACE_TEST_IMAGE", "gpuspace-test:latest"))
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="gpuspace-kills-") as base:
        base_path = Path(base)
        home = base_path / "home"
        (home / "config" / "git-gpuspace").mkdir(parents=True)
        (home / "config" / "git-gpuspace" / "config.toml").write_text(f'[defaults]\nimage = "{args.image}"\n')
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_STATE_HOME": str(home / "state"),
               "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache"),
               "PATH": f"{root / 'tests' / 'engine'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "FAKE_GPU_SEED": os.urandom(4).hex(), "FAKE_GPU_COUNT": str(args.gpus), "GPUSPACE_GPU_SOURCE": "nvidia-smi",
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@e", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@e"}
        repo = base_path / "project"
        repo.mkdir()
        for step in (["git", "init", "-q", "-b", "main"], ["git", "commit", "-q", "--allow-empty", "-m", "c"]):
            subprocess.run(step, cwd=repo, env={**os.environ, **env}, check=True)
        try:
            result = campaign(repo, args.kills, args.runs, args.seconds, env, args.seed, say=print,
                              time_slice=args.time_slice)
        finally:
            _remove_containers(repo / ".git")
    print(result.summary())
    print("starts per run:", dict(sorted(result.starts.items())))
    return 0 if result.clean else 1


def _remove_containers(common_dir: Path) -> None:
    import docker

    client = docker.from_env()
    for container in client.containers.list(ignore_removed=True, all=True, filters={"label": f"gpuspace.repo={common_dir.resolve()}"}):
        container.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
