"""The host-wide GPU claim is a named container on the engine: no local user can plant, block or
turn it, a dead holder's claim is taken over at once, a live one is named, and it is no binding."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, TEST_IMAGE, fake_gpu_uuids
from git_gpuspace.engine.claim import PREFIX, Holder, provably_dead, start_time, this_process
from git_gpuspace.engine.containers import CLAIM_NAME
from users import make_user

# Holds the claim until its stdin closes; says so on stdout first.
HOLDER = """
import sys
from git_gpuspace.engine.containers import Engine
from git_gpuspace.engine.claim import engine_claim
with engine_claim(Engine(), sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def claim_holder(image: str = TEST_IMAGE, user=None):
    """A live process holding the claim (after any other holder on this engine lets go); as
    `user` (tests/users.py) when given."""
    argv, options = [sys.executable, "-c", HOLDER, image], dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if user is None:
        holder = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "GPUSPACE_LOCK_TIMEOUT": "60"}, **options)
    else:
        holder = user.popen(*argv, cwd=ROOT, env={"GPUSPACE_LOCK_TIMEOUT": "60", "PYTHONPATH": str(ROOT)}, **options)
    try:
        assert holder.stdout.readline() == "held\n", "the holder never took the claim"
        yield holder
    finally:
        if holder.poll() is None:
            holder.stdin.close()  # its release: the claim goes with the `with`
            try:
                holder.wait(timeout=20)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()


def claim_of(docker_client, pid: int):
    """The claim container while `pid` holds it."""
    container = docker_client.containers.get(CLAIM_NAME)
    assert container.labels[PREFIX + "pid"] == str(pid)
    return container


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error: ")]


@pytest.mark.parametrize("mode,target_exists", [(0o700, True), (0o755, False)])
def test_a_planted_lock_dir_and_symlink_of_another_user_change_nothing(repo, tmp_path, docker_client, mode,
                                                                       target_exists):
    """The attack of issue 24: a user outside the docker group makes `$TMPDIR/git-gpuspace` first
    (0700 made every `add` fail) with `gpu-claims.lock` -> a file of the victim's (made 0666)."""
    attacker = make_user("gpuspace-noengine", docker=False)
    shared_tmp = Path(tempfile.mkdtemp(prefix="gpuspace-tmp-"))  # stands in for /tmp: 1777
    try:
        shared_tmp.chmod(0o1777)
        target = tmp_path / "bash_aliases"  # root's
        if target_exists:
            target.write_text("alias ls='ls --color'\n")
            target.chmod(0o644)
        planted = shared_tmp / "git-gpuspace"
        for step in (["mkdir", "-m", f"{mode:o}", planted], ["ln", "-s", target, planted / "gpu-claims.lock"]):
            made = attacker.run(*step, cwd=shared_tmp)
            assert made.returncode == 0, made.stderr
        # The engine is out of the attacker's reach, so is the claim.
        assert "permission denied on the Docker socket" in attacker.gpuspace("gpus", cwd=shared_tmp).stderr

        result = repo.gs("add", "-b", "v1", str(tmp_path / "v1"), "--gpus", "1", env={"TMPDIR": str(shared_tmp)})
        assert result.returncode == 0, result.stderr
        assert [r["state"] for r in repo.status() if r["branch"] == "v1"] == ["running"]
        if target_exists:
            assert target.stat().st_mode & 0o7777 == 0o644 and target.read_text() == "alias ls='ls --color'\n"
        else:
            assert not os.path.lexists(target)
        assert os.listdir(planted) == ["gpu-claims.lock"] and os.readlink(planted / "gpu-claims.lock") == str(target)
    finally:
        subprocess.run(["rm", "-rf", str(shared_tmp)], check=False)


def test_a_live_holder_makes_add_give_up_naming_it_and_nothing_is_made(repo, tmp_path, docker_client):
    worktrees_dir = tmp_path / "wts"
    before = repo.snapshot(worktrees_dir)
    with claim_holder() as holder:
        claim = claim_of(docker_client, holder.pid)
        # never started, no network, no restart policy; nothing of a binding's
        assert claim.status == "created"
        assert claim.attrs["HostConfig"]["NetworkMode"] == "none"
        assert claim.attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
        assert not claim.attrs["HostConfig"].get("DeviceRequests") and not claim.attrs["Mounts"]
        assert "gpuspace.repo" not in claim.labels and claim.labels[PREFIX + "user"] == "root"
        assert claim.labels[PREFIX + "start"] == start_time(holder.pid)
        started = time.monotonic()
        result = repo.gs("add", "-b", "x", str(worktrees_dir / "x"), "--gpus", "1", env={"GPUSPACE_LOCK_TIMEOUT": "1"})
        elapsed = time.monotonic() - started
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert 1 <= elapsed < 8, elapsed
        assert "Traceback" not in result.stderr
        [error] = error_lines(result)
        assert "timed out after 1 s waiting for the GPU claim, held by " in error
        assert f"pid {holder.pid} (root: " in error and " UTC (" in error
        assert f"hint: wait for that command to finish, or stop it; if it is gone, `docker rm {CLAIM_NAME}`" \
            in result.stderr
        assert repo.snapshot(worktrees_dir) == before
        assert not (worktrees_dir / "x").exists()
    # released with the holder's `with`: the same add now goes through
    with pytest.raises(Exception):
        docker_client.containers.get(claim.id)
    added = repo.ok("add", "-b", "x", str(worktrees_dir / "x"), "--gpus", "1")
    assert [r["state"] for r in repo.status() if r["branch"] == "x"] == ["running"], added.stderr


def test_a_holder_killed_with_sigkill_is_taken_over_at_once(repo, tmp_path, docker_client):
    with claim_holder() as holder:
        stale = claim_of(docker_client, holder.pid)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    # Were a dead holder's claim waited for, this would fail after 5 s.
    result = repo.gs("add", "-b", "after", str(tmp_path / "after"), "--gpus", "1", env={"GPUSPACE_LOCK_TIMEOUT": "5"})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5, elapsed
    with pytest.raises(Exception):
        docker_client.containers.get(stale.id)


def test_two_concurrent_adds_for_the_one_gpu_give_it_to_one(repo, other_repo, tmp_path, monkeypatch):
    """Two repos (one repo's adds queue on its own lock already) add at once: both are held at a
    gate just before they claim, then let go together."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    gate, arrived = tmp_path / "gate", tmp_path / "arrived"
    gate.touch()
    arrived.mkdir()
    env = {**os.environ, "GPUSPACE_FAULT_POINT": "after-data-dir",
           "GPUSPACE_FAULT_ACTION": f"run:touch {arrived}/$PPID; while [ -e {gate} ]; do sleep 0.01; done"}
    adds = [subprocess.Popen(["git-gpuspace", "add", "-b", name, str(tmp_path / name), "--gpus", "1"], cwd=where.path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, where in (("a", repo), ("b", other_repo))]
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(arrived)) < 2 and time.monotonic() < deadline and all(a.poll() is None for a in adds):
            time.sleep(0.02)
        assert len(os.listdir(arrived)) == 2, [a.communicate() for a in adds if a.poll() is not None]
    finally:
        gate.unlink()
    results = [(add.wait(timeout=60), *add.communicate()) for add in adds]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    [(_, _, refused)] = [result for result in results if result[0] == 1]
    assert "GPU 0 is held by" in refused and "Traceback" not in refused
    [uuid] = fake_gpu_uuids()
    holders = [c.name for where in (repo, other_repo) for c in where.containers()
               if uuid in c.labels.get("gpuspace.gpus", "")]
    assert len(holders) == 1


def test_the_claim_is_no_binding_even_from_an_image_with_our_labels(repo, tmp_path, docker_client):
    """`status` and `gpus` never show the claim as a binding or a GPU's holder, nor release it as
    one whose worktree is gone, whatever labels its image (the binding's) carries."""
    [uuid, *_] = fake_gpu_uuids()
    dockerfile = (f"FROM {TEST_IMAGE}\nLABEL gpuspace.repo={repo.common_dir} gpuspace.worktree={tmp_path}/gone "
                  f"gpuspace.gpus={uuid} gpuspace.branch=claimed\n")
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"gpuspace-claimtest:{uuid[4:12]}",
                                          rm=True)
    try:
        repo.ok("add", "-b", "mine", str(tmp_path / "mine"), "--gpus", "none")
        with claim_holder(image.tags[0]) as holder:
            claim = claim_of(docker_client, holder.pid)
            assert claim.labels["gpuspace.repo"] == str(repo.common_dir)  # the engine merged the image's in
            gpus = repo.ok("gpus", "--json")
            status = repo.ok("status", "--json")
            table = repo.ok("gpus")
            for result in (gpus, status, table):
                assert CLAIM_NAME not in result.stdout + result.stderr
            records = json.loads(gpus.stdout)
            assert all(record["holders"] == [] for record in records), records
            assert [r["branch"] for r in json.loads(status.stdout)] == ["main", "mine"], status.stdout
            assert docker_client.containers.get(CLAIM_NAME).id == claim.id  # not released as vanished
    finally:
        docker_client.images.remove(image.id, force=True)


def test_only_a_provably_dead_holder_is_dead():
    here = this_process()
    child = subprocess.Popen(["true"])
    child.wait()
    gone = child.pid  # reaped: no process has it (until the pid wraps)

    def holder(**changes) -> Holder:
        return Holder(**{**vars(here), **changes})

    assert provably_dead(here, here)  # this very process, which asks: a claim of its own it lost track of
    assert provably_dead(holder(boot_id="another-boot"), here)
    assert provably_dead(holder(pid=gone), here)
    assert provably_dead(holder(start=str(int(here.start) + 1)), here)  # the pid now someone else's
    assert provably_dead(holder(pid=1, start=str(int(start_time(1)) + 1)), here)  # init, started at another tick
    # nothing provable: another machine, no machine id, another pid namespace, unknown fields
    assert not provably_dead(holder(machine_id="another", boot_id="another-boot"), here)
    assert not provably_dead(holder(machine_id="", boot_id="another-boot"), here)
    assert not provably_dead(holder(pid_ns="pid:[1]", pid=gone), here)
    assert not provably_dead(holder(pid=0), here)
    assert not provably_dead(holder(boot_id="", pid=gone), here)
    assert not provably_dead(holder(start="", pid=1), here)
    assert not provably_dead(holder(pid=1, start=start_time(1)), here)


@pytest.mark.parametrize("pid", ["0", "-1", "+5", "1e3", " 7", "٣", "99999999999", "4194304", None, 12])
def test_labels_are_read_as_untrusted_data(pid):
    labels = {PREFIX + "pid": pid, PREFIX + "command": "x" * 10_000, PREFIX + "user": ["root"], PREFIX + "created": "soon"}
    holder = Holder.from_labels(labels)
    assert holder.pid == 0 and len(holder.command) == 200 and holder.user == ""
    assert not provably_dead(holder, this_process())  # never os.kill(0) or (-1): a group, or everyone
    described = holder.describe()
    assert described.startswith("an unknown process (unknown user: xxx") and described.endswith("...)")
    assert Holder.from_labels("not a dict") == Holder()
    assert Holder.from_labels({PREFIX + "pid": "42"}).pid == 42
    here = this_process()
    assert Holder.from_labels(here.labels()) == here


def test_queued_runs_wait_for_a_claim_another_user_holds_and_start_once_it_is_let_go(repo):
    """A user (one who can reach the engine) holding the claim used to fail every queued run of others."""
    other = make_user("gpuspace-other", docker=True)
    with claim_holder(user=other):
        sweep = subprocess.Popen(["git-gpuspace", "sweep", "wait", "-p", "n=1,2", "--gpus", "1", "--", "sh", "-c",
                                  "echo {n}"], cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "GPUSPACE_LOCK_TIMEOUT": "0.5"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not repo.gs("runs", "--json").stdout.count('"queued"') == 2:
            time.sleep(0.1)
        time.sleep(2)  # several turns of the dispatcher, each timed out on the claim
        assert sweep.poll() is None
        assert [r["state"] for r in json.loads(repo.ok("runs", "--json").stdout)] == ["queued", "queued"]
    assert sweep.wait(timeout=60) == 0
    said = sweep.stderr.read()
    # said once for this holder, not at every turn (another test's brief hold on the same engine is said too)
    told = [line for line in said.splitlines() if "queued runs wait for the GPU claim, held by pid " in line]
    assert [line for line in told if "(gpuspace-other: " in line] == told[:1], said
    assert [r["state"] for r in json.loads(repo.ok("runs", "--json").stdout)] == ["succeeded", "succeeded"]


def test_a_claim_left_by_this_very_process_is_taken_over(docker_client):
    """A claim whose create answered after the engine went away (or whose removal failed then)
    names this process: it is stale the moment this process asks again."""
    from git_gpuspace.engine.claim import engine_claim, this_process
    from git_gpuspace.engine.containers import Engine

    engine = Engine()
    with engine_claim(engine, TEST_IMAGE):
        pass  # no one else holds it now
    left = engine.create_claim(CLAIM_NAME, TEST_IMAGE, this_process().labels())  # as the lost create left it
    try:
        began = time.monotonic()
        with engine_claim(engine, TEST_IMAGE, timeout=5):
            assert docker_client.containers.get(CLAIM_NAME).id != left
        assert time.monotonic() - began < 3
    finally:
        engine.remove_id(left)
