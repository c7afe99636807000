"""Sweeps that search (Optuna), on the real engine: every trial an ordinary run, at most
--max-parallel in flight, its value told from what the run printed, failed runs failed trials,
pruned trials stopped and recorded `pruned`; the study read back with `optuna.load_study`; a
search killed with SIGKILL at any step goes on with `sweep resume`, no trial lost or asked twice."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess

import pytest

from conftest import overlap, slurm_cluster, unavailable, wait_for
from git_gpuspace.runs import search
from git_gpuspace.errors import UsageError

# a known function of the parameters: loss = (x - 0.3)^2 + layers / 100, printed once
OBJECTIVE = ["awk", "BEGIN { x = {x} - 0.3; printf \"loss=%.6f\\n\", x * x + {layers} / 100 }"]  # (no ^: busybox)


@pytest.fixture
def optuna():
    if not search.installed():
        unavailable("optuna is not installed: pip install -e '.[test,optuna]'")
    import optuna

    return optuna


def load(optuna, repo, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{repo.common_dir / search.DB_NAME}")


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


# --- pure: what -p says -------------------------------------------------------------------------


def test_distributions_are_read_from_p():
    space = search.parse_space(["lr=loguniform(1e-5,1e-1)", "dropout=uniform(0,0.5)", "layers=int(2,8)",
                                "bs=choice(16,32,64)", "opt=adam,sgd", "fixed=3"])
    assert space["lr"] == search.Space("loguniform", 1e-5, 1e-1)
    assert space["dropout"] == search.Space("uniform", 0.0, 0.5)
    assert space["layers"] == search.Space("int", 2, 8)
    assert space["bs"].choices == ("16", "32", "64") and space["opt"].choices == ("adam", "sgd")
    assert space["fixed"].choices == ("3",)
    assert search.space_from_json(search.space_to_json(space)) == space
    assert search.grid_points({k: space[k] for k in ("layers", "opt")}) == {"layers": list(range(2, 9)),
                                                                          "opt": ["adam", "sgd"]}
    assert search.grid_size({k: space[k] for k in ("layers", "opt")}) == 14


@pytest.mark.parametrize("spec, words", [
    ("lr=loguniform(0,1)", "above 0"), ("a=uniform(1,0)", "below the high"), ("b=int(1.5,3)", "not an integer"),
    ("c=choice()", "empty value"), ("d=uniform(1)", "two bounds"), ("e=choice(1,1)", "twice"),
    ("1x=2", "invalid -p"), ("f=uniform(a,1)", "not a number"), ("g=uniform(0,inf)", "finite"), ("h", "invalid -p"),
])
def test_bad_distributions_are_one_line_errors(spec, words):
    with pytest.raises(UsageError, match=words):
        search.parse_space([spec])


def test_a_grid_search_needs_points_and_a_plan_needs_its_metric():
    with pytest.raises(UsageError, match="needs points"):
        search.grid_points(search.parse_space(["lr=uniform(0,1)"]))
    space = search.parse_space(["x=uniform(0,1)"])
    with pytest.raises(UsageError, match="--metric"):
        search.check_plan("tpe", 4, None, "minimize", "none", space, ["echo", "{x}"])
    with pytest.raises(UsageError, match="--minimize or --maximize"):
        search.check_plan("tpe", 4, "loss", None, "none", space, ["echo", "{x}"])
    for name in ("val acc", "loss\n"):  # a pattern's `$` would let the final newline through
        with pytest.raises(UsageError, match="invalid --metric"):
            search.check_plan("tpe", 4, name, "minimize", "none", space, ["echo", "{x}"])
    with pytest.raises(UsageError, match="at least 1"):
        search.check_plan("tpe", 0, "loss", "minimize", "none", space, ["echo", "{x}"])
    with pytest.raises(UsageError, match="no -p y"):
        search.check_plan("tpe", 4, "loss", "minimize", "none", space, ["echo", "{y}"])
    assert search.as_param(0.1 + 0.2) == "0.30000000000000004" and search.as_param(3) == "3"


# --- on the engine --------------------------------------------------------------------------------


def test_a_tpe_search_runs_each_trial_as_a_run_and_the_study_reads_back(repo, optuna):
    done = repo.gs("sweep", "tpe", "--search", "tpe", "--trials", "6", "--max-parallel", "2", "--seed", "3",
                   "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)", "-p", "layers=int(1,4)", "--gpus", "1",
                   "--", *OBJECTIVE)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "best: trial " in done.stderr
    study = load(optuna, repo, "tpe")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    records = {r["trial"]: r for r in runs(repo, "--sweep", "tpe")}
    assert sorted(records) == list(range(6))
    for trial in trials:
        record = records[trial.number]
        expected = (trial.params["x"] - 0.3) ** 2 + trial.params["layers"] / 100
        assert math.isclose(trial.value, expected, abs_tol=1e-5) and math.isclose(record["value"], trial.value)
        assert record["params"] == {"x": repr(trial.params["x"]), "layers": str(trial.params["layers"])}
        assert record["state"] == "succeeded" and record["pruned"] is False
        assert trial.user_attrs["gpuspace.run"] == record["id"] and trial.user_attrs["gpuspace.commit"] == record["commit"]
    assert overlap(list(records.values())) <= 2  # --max-parallel
    assert len({r["commit"] for r in records.values()}) == 1
    shown = repo.ok("sweep", "show", "tpe").stdout
    best = min(trials, key=lambda t: t.value)
    assert f"Best: trial {best.number}, loss={best.value:g}, run {records[best.number]['id']}" in shown, shown
    assert f"git gpuspace add -b best/{records[best.number]['id']}" in shown
    assert "TRIAL" in shown and len([line for line in shown.splitlines() if line.split()[:1] in
                                     [[str(n)] for n in range(6)]]) == 6
    assert "Importance: " in shown  # fANOVA, over six complete trials
    # more trials for the same search: --append --trials N (in all), each learning from the first six
    more = repo.gs("sweep", "tpe", "--append", "--search", "tpe", "--trials", "8", "--max-parallel", "2", "--metric",
                   "loss", "--minimize", "-p", "x=uniform(0,1)", "-p", "layers=int(1,4)", "--gpus", "1", "--", *OBJECTIVE)
    assert more.returncode == 0, more.stderr
    assert [t.number for t in load(optuna, repo, "tpe").get_trials()] == list(range(8))
    assert sorted(r["trial"] for r in runs(repo, "--sweep", "tpe")) == list(range(8))


def test_failed_runs_are_failed_trials_and_a_grid_search_runs_each_point_once(repo, optuna):
    command = ["sh", "-c", "[ {k} = bad ] && exit 3; echo score={n}"]
    done = repo.gs("sweep", "mixed", "--search", "grid", "--trials", "4", "--metric", "score", "--maximize",
                   "-p", "k=good,bad", "-p", "n=int(1,2)", "--gpus", "none", "--", *command)
    assert done.returncode == 1, done.stderr  # some runs failed, as a grid sweep says
    study = load(optuna, repo, "mixed")
    states = {(t.params["k"], t.params["n"]): t.state.name for t in study.get_trials()}
    assert states == {("good", 1): "COMPLETE", ("good", 2): "COMPLETE", ("bad", 1): "FAIL", ("bad", 2): "FAIL"}
    assert study.best_trial.value == 2 and study.best_trial.params == {"k": "good", "n": 2}
    # a grid is searched once: more trials than points ask for nothing more
    more = repo.gs("sweep", "mixed", "--append", "--search", "grid", "--trials", "9", "--metric", "score",
                   "--maximize", "-p", "k=good,bad", "-p", "n=int(1,2)", "--gpus", "none", "--", *command)
    assert more.returncode == 1 and len(load(optuna, repo, "mixed").get_trials()) == 4, more.stderr
    for changed in (["--search", "random", "--metric", "score"], ["--search", "grid", "--metric", "other"]):
        refused = repo.gs("sweep", "mixed", "--append", *changed, "--trials", "9", "--maximize", "-p", "k=good,bad",
                          "-p", "n=int(1,2)", "--gpus", "none", "--", *command)
        assert refused.returncode == 2 and "another space or metric" in refused.stderr, refused.stderr


def test_a_pruned_trial_is_stopped_and_recorded_pruned(repo, optuna):
    # x near 1: a poor trial, its loss printed each epoch; the median pruner stops it early
    command = ["sh", "-c", "i=1; while [ $i -le 12 ]; do awk \"BEGIN { printf \\\"epoch=$i loss=%.4f\\\\n\\\", "
               "{x} * 10 / $i }\"; sleep 0.3; i=$((i+1)); done"]
    done = repo.gs("sweep", "pr", "--search", "random", "--seed", "5", "--trials", "8", "--max-parallel", "2",
                   "--metric", "loss", "--minimize", "--prune", "median", "-p", "x=uniform(0,1)", "--gpus", "none",
                   "--", *command)
    assert done.returncode == 0, done.stderr
    records = runs(repo, "--sweep", "pr")
    study = load(optuna, repo, "pr")
    by_number = {t.number: t for t in study.get_trials()}
    pruned = [r for r in records if r["pruned"]]
    assert pruned, (done.stderr, [(r["params"], r["state"]) for r in records])
    for record in pruned:
        assert record["state"] == "pruned" and record["value"] is None
        assert by_number[record["trial"]].state == optuna.trial.TrialState.PRUNED
        log = repo.ok("logs", record["id"]).stdout
        assert "epoch=12 " not in log  # stopped before its end
        assert by_number[record["trial"]].intermediate_values  # its values were reported as they came
    assert " pruned, " in done.stderr and "pruned at step" in done.stderr
    # the curves of every run, pruned ones cut short, drawn from the logs
    drawn = repo.gs("runs", "plot", "--sweep", "pr", "--metric", "loss", "-o", "curves.png")
    assert drawn.returncode == 0 and "loss of 8 runs" in drawn.stderr, drawn.stderr
    assert (repo.path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for args, words in [(["--metric", "nope", "-o", "x.png"], "no run of sweep pr printed nope="),
                        (["--metric", "loss", "-o", "x.txt"], "ending in .png"), (["--metric", "loss"], "needs -o"),
                        (["-o", "x.png"], "needs --metric")]:
        refused = repo.gs("runs", "plot", "--sweep", "pr", *args)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert all(r["state"] in ("succeeded", "pruned") for r in records) and len(records) == 8


@pytest.mark.parametrize("point", ["after-trial-asked", "after-runs-reserved", "after-run-worktree",
                                   "after-trial-told"])
def test_a_search_killed_at_any_step_goes_on_with_sweep_resume(repo, optuna, point):
    args = ["sweep", "kill", "--search", "random", "--seed", "1", "--trials", "5", "--max-parallel", "2",
            "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)", "-p", "layers=int(1,3)", "--gpus", "none",
            "--", *OBJECTIVE]
    # the third time the point is passed, not the first: a search under way, some trials told
    killed = subprocess.run(["git-gpuspace", *args], cwd=repo.path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "GPUSPACE_FAULT_POINT": point, "GPUSPACE_FAULT_ACTION": "kill",
                                 "GPUSPACE_FAULT_SKIP": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = repo.gs("sweep", "resume", "kill")
    assert resumed.returncode == 0, resumed.stderr
    study = load(optuna, repo, "kill")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(5)), [(t.number, t.state) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    records = runs(repo, "--sweep", "kill")
    assert sorted(r["trial"] for r in records) == list(range(5))  # one run per trial: none asked twice
    for record in records:
        trial = trials[record["trial"]]
        assert record["params"] == {"x": repr(trial.params["x"]), "layers": str(trial.params["layers"])}
        assert math.isclose(record["value"], trial.value)


def test_search_mistakes_are_one_line_errors(repo):
    for args, words in [
        (["--search", "tpe", "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)"], "--trials"),
        (["--search", "tpe", "--trials", "3", "--minimize", "-p", "x=uniform(0,1)"], "--metric"),
        (["--search", "grid", "--trials", "3", "--metric", "l", "--minimize", "-p", "x=uniform(0,1)"], "needs points"),
        (["--trials", "3", "-p", "x=1,2"], "go with --search"),
        (["--search", "tpe", "--trials", "3", "--metric", "l", "--minimize", "--random", "2", "-p", "x=1,2"], "--random"),
    ]:
        result = repo.gs("sweep", "bad", *args, "--", "echo", "{x}")
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
    assert repo.gs("runs", "--json").stdout.strip() == "[]"
    assert "no sweep 'nope'" in repo.gs("sweep", "show", "nope").stderr


def test_a_search_whose_runs_print_no_value_fails(repo, optuna):
    done = repo.gs("sweep", "mute", "--search", "random", "--trials", "2", "--metric", "loss", "--minimize",
                   "-p", "x=uniform(0,1)", "--gpus", "none", "--", "echo", "{x}")
    assert done.returncode == 1 and "no trial printed loss=" in done.stderr, done.stderr
    assert {t.state.name for t in load(optuna, repo, "mute").get_trials()} == {"FAIL"}


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def test_a_search_on_slurm_submits_each_trial_as_it_is_asked(repo, optuna, cluster):
    done = repo.gs("sweep", "sl", "--backend", "slurm", "--search", "tpe", "--seed", "2", "--trials", "4",
                   "--max-parallel", "2", "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)", "-p",
                   "layers=int(1,4)", "--gpus", "1", "--", *OBJECTIVE)
    assert done.returncode == 0, done.stderr
    trials = load(optuna, repo, "sl").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    records = runs(repo, "--sweep", "sl")
    assert sorted(r["trial"] for r in records) == list(range(4))
    assert all(r["backend"] == "slurm" and r["job"] for r in records) and overlap(records) <= 2
    assert len({r["job"] for r in records}) == 4  # a job each, submitted as its trial was asked
    for record in records:  # once each
        assert repo.ok("logs", record["id"]).stdout.count("loss=") == 1


def test_a_detached_search_goes_on_in_the_background(repo, optuna):
    started = repo.gs("sweep", "bg", "--detach", "--search", "random", "--seed", "4", "--trials", "3",
                      "--max-parallel", "1", "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)", "-p",
                      "layers=int(1,2)", "--gpus", "none", "--", *OBJECTIVE)
    assert started.returncode == 0 and "Searching in the background" in started.stderr, started.stderr
    assert wait_for(lambda: [r["state"] for r in runs(repo, "--sweep", "bg")] == ["succeeded"] * 3
                    and all(r["value"] is not None for r in runs(repo, "--sweep", "bg")), 120), runs(repo)
    assert [t.state.name for t in load(optuna, repo, "bg").get_trials()] == ["COMPLETE"] * 3
    assert "3 of 3 trials asked (3 complete)" in repo.ok("sweep", "show", "bg").stdout


def test_cmaes_with_hyperband_runs_its_trials(repo, optuna):
    command = ["sh", "-c", "i=1; while [ $i -le 4 ]; do awk \"BEGIN { x = {x} - 0.3; printf \\\"epoch=$i loss=%.4f\\\\n\\\", "
               "x * x * 10 / $i + {y} }\"; i=$((i+1)); done"]
    done = repo.gs("sweep", "cma", "--search", "cmaes", "--seed", "1", "--trials", "4", "--max-parallel", "2",
                   "--metric", "loss", "--minimize", "--prune", "hyperband", "-p", "x=uniform(0,1)", "-p",
                   "y=uniform(0,1)", "--gpus", "none", "--", *command)
    assert done.returncode == 0, done.stderr
    trials = load(optuna, repo, "cma").get_trials()
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    records = runs(repo, "--sweep", "cma")
    assert sorted(r["trial"] for r in records) == list(range(4))


def test_a_reboot_loses_no_trial(repo, optuna, private_engine):
    """The machine goes down mid-search: the dispatcher killed, the engine with its containers.
    `sweep resume` runs each interrupted trial's run again (GPUSPACE_RESUME=1: it may go on from
    its checkpoint in /data) as the same trial; no trial is lost or asked twice."""
    env = {"DOCKER_HOST": private_engine.host}
    search = subprocess.Popen(["git-gpuspace", "sweep", "rb", "--search", "random", "--seed", "1", "--trials", "3",
                               "--max-parallel", "2", "--metric", "loss", "--minimize", "-p", "x=uniform(0,1)",
                               "--gpus", "none", "--", "sh", "-c", "echo start $GPUSPACE_RESTARTS; sleep 3; echo loss={x}"],
                              cwd=repo.path, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert wait_for(lambda: sum(r["state"] == "running" for r in runs(repo)) == 2, 60), runs(repo)
    finally:
        search.kill()
        search.wait()
    private_engine.stop()  # the containers die with it
    private_engine.start()
    resumed = repo.gs("sweep", "resume", "rb", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "was interrupted: queued again" in resumed.stderr
    trials = load(optuna, repo, "rb").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    records = runs(repo, "--sweep", "rb")
    assert sorted(r["trial"] for r in records) == [0, 1, 2]
    again = [r for r in records if r["restarts"] == 1]
    assert len(again) == 2, [(r["id"], r["restarts"], r["state"]) for r in records]
    for record in again:
        assert "start 1" in repo.ok("logs", record["id"]).stdout


def test_a_grid_search_killed_between_a_point_and_its_trial_runs_each_point_once(repo, optuna):
    args = ["sweep", "gk", "--search", "grid", "--trials", "6", "--max-parallel", "2", "--metric", "v",
            "--maximize", "-p", "a=int(1,3)", "-p", "b=x,y", "--gpus", "none", "--", "echo", "v={a} {b}"]
    killed = subprocess.run(["git-gpuspace", *args], cwd=repo.path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "GPUSPACE_FAULT_POINT": "after-grid-point-enqueued",
                                 "GPUSPACE_FAULT_ACTION": "kill", "GPUSPACE_FAULT_SKIP": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = repo.gs("sweep", "resume", "gk")
    assert resumed.returncode == 0, resumed.stderr
    trials = load(optuna, repo, "gk").get_trials()
    assert sorted((t.params["a"], t.params["b"]) for t in trials) == [(a, b) for a in (1, 2, 3) for b in "xy"]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert sorted(r["trial"] for r in runs(repo, "--sweep", "gk")) == list(range(6))
