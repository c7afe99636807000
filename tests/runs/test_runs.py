"""Runs and sweeps on the real engine: pinned commits, own worktrees and GPUs, a queue that
survives its dispatcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime

import pytest

from conftest import overlap, wait_for


def runs(repo, *args):
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def test_run_is_pinned_to_a_snapshot_and_exits_with_the_commands_code(repo, tmp_path):
    (repo.path / "file0.txt").write_text("changed, not committed\n")
    (repo.path / "notes.txt").write_text("untracked\n")
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    status_before = repo.git("status", "--porcelain").stdout
    result = repo.gs("run", "--gpus", "1", "--", "sh", "-c",
                     "cat file0.txt; ls notes.txt 2>&1; echo \"run=$GPUSPACE_RUN gpu=$NVIDIA_VISIBLE_DEVICES\"; "
                     "echo loss=0.25; exit 3")
    assert result.returncode == 1, result.stderr
    assert "untracked files are not in the run: notes.txt" in result.stderr
    assert "a snapshot of uncommitted changes" in result.stderr
    [record] = runs(repo)
    assert record["state"] == "failed" and record["exit_code"] == 3
    assert set(record) >= {"id", "sweep", "params", "commit", "state", "exit_code", "started", "finished",
                           "duration_s", "gpus", "worktree", "data_dir", "metrics"}
    assert record["metrics"] == {"loss": 0.25}
    log = repo.ok("logs", record["id"]).stdout
    assert "changed, not committed" in log and "No such file" in log
    assert f"run={record['id']} gpu={record['gpus'][0]}" in log
    # the user's worktree, index and branch are untouched; the snapshot's parent is HEAD, kept by a ref
    assert repo.git("rev-parse", "HEAD").stdout.strip() == head
    assert repo.git("status", "--porcelain").stdout == status_before
    assert repo.git("rev-parse", f"refs/gpuspace/runs/{record['id']}").stdout.strip() == record["commit"]
    assert repo.git("rev-parse", f"{record['commit']}^").stdout.strip() == head
    # an ordinary detached worktree, where a person finds it
    listed = repo.git("worktree", "list", "--porcelain").stdout
    assert f"worktree {record['worktree']}\nHEAD {record['commit']}\ndetached" in listed
    assert repo.containers() == []  # finished: its container is gone, its GPU free

    passed = repo.gs("run", "--gpus", "none", "--commit", "HEAD", "--", "true")
    assert passed.returncode == 0, passed.stderr
    assert runs(repo, "--state", "succeeded")[0]["commit"] == head


def test_a_staged_only_change_is_pinned_too(repo):
    """A change that is staged, with the worktree equal to the index, goes in the snapshot."""
    (repo.path / "file0.txt").write_text("staged, not committed\n")
    repo.git("add", "file0.txt")
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    result = repo.gs("run", "--gpus", "none", "--", "cat", "file0.txt")
    assert result.returncode == 0, result.stderr
    [record] = runs(repo)
    assert repo.ok("logs", record["id"]).stdout == "staged, not committed\n"
    assert record["snapshot"] is True and record["commit"] != head
    assert repo.git("rev-parse", f"{record['commit']}^").stdout.strip() == head
    assert repo.git("status", "--porcelain").stdout == "M  file0.txt\n"  # the index is left as it was


def test_a_changed_executable_script_stays_executable_in_the_snapshot(repo):
    """As `git stash create`: a tracked script's mode goes in with its uncommitted change."""
    (repo.path / "x.sh").write_text("#!/bin/sh\necho committed\n")
    (repo.path / "x.sh").chmod(0o755)
    repo.git("add", "x.sh")
    repo.git("commit", "-q", "-m", "a script")
    (repo.path / "x.sh").write_text("#!/bin/sh\necho changed, not committed\n")
    result = repo.gs("run", "--gpus", "none", "--", "./x.sh")
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = runs(repo)
    assert record["snapshot"] is True and record["exit_code"] == 0
    assert repo.ok("logs", record["id"]).stdout == "changed, not committed\n"


def test_sweep_of_a_2x3_grid_on_two_gpus(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    result = repo.gs("sweep", "grid", "-p", "lr=0.1,0.01", "-p", "batch=1,2,3", "--gpus", "1", "--",
                     "sh", "-c", "sleep 1; echo val_loss={lr}{batch}; echo ran $GPUSPACE_PARAM_LR $GPUSPACE_PARAM_BATCH")
    assert result.returncode == 0, result.stderr
    records = runs(repo, "--sweep", "grid")
    assert sorted((r["params"]["lr"], r["params"]["batch"]) for r in records) == [
        (lr, batch) for lr in ("0.01", "0.1") for batch in ("1", "2", "3")]
    assert all(r["state"] == "succeeded" for r in records)
    assert overlap(records) <= 2  # two GPUs, one each
    for record in records:  # every run exactly once
        log = repo.ok("logs", record["id"]).stdout
        assert log.count("ran ") == 1 and f"ran {record['params']['lr']} {record['params']['batch']}" in log
    ordered = runs(repo, "--sweep", "grid", "--sort=-val_loss")
    assert [r["metrics"]["val_loss"] for r in ordered] == sorted((r["metrics"]["val_loss"] for r in records), reverse=True)
    table = repo.ok("runs", "--sweep", "grid", "--sort", "val_loss").stdout
    assert table.splitlines()[0].split()[:4] == ["RUN", "SWEEP", "PARAMS", "STATE"] and "VAL_LOSS" in table


def test_max_parallel_and_main_moving_mid_sweep(repo):
    sweep = subprocess.Popen(["git-gpuspace", "sweep", "pin", "-p", "n=1,2,3", "--max-parallel", "1", "--gpus", "none",
                              "--", "sh", "-c", "sleep 1; cat file1.txt; echo n={n}"],
                             cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    (repo.path / "file1.txt").write_text("moved on\n")
    repo.git("commit", "-qam", "main moves")
    assert sweep.wait(timeout=120) == 0, sweep.stderr.read()
    records = runs(repo, "--sweep", "pin")
    assert overlap(records) == 1
    for record in records:
        assert repo.ok("logs", record["id"]).stdout.startswith("content 1\n")


def test_dispatcher_killed_then_resumed_runs_each_exactly_once(repo):
    sweep = subprocess.Popen(["git-gpuspace", "sweep", "kill", "-p", "n=1,2,3,4", "--max-parallel", "1", "--gpus", "1",
                              "--", "sh", "-c", "echo start {n}; sleep 2; echo end {n}"],
                             cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    time.sleep(0.5)
    for command in ("runs", "status"):
        listed = repo.gs(command)
        assert "no dispatcher is running" in listed.stderr and "runs resume" in listed.stderr
    repo.ok("prune")  # reconcile leaves a run's container to the dispatcher
    assert len(repo.containers()) == 1
    resumed = repo.gs("runs", "resume")
    assert resumed.returncode == 0, resumed.stderr
    records = runs(repo, "--sweep", "kill")
    assert [r["state"] for r in records] == ["succeeded"] * 4
    for record in records:
        log = repo.ok("logs", record["id"]).stdout
        assert log.count("start") == 1 and log.count("end") == 1, log


def test_a_failing_run_is_recorded_and_the_rest_go_on(repo):
    result = repo.gs("sweep", "mixed", "-p", "code=0,5,0", "--gpus", "none", "--", "sh", "-c", "exit {code}")
    assert result.returncode == 1
    assert [(r["state"], r["exit_code"]) for r in runs(repo)] == [("succeeded", 0), ("failed", 5), ("succeeded", 0)]


@pytest.mark.parametrize("arguments, message", [
    (("sweep", "s", "-p", "lr=1", "--", "echo", "{lr}", "{bs}"), "uses {bs}, but no -p bs="),
    (("sweep", "s", "-p", "lr=1", "--", "sh", "-c", "train --lr {lr} --bs {bs}"), "uses {bs}, but no -p bs="),
    (("sweep", "s", "-p", "lr=", "--", "echo", "{lr}"), "axis 'lr' has an empty value"),
    (("sweep", "s", "-p", "lr=1,,2", "--", "echo", "{lr}"), "axis 'lr' has an empty value"),
    (("sweep", "s", "--", "echo"), "a sweep needs at least one axis"),
    (("sweep", "s", "-p", "lr=1,2", "--random", "3", "--", "echo", "{lr}"), "--random 3 is not between 1 and the grid's 2"),
    (("sweep", "s", "--grid-file", "GRID", "--", "echo", "{lr}"), "does not parse: Expected '=' after a key in a key/value pair (at line 2, column 5)"),
    (("sweep", "Bad Name", "-p", "lr=1", "--", "echo", "{lr}"), "invalid sweep name"),
    (("sweep", "s\n", "-p", "lr=1", "--", "echo", "{lr}"), "invalid sweep name"),
    (("sweep", "s", "--grid-file", "NEWLINE-GRID", "--", "echo", "{lr}"), "axes.'lr\\n' is not a parameter name"),
    (("sweep", "s", "-p", "lr=1", "--max-parallel", "0", "--", "echo", "{lr}"), "--max-parallel must be at least 1"),
    (("run", "--gpus", "9", "--", "true"), "asks for 9 GPUs, but this host has 4"),
    (("run", "--commit", "no-such-thing", "--", "true"), "invalid reference: no-such-thing"),
    (("run", "--", "echo", "{lr}"), "uses {lr}, but no -p lr="),
    (("run",), "give the command after --"),
    (("sweep", "resume", "nope"), "no sweep 'nope'"),
])
def test_bad_input_is_one_line_and_queues_nothing(repo, tmp_path, arguments, message):
    (tmp_path / "grid.toml").write_text("[axes]\nlr  [1, 2]\n")
    (tmp_path / "newline.toml").write_text('[axes]\n"lr\\n" = [1, 2]\n')  # a key git-gpuspace cannot name
    files = {"GRID": str(tmp_path / "grid.toml"), "NEWLINE-GRID": str(tmp_path / "newline.toml")}
    before = repo.snapshot(tmp_path / "worktrees")
    result = repo.gs(*[files.get(part, part) for part in arguments])
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert repo.snapshot(tmp_path / "worktrees") == before
    assert not (repo.common_dir / "gpuspace-runs.db").exists()  # no run store made
    assert repo.git("for-each-ref", "refs/gpuspace").stdout == ""


def test_duplicate_sweep_name_needs_append(repo):
    repo.ok("sweep", "dup", "-p", "n=1", "--gpus", "none", "--", "echo", "{n}")
    again = repo.gs("sweep", "dup", "-p", "n=2", "--gpus", "none", "--", "echo", "{n}")
    assert again.returncode == 2 and "a sweep named 'dup' exists" in again.stderr
    repo.ok("sweep", "dup", "--append", "-p", "n=2", "--gpus", "none", "--", "echo", "{n}")
    assert [r["params"]["n"] for r in runs(repo, "--sweep", "dup")] == ["1", "2"]
    assert os.path.isdir(runs(repo)[1]["worktree"])


def test_stop_retry_clean_and_retries(repo, tmp_path):
    slow = subprocess.Popen(["git-gpuspace", "sweep", "ctl", "-p", "n=1,2,3", "--max-parallel", "1", "--gpus", "1",
                             "--", "sh", "-c", "echo go {n}; sleep 60"],
                            cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    stopped = repo.gs("runs", "stop", "--sweep", "ctl", "--all")
    assert stopped.returncode == 0, stopped.stderr
    assert slow.wait(timeout=60) == 1
    records = runs(repo, "--sweep", "ctl")
    assert sorted(r["state"] for r in records) == ["stopped"] * 3
    assert repo.containers() == []

    # a failing run with --retries runs again, up to N more times
    flaky = repo.gs("run", "--gpus", "none", "--retries", "2", "--", "sh", "-c",
                    "echo try >> /data/tries; [ $(wc -l < /data/tries) -ge 3 ]")
    assert flaky.returncode == 0, flaky.stderr
    assert flaky.stderr.count("queued again") == 2

    # retry a stopped run by id; clean removes finished runs' worktrees and refs
    first = records[0]["id"]
    repo.git("commit", "--allow-empty", "-qm", "noise")
    retried = subprocess.Popen(["git-gpuspace", "runs", "retry", first], cwd=repo.path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    repo.ok("runs", "stop", first)
    assert retried.wait(timeout=60) == 1
    worktree = records[0]["worktree"]
    cleaned = repo.ok("runs", "clean", "--sweep", "ctl", "--purge")
    assert "Removed 3 finished runs and their data" in cleaned.stdout
    assert not os.path.exists(worktree) and not os.path.exists(records[0]["data_dir"])
    assert "refs/gpuspace/runs/ctl" not in repo.git("for-each-ref", "refs/gpuspace").stdout
    # their records stay, cleaned: the table of results outlives the worktrees
    assert [(r["sweep"], r["cleaned"]) for r in runs(repo)] == [("ctl", True)] * 3 + [(None, False)]
    csv_text = repo.ok("runs", "--csv").stdout
    assert csv_text.splitlines()[0].startswith("run,sweep,params,state")
    shown = json.loads(repo.ok("runs", "show", runs(repo)[-1]["id"]).stdout)
    assert shown["state"] == "succeeded"
    repo.ok("runs", "clean")
    repo.ok("runs", "forget")  # the cleaned records go
    repo.ok("run", "--gpus", "none", "--", "true")
    assert [r["id"] for r in runs(repo)] == ["run-2"]  # an id is never given twice: data dirs and refs stay apart


def test_a_run_whose_container_vanished_is_interrupted(repo):
    sweep = subprocess.Popen(["git-gpuspace", "run", "--gpus", "none", "--", "sleep", "60"],
                             cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    [container] = repo.containers()
    container.kill()  # as the engine's death would
    assert sweep.wait(timeout=60) == 1
    [record] = runs(repo)
    assert record["state"] == "failed" and record["reason"] == "interrupted"
    assert record["exit_code"] is None  # not the kill's 137: the command never ended


def test_status_summarizes_runs_per_sweep(repo):
    repo.gs("sweep", "sum", "-p", "code=0,1", "--gpus", "none", "--", "sh", "-c", "exit {code}")
    status = repo.ok("status").stdout
    assert "sweep sum: 1 succeeded, 1 failed" in status
    assert "worktrees/runs/" not in status
    assert all("/worktrees/runs/" not in record["path"] for record in repo.status())


def test_grid_file_and_random_samples(repo, tmp_path):
    (tmp_path / "grid.toml").write_text('[axes]\nlr = ["1e-3", "3e-4"]\nbatch = [32, 64]\n\n'
                                        '[[sets]]\nlr = "1e-2"\nbatch = 8\n')
    repo.ok("sweep", "file", "--grid-file", str(tmp_path / "grid.toml"), "--gpus", "none", "--", "echo", "{lr}", "{batch}")
    assert sorted((r["params"]["lr"], r["params"]["batch"]) for r in runs(repo, "--sweep", "file")) == [
        ("1e-2", "8"), ("1e-3", "32"), ("1e-3", "64"), ("3e-4", "32"), ("3e-4", "64")]
    drawn = []
    for name in ("r1", "r2"):
        repo.ok("sweep", name, "-p", "a=1,2,3,4", "-p", "b=5,6", "--random", "3", "--seed", "7", "--gpus", "none",
                "--", "echo", "{a}", "{b}")
        drawn.append([r["params"] for r in runs(repo, "--sweep", name)])
    assert drawn[0] == drawn[1] and len(drawn[0]) == 3  # the same seed draws the same sets


def test_runs_per_gpu_packs_a_sweep_and_nothing_else(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    repo.ok("add", "-b", "holder", str(tmp_path / "holder"), "--gpus", "1")  # one GPU is a binding's
    result = repo.gs("sweep", "packed", "-p", "n=1,2,3", "--runs-per-gpu", "2", "--gpus", "1", "--",
                     "sh", "-c", "sleep 2; echo n={n}")
    assert result.returncode == 0, result.stderr
    records = runs(repo, "--sweep", "packed")
    held = next(r for r in repo.status() if r["branch"] == "holder")["gpus"][0]["uuid"]
    assert all(r["gpus"] != [held] for r in records)  # never on the binding's GPU
    assert overlap(records) == 2  # two packed on the free GPU, the third after


def test_packed_runs_start_in_submission_order(repo, tmp_path, monkeypatch):
    """2 GPUs, one a binding's: a packed sweep's 2-GPU run waits, and the 1-GPU run appended
    after it waits behind it instead of taking the free GPU."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    repo.ok("add", "--no-start", "-b", "holder", str(tmp_path / "holder"), "--gpus", "1")
    repo.ok("sweep", "pk", "-p", "n=1", "--runs-per-gpu", "2", "--gpus", "2", "--detach", "--", "true")
    repo.ok("sweep", "pk", "--append", "-p", "n=2", "--gpus", "1", "--detach", "--", "true")
    reasons = lambda: [r["reason"] or "" for r in runs(repo, "--sweep", "pk")]  # noqa: E731
    assert wait_for(lambda: reasons()[0].startswith("waiting for 2 GPUs: ")
                    and reasons()[1] == "waiting: behind an earlier run", 30), \
        [(r["id"], r["state"], r["reason"]) for r in runs(repo)]
    time.sleep(1)  # a turn or two of the dispatcher: the 1-GPU run still waits
    assert [r["state"] for r in runs(repo, "--sweep", "pk")] == ["queued", "queued"]
    repo.ok("remove", "--force", str(tmp_path / "holder"))
    assert wait_for(lambda: [r["state"] for r in runs(repo, "--sweep", "pk")] == ["succeeded"] * 2, 60), \
        [(r["id"], r["state"], r["reason"]) for r in runs(repo)]
    first, second = runs(repo, "--sweep", "pk")
    assert len(first["gpus"]) == 2
    assert datetime.fromisoformat(first["started"]) <= datetime.fromisoformat(second["started"])


def test_a_gpu_busy_outside_gpuspace_is_not_handed_out(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "2")
    monkeypatch.setenv("FAKE_GPU_BUSY", "0")
    gpus = json.loads(repo.ok("gpus", "--json").stdout)
    assert "outside gpuspace" in gpus[0]["holders"][0]["worktree"] and gpus[1]["holders"] == []
    repo.ok("sweep", "avoid", "-p", "n=1,2", "--gpus", "1", "--", "echo", "{n}")
    assert {uuid for r in runs(repo) for uuid in r["gpus"]} == {gpus[1]["uuid"]}
    refused = repo.gs("add", "-b", "x", "../x", "--gpus", "0,")
    assert refused.returncode == 1 and "a process outside gpuspace computes on it" in refused.stderr


def test_add_wait_waits_for_a_gpu_in_the_queue(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    busy = subprocess.Popen(["git-gpuspace", "run", "--gpus", "1", "--", "sleep", "60"], cwd=repo.path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    refused = repo.gs("add", "-b", "now", str(tmp_path / "now"), "--gpus", "1")
    assert refused.returncode == 1 and not (tmp_path / "now").exists()
    short = repo.gs("add", "-b", "short", str(tmp_path / "short"), "--gpus", "1", "--wait=1")
    assert short.returncode == 1 and "waiting for GPUs" in short.stderr and not (tmp_path / "short").exists()
    waiting = subprocess.Popen(["git-gpuspace", "add", "-b", "later", str(tmp_path / "later"), "--gpus", "1", "--wait"],
                               cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    repo.ok("runs", "stop", runs(repo)[0]["id"])  # the GPU frees: the waiting add gets it
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert busy.wait(timeout=30) == 1  # stopped


def test_detach_hands_the_queue_to_a_background_dispatcher(repo):
    result = repo.gs("sweep", "bg", "-p", "n=1,2", "--gpus", "none", "--detach", "--", "sh", "-c", "sleep 1; echo {n}")
    assert result.returncode == 0 and "Dispatching in the background" in result.stderr
    assert wait_for(lambda: [r["state"] for r in runs(repo, "--sweep", "bg")] == ["succeeded"] * 2, 60)
    again = repo.gs("sweep", "resume", "bg")  # nothing left to dispatch: it says how the sweep went
    assert again.returncode == 0 and "2 succeeded" in again.stderr, again.stderr


def test_progress_is_live_on_a_terminal_and_plain_lines_in_a_pipe(repo, tmp_path):
    typescript = tmp_path / "typescript"
    subprocess.run(["script", "-qec", "git-gpuspace sweep tty -p n=1,2 --gpus 1 -- sh -c 'sleep 1; echo {n}'",
                    str(typescript)], cwd=repo.path, check=True, capture_output=True, timeout=120)
    screen = typescript.read_text(errors="replace")
    assert "\x1b[" in screen and "running" in screen and "queued, " in screen
    piped = repo.gs("sweep", "pipe", "-p", "n=1,2", "--gpus", "1", "--", "sh", "-c", "sleep 1; echo {n}")
    assert "\x1b[" not in piped.stderr
    events = sorted(tuple(line.split()[:2]) for line in piped.stderr.splitlines() if line.startswith("pipe-"))
    assert events == [("pipe-1", "started"), ("pipe-1", "succeeded"), ("pipe-2", "started"), ("pipe-2", "succeeded")]


def test_runs_killed_with_the_engine_are_interrupted_and_dispatching_goes_on(repo, private_engine):
    env = {**os.environ, "DOCKER_HOST": private_engine.host}
    sweep = subprocess.Popen(["git-gpuspace", "sweep", "eng", "-p", "n=1,2", "--gpus", "1", "--max-parallel", "1",
                              "--", "sh", "-c", "sleep 30; : {n}"],
                             cwd=repo.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    private_engine.stop()  # the engine dies, and its containers with it
    time.sleep(2)
    private_engine.start()
    assert wait_for(lambda: [r["state"] for r in runs(repo)] == ["failed", "running"], 60), \
        [(r["state"], r["reason"], r["exit_code"]) for r in runs(repo)]
    assert runs(repo)[0]["reason"] == "interrupted"
    repo.gs("runs", "stop", "--sweep", "eng", "--all", env={"DOCKER_HOST": private_engine.host})
    assert sweep.wait(timeout=60) == 1
    assert "waiting for it" in sweep.stderr.read()


def test_a_run_ends_with_its_command_and_nothing_of_it_runs_on(repo, monkeypatch):
    """The dispatcher goes by the exit file the wrapper writes when the command ends, ahead of
    the engine; a command that writes it early is killed before its GPU is used again."""
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    began, began_wall = time.monotonic(), time.time()
    result = repo.gs("sweep", "early", "-p", "n=1,2", "--gpus", "1", "--", "sh", "-c",
                     "if [ {n} = 1 ]; then echo 7 > /data/.gpuspace/exit; sleep 120; fi; echo second ran")
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - began < 60
    first, second = runs(repo, "--sweep", "early")
    assert (first["state"], first["exit_code"]) == ("failed", 7)  # what it wrote is its exit code
    assert second["state"] == "succeeded" and second["gpus"] == first["gpus"]
    assert repo.containers() == []  # the one still sleeping was killed and removed
    # ... before the second started on its GPU: never two holders
    events = repo.client.events(since=int(began_wall) - 1, until=int(time.time()) + 1, decode=True,
                                filters={"label": f"gpuspace.repo={repo.common_dir}", "type": "container"})
    moments = {(e["Actor"]["Attributes"].get("gpuspace.run"), e["status"]): e["timeNano"] for e in events}
    assert moments[("early-1", "die")] < moments[("early-2", "start")], moments


def test_a_finished_runs_container_left_by_a_dead_dispatcher_frees_its_gpu(repo, monkeypatch):
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    killed = repo.gs("run", "--gpus", "1", "--", "true",
                     env={"GPUSPACE_FAULT_POINT": "before-reap", "GPUSPACE_FAULT_ACTION": "kill"})
    assert killed.returncode == -signal.SIGKILL
    [record] = runs(repo)
    assert record["state"] == "succeeded"
    assert len(repo.containers()) == 1  # recorded, not yet removed
    again = repo.gs("run", "--gpus", "1", "--", "true")
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in runs(repo)] == ["succeeded", "succeeded"]
    assert repo.containers() == []

