"""Rough edges of runs, sweeps and verify found by trying the product: a sweep whose script reads
its parameters from the environment, a failing verify line without its log, `stop` on a run's
worktree, and the demo that walks through all of it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from conftest import ROOT, wait_for


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def one_error(result) -> tuple[str, str]:
    """The refusal's error line and hint, checked to be the one error and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error: ")]
    assert len(errors) == 1, result.stderr
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint: ")]
    return errors[0], hints[0] if hints else ""


def test_a_sweep_axis_reaches_the_command_through_the_environment(repo):
    # the README's GPUSPACE_PARAM_<KEY>: an axis the command line does not name is no typo
    named = repo.gs("sweep", "e", "-p", "lr=0.5", "--gpus", "none", "--", "sh", "-c", "echo lr=$GPUSPACE_PARAM_LR")
    assert named.returncode == 0, named.stderr
    assert "never used" not in named.stderr and "note:" not in named.stderr  # the variable is in the command
    [record] = runs(repo, "--sweep", "e")
    assert record["state"] == "succeeded" and record["metrics"] == {"lr": 0.5}
    assert "lr=0.5" in repo.ok("logs", record["id"]).stdout
    # a script that reads it (here: env) and names neither: run all the same, with a one-line note
    unnamed = repo.gs("sweep", "f", "-p", "lr=0.25", "-p", "seed=7", "--gpus", "none", "--", "sh", "-c", "env | sort")
    assert unnamed.returncode == 0, unnamed.stderr
    notes = [line for line in unnamed.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and "$GPUSPACE_PARAM_LR" in notes[0] and "$GPUSPACE_PARAM_SEED" in notes[0], unnamed.stderr
    [record] = runs(repo, "--sweep", "f")
    log = Path(record["data_dir"], "logs", "run.log").read_text()
    assert "GPUSPACE_PARAM_LR=0.25" in log and "GPUSPACE_PARAM_SEED=7" in log
    # what is really wrong is still refused: a {placeholder} no axis gives
    typo = repo.gs("sweep", "g", "-p", "lr=1", "--gpus", "none", "--", "echo", "{lr}", "{bs}")
    assert typo.returncode == 2 and "the command uses {bs}, but no -p bs=" in typo.stderr
    assert [r["sweep"] for r in runs(repo)] == ["e", "f"]


def test_a_failing_verify_line_names_its_log(repo):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--",
            "sh", "-c", "if test -e broken; then echo broken is here; exit 1; fi; echo fine")
    for name in ("v1", "v2", "broken"):
        (repo.path / name).write_text(name + "\n")
        repo.git("add", name)
        repo.git("commit", "-q", "-m", f"add {name}")
    bad = repo.git("rev-parse", "HEAD").stdout.strip()
    result = repo.gs("verify", "HEAD~2..HEAD", "-j", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all("log:" not in line for line in lines if " pass " in line)
    [failed] = [line for line in lines if line.startswith(bad[:7])]
    found = re.fullmatch(rf"{bad[:7]} fail add broken  \(log: (.+)\)", failed)
    assert found, failed
    assert "broken is here" in Path(found.group(1)).read_text()
    note = repo.git("notes", "--ref=gpuspace/tests", "show", bad).stdout
    assert f"log: {found.group(1)}\n" in note  # the note names the same file
    # the verdict again, from the note: still the way to the log
    cached = repo.gs("verify", "HEAD", "--name", "tests")
    assert cached.returncode == 1 and cached.stdout.strip() == f"{bad[:7]} fail (cached) add broken  (log: {found.group(1)})"


def test_start_stop_restart_on_a_runs_worktree_point_to_the_run(repo):
    result = repo.gs("run", "--detach", "--gpus", "none", "--", "sleep", "60")
    assert result.returncode == 0, result.stderr
    [record] = runs(repo)
    run_id, worktree = record["id"], Path(record["worktree"])
    relative = os.path.relpath(worktree, repo.path)  # ../worktrees/runs/<id>, as a user types it
    for verb, target in (("stop", relative), ("start", relative), ("restart", run_id)):
        error, hint = one_error(repo.gs(verb, target))
        assert f"is the worktree of run {run_id}" in error and "not bound" not in error, error
        assert f"git gpuspace runs stop {run_id}" in hint and "bind" not in hint, (verb, hint)
    for verb in (("exec", relative, "--", "true"), ("remove", relative)):  # nor exec, nor remove while it runs
        error, hint = one_error(repo.gs(*verb))
        assert f"is the worktree of run {run_id}" in error and f"runs stop {run_id}" in hint, (verb, error, hint)
    assert worktree.is_dir()
    assert wait_for(lambda: runs(repo)[0]["state"] == "running", 60)
    repo.ok("runs", "stop", run_id)
    assert wait_for(lambda: runs(repo)[0]["state"] == "stopped", 60)
    error, hint = one_error(repo.gs("stop", relative))  # ended: nothing to stop, its worktree to clean
    assert f"run {run_id} (stopped)" in error and "git gpuspace runs clean" in hint
    # a worktree that is no run's is still just not bound
    repo.git("worktree", "add", "-q", "--detach", str(repo.path.parent / "plain"))
    error, hint = one_error(repo.gs("stop", "../plain"))
    assert "is not bound to a container" in error and "git gpuspace bind" in hint


def test_the_demo_runs_end_to_end(tmp_path, docker_client):
    env = {**os.environ, "TMPDIR": str(tmp_path), "GPUSPACE_TEST_ENGINE": "required"}  # the engine is up
    result = subprocess.run([str(ROOT / "scripts" / "demo")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)  # one stream, as on a terminal
    shown = result.stdout
    assert result.returncode == 0, shown
    # two worktrees, each seeing one GPU of its own
    seen = re.findall(r"\$ git gpuspace exec (\w+) -- nvidia-smi -L\n(GPU 0: .*\(UUID: (\S+)\))\n(?!GPU)", shown)
    assert [name for name, _, _ in seen] == ["vit", "resnet"] and seen[0][2] != seen[1][2], shown
    assert "4 succeeded, 0 failed" in shown
    assert re.search(r"\$ git gpuspace runs --sweep lr --sort loss\n.*\nlr-3 ", shown), shown  # lr=0.01 is best
    assert "$ git gpuspace logs lr-3\n" in shown and "loss=0.1500" in shown
    assert re.search(r"[0-9a-f]{7} pass first experiment", shown)
    assert shown.rstrip().splitlines()[-2].startswith("Next steps:")
    # it cleaned up: its folder and every container of its repo are gone
    made = re.search(r"Worktree (\S+)/worktrees/vit ", shown).group(1)
    assert not Path(made).exists()
    left = docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"gpuspace.repo={made}/project/.git"})
    assert left == []
