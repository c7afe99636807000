"""The scheduler of a shared machine, on the real engine: fair share between users, no
starvation of a request for several GPUs, preemption of preemptible runs only, time slices, and
nothing of a preempted run's work lost. The policy itself is tests/runs/test_schedule.py (no engine);
these drive dispatchers of two repos and two users (a second local user made with useradd) as
people would, and count from the runs' own records and logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest

from conftest import TEST_IMAGE, _remove_containers, make_repo, wait_for
from users import make_user, user_dir


def counting(units: int = 6, seconds: float = 1) -> str:
    """Units of work `seconds` long, the count checkpointed in /data after each; SIGTERM stops it
    after the unit at hand is done and saved (a trap that exited at once could come between a
    unit's line and its checkpoint, and the unit would be done twice)."""
    return ('n=0; [ -n "$GPUSPACE_RESUME" ] && [ -f /data/ckpt ] && n=$(cat /data/ckpt); '
            'echo "start $n restarts=$GPUSPACE_RESTARTS"; stop=; trap \'stop=1\' TERM; '
            f'while [ "$n" -lt {units} ]; do [ -n "$stop" ] && {{ echo "saved $n"; exit 143; }}; sleep {seconds}; '
            'n=$((n+1)); echo "unit $n"; echo "$n" > /data/ckpt; done')


COUNTING = counting()


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def stop_all(repo) -> None:
    for sweep in {r["sweep"] for r in runs(repo) if r["sweep"]}:
        repo.gs("runs", "stop", "--sweep", sweep, "--all")
    for record in runs(repo):
        if not record["sweep"] and record["state"] in ("queued", "running", "preempted"):
            repo.gs("runs", "stop", record["id"])


def moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def held(records: list[dict], at: float) -> int:
    """How many GPUs these runs held at that moment."""
    return sum(len(r["gpus"]) for r in records if r["started"] and moment(r["started"]) <= at
               < (moment(r["finished"]) if r["finished"] else float("inf")))


def average(records: list[dict], start: float, end: float) -> float:
    steps = [start + (end - start) * i / 200 for i in range(200)]
    return sum(held(records, at) for at in steps) / len(steps)


@pytest.fixture
def two_repos(tmp_path, docker_client):
    first = make_repo(tmp_path / "a" / "ml", docker_client)
    second = make_repo(tmp_path / "b" / "bench", docker_client)
    yield first, second
    for repo in (first, second):
        stop_all(repo)
        _remove_containers(docker_client, repo)


def test_two_users_sweeps_share_the_gpus(tmp_path, docker_client):
    """Root's sweep of 8 at t=0, another user's at t=0.5, on 4 GPUs: while both have work, each
    holds 2 ± 1 on average (first come, first served kept 4 for root until its sweep was done)."""
    mine = make_repo(tmp_path / "root" / "ml", docker_client)
    other = make_user("gpuspace-other", docker=True)
    home = user_dir(other, tmp_path)
    theirs = home / "bench"
    assert other.run("sh", "-c", "git init -q -b main bench && cd bench && git commit -q --allow-empty -m a",
                     cwd=home).returncode == 0
    try:
        mine.ok("sweep", "a", "-p", "n=1,2,3,4,5,6,7,8", "--gpus", "1", "--detach", "--", "sleep", "2")
        time.sleep(0.5)
        asked = time.time()
        # in the foreground: their dispatcher is their `sweep` (a background one would run our
        # console script, which another user may not be able to execute where the tests run)
        sweep = other.popen(sys.executable, "-m", "git_gpuspace.cli", "sweep", "b", "-p", "n=1,2,3,4,5,6,7,8",
                            "--gpus", "1", "--image", TEST_IMAGE, "--", "sleep", "2", cwd=theirs,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = sweep.communicate(timeout=120)
        assert sweep.returncode == 0, err
        listed = lambda: json.loads(other.gpuspace("runs", "--json", cwd=theirs).stdout)  # noqa: E731
        assert wait_for(lambda: all(r["state"] == "succeeded" for r in runs(mine) + listed()), 120)
        a, b = runs(mine), listed()
        # while both had work: from b's first start (its submission takes seconds on a loaded
        # machine) to the end of whichever sweep ended first; first come, first served would
        # start none of b's before a's last
        start = max(asked, min(moment(r["started"]) for r in b))
        end = min(max(moment(r["finished"]) for r in a), max(moment(r["finished"]) for r in b))
        assert start < end - 2, "b got no GPU while a had work"
        share_a, share_b = average(a, start, end), average(b, start, end)
        # the 2 ± 1 is the benchmark's figure (benchmarks/run.py --only scheduler); here, on a
        # shared CI machine, each must at least have had a real share (first come, first served: 4 and 0)
        assert 0.5 <= share_a <= 3.5 and 0.5 <= share_b <= 3.5, (share_a, share_b)
    finally:
        other.gpuspace("runs", "stop", "--sweep", "b", "--all", cwd=theirs)
        stop_all(mine)
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"gpuspace.repo={theirs / '.git'}"}):
            container.remove(force=True)
        _remove_containers(docker_client, mine)


def test_add_wait_for_two_gpus_is_not_starved_by_two_sweeps(two_repos):
    """An `add --wait --gpus 2` behind two 20-run sweeps of 1-GPU runs starts within about one
    run's length: GPUs are held back for it as they free (first come, first served, it would wait
    for all 40 runs: 20 s on 4 GPUs)."""
    first, second = two_repos
    first.ok("sweep", "s1", "-p", "n=" + ",".join(map(str, range(20))), "--gpus", "1", "--detach", "--", "sleep", "2")
    time.sleep(0.5)
    second.ok("sweep", "s2", "-p", "n=" + ",".join(map(str, range(20))), "--gpus", "1", "--detach", "--", "sleep", "2")
    time.sleep(3)
    asked = time.monotonic()
    adding = subprocess.Popen(["git-gpuspace", "add", "--wait", "--gpus", "2", "--no-start", "-b", "big", "../big"],
                              cwd=first.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []  # `gpus` shows a GPU held back for it while it waits (when it is quick enough to look)
    while adding.poll() is None:
        seen += [r["reserved_for"] for r in json.loads(first.ok("gpus", "--json").stdout) if r["reserved_for"]]
    took = time.monotonic() - asked
    _, err = adding.communicate()
    assert adding.returncode == 0, err
    # one run's length (2 s), twice, and a loaded machine's slack (the add's own start and worktree
    # included); well short of the 16 s and more that waiting behind both sweeps would take
    assert took < 2 * 2 + 6, f"add waited {took:.1f} s"
    assert "waiting for GPUs" in err
    assert not seen or all(str(first.path.parent / "big") in who for who in seen), seen
    first.ok("remove", "--force", "../big")


def test_add_preempt_takes_a_gpu_from_a_preemptible_run_only(repo):
    """4 GPUs: 2 preemptible runs, 2 that are not. `add --preempt` takes one of the preemptible
    runs' GPUs; that run is preempted (SIGTERM, it saves its count), queued again, and restarts
    with GPUSPACE_RESUME=1 in its data dir once a GPU frees; the others are never touched."""
    repo.ok("sweep", "keep", "-p", "n=1,2", "--gpus", "1", "--detach", "--", "sleep", "60")
    # 30 units of half a second: neither yielding run ends (freeing a GPU) before `add` on a loaded machine
    repo.ok("sweep", "yield", "-p", "n=1,2", "--gpus", "1", "--detach", "--preemptible", "--", "sh", "-c",
            counting(30, 0.5))
    assert wait_for(lambda: [r["state"] for r in runs(repo)] == ["running"] * 4, 120)
    time.sleep(1.5)  # a unit of work done
    added = repo.gs("add", "--preempt", "--gpus", "1", "--no-start", "-b", "me", "../me")
    assert added.returncode == 0, added.stderr
    records = {r["id"]: r for r in runs(repo)}
    assert [records[i]["state"] for i in ("keep-1", "keep-2")] == ["running", "running"]
    yielded = [r for r in records.values() if r["sweep"] == "yield" and r["state"] in ("preempted", "queued")]
    assert len(yielded) == 1, records
    [victim] = yielded
    # back in line (or already started again on the GPU the other yielding run left when it ended)
    assert wait_for(lambda: (lambda r: r["state"] == "queued" or r["restarts"] == 1)(
        {r["id"]: r for r in runs(repo)}[victim["id"]]), 120), runs(repo)
    repo.ok("remove", "--force", "../me")  # its GPU frees: the preempted run goes on where it left off
    assert wait_for(lambda: {r["id"]: r for r in runs(repo)}[victim["id"]]["state"] == "succeeded", 180)
    record = {r["id"]: r for r in runs(repo)}[victim["id"]]
    assert record["restarts"] == 1 and record["lost_s"] > 0
    log = repo.ok("logs", victim["id"]).stdout
    assert "saved " in log and "start 0 restarts=0" in log and re.search(r"start [1-9] restarts=1", log), log
    assert [line for line in log.splitlines() if line.startswith("unit ")] == [f"unit {n}" for n in range(1, 31)]
    stop_all(repo)


def test_time_slices_share_one_gpu_and_lose_no_work(repo, monkeypatch):
    """One GPU, two preemptible runs of 6 s of work with a 2 s slice: they take turns, each is
    preempted at least once, both finish, and each unit of work is done once."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    done = repo.gs("sweep", "slice", "-p", "n=1,2", "--gpus", "1", "--time-slice", "2s", "--", "sh", "-c", COUNTING)
    assert done.returncode == 0, done.stderr
    records = runs(repo)
    assert [r["state"] for r in records] == ["succeeded", "succeeded"]
    assert all(r["restarts"] >= 1 for r in records), records
    for record in records:
        log = repo.ok("logs", record["id"]).stdout
        assert [line for line in log.splitlines() if line.startswith("unit ")] == [f"unit {n}" for n in range(1, 7)], log
    assert "its time slice" in done.stderr


def test_a_run_that_is_not_preemptible_is_never_preempted(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    repo.ok("run", "--detach", "--gpus", "1", "--", "sleep", "30")
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 30)
    refused = repo.gs("add", "--preempt", "--wait=3", "--gpus", "1", "--no-start", "-b", "me", "../me")
    assert refused.returncode != 0 and not (repo.path.parent / "me").exists()
    assert runs(repo)[0]["state"] == "running" and runs(repo)[0]["restarts"] == 0
    stop_all(repo)


def test_a_reservation_shows_in_gpus_and_in_the_reason_of_a_run_it_holds_back(repo, monkeypatch):
    """3 GPUs: a worktree holds one, a run another; `add --wait --gpus 2` holds the free one back
    for itself (`gpus` says so), and a 1-GPU run queued after it waits, saying why; once the
    running run ends, the add gets two GPUs and the queued run waits on."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "3")
    repo.ok("add", "--no-start", "--gpus", "1", "-b", "hold", "../hold")
    repo.ok("run", "--detach", "--gpus", "1", "--", "sleep", "120")  # until it is stopped below
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 30)
    adding = subprocess.Popen(["git-gpuspace", "add", "--wait", "--gpus", "2", "--no-start", "-b", "big", "../big"],
                              cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    big = str(repo.path.parent / "big")
    try:
        assert wait_for(lambda: any(big in (r["reserved_for"] or "") for r in json.loads(repo.ok("gpus", "--json").stdout)), 30)
        assert f"reserved for root: {big}" in repo.ok("gpus").stdout
        repo.ok("run", "--detach", "--gpus", "1", "--", "true")
        assert wait_for(lambda: (runs(repo)[-1]["reason"] or "").startswith("reservation: 1 GPU held back for"), 30), \
            runs(repo)[-1]
        repo.ok("runs", "stop", "run-1")  # its GPU frees: the add takes it and the one held back
        _, err = adding.communicate(timeout=60)
    finally:
        adding.kill()
    assert adding.returncode == 0, err
    assert runs(repo)[-1]["state"] == "queued"  # the add took the two free GPUs
    repo.ok("remove", "--force", "../big")
    assert wait_for(lambda: runs(repo)[-1]["state"] == "succeeded", 30)


def test_posts_that_are_malformed_stale_or_dead_hold_nothing_back(repo, docker_client, monkeypatch):
    """What waits is posted on the engine, where anyone who can reach it can write: a post that is
    not JSON, asks for absurd counts, is not made anew for minutes, or whose poster is provably
    dead is data that holds no GPU back."""
    from git_gpuspace.engine.claim import this_process
    from git_gpuspace.engine.containers import LABEL_WANT_GPUS, LABEL_WANTS, WANT_PREFIX
    from conftest import fake_gpu_uuids

    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    me = this_process()
    ours = {LABEL_WANT_GPUS: ",".join(fake_gpu_uuids())}  # posted for our GPUs, so weighed
    want = {"key": "/elsewhere/big", "user": "mallory", "repo": "/elsewhere/.git", "count": 1, "priority": 9,
            "since": 0.0, "preempt": True, "interactive": True, "gpus": []}
    stale = {**me.labels(), **ours, "gpuspace.claim.created": "2026-01-01T00:00:00+00:00"}
    dead = {**me.labels(), **ours, "gpuspace.claim.pid": "4194000", "gpuspace.claim.start": "1"}
    posts = {"garbage": ({**me.labels(), **ours, LABEL_WANTS: "{not json"}),
             "absurd": ({**me.labels(), **ours, LABEL_WANTS: json.dumps([{**want, "count": 10**9}])}),
             "elsewhere": ({**me.labels(), LABEL_WANT_GPUS: "GPU-elsewhere", LABEL_WANTS: json.dumps([want])}),
             "stale": ({**stale, LABEL_WANTS: json.dumps([want])}),
             "dead": ({**dead, LABEL_WANTS: json.dumps([want])})}
    made = [docker_client.containers.create(TEST_IMAGE, ["true"], name=f"{WANT_PREFIX}test-{name}-{me.pid}",
                                            labels=labels, network_mode="none") for name, labels in posts.items()]
    try:
        started = subprocess.run(["git-gpuspace", "run", "--gpus", "1", "--", "true"], cwd=repo.path,
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        assert all(r["reserved_for"] is None for r in json.loads(repo.ok("gpus", "--json").stdout))
        names = {c.name for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_WANTS})}
        assert f"{WANT_PREFIX}test-dead-{me.pid}" not in names  # a provably dead poster's post is removed
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - removed by the dispatcher already
                pass


def test_a_run_of_higher_priority_with_preempt_takes_the_gpu_of_a_lower_one(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    # 30 units of half a second: it is still at work when the urgent run comes, on a loaded machine too
    repo.ok("run", "--detach", "--gpus", "1", "--preemptible", "--", "sh", "-c", counting(30, 0.5))
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 30)
    equal = repo.gs("run", "--detach", "--gpus", "1", "--preempt", "--", "true")  # same priority: it waits
    assert equal.returncode == 0
    time.sleep(3)
    assert [r["state"] for r in runs(repo)] == ["running", "queued"]
    urgent = subprocess.run(["git-gpuspace", "run", "--gpus", "1", "--priority", "5", "--preempt", "--", "echo", "urgent"],
                            cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert urgent.returncode == 0, urgent.stderr
    assert wait_for(lambda: all(r["state"] == "succeeded" for r in runs(repo)), 90), runs(repo)
    first = runs(repo)[0]
    assert first["restarts"] >= 1
    log = repo.ok("logs", first["id"]).stdout
    assert [line for line in log.splitlines() if line.startswith("unit ")] == [f"unit {n}" for n in range(1, 31)], log


def test_a_run_with_a_higher_priority_goes_ahead_of_an_earlier_one(repo, monkeypatch):
    """One GPU, held: run-1 queued, then run-2 with --priority 5. run-2 is first in line (it
    says what it waits for, run-1 that it is behind) and starts first when the GPU frees."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    repo.ok("add", "--no-start", "--gpus", "1", "-b", "hold", "../hold")
    repo.ok("run", "--detach", "--gpus", "1", "--", "true")
    repo.ok("run", "--detach", "--gpus", "1", "--priority", "5", "--", "true")
    reasons = lambda: [r["reason"] or "" for r in runs(repo)]  # noqa: E731
    assert wait_for(lambda: reasons()[0] == "waiting: behind an earlier run"
                    and reasons()[1].startswith("waiting for 1 GPU: GPU 0 held by "), 30), reasons()
    repo.ok("remove", "--force", "../hold")
    assert wait_for(lambda: [r["state"] for r in runs(repo)] == ["succeeded", "succeeded"], 60), runs(repo)
    earlier, urgent = runs(repo)
    assert moment(urgent["started"]) < moment(earlier["started"]), (earlier, urgent)
