"""Preemption's flags and setting: `run`/`sweep --preemptible --preempt --grace --time-slice`,
`add --preempt`, the `preemptible` setting; durations refused in one line; what a submitted run
carries (`runs --json`); the sbatch options of a preemptible run; what the Slurm backend refuses
before anything is queued."""

from __future__ import annotations

import json

import pytest

from conftest import slurm_cluster, slurm_jobs_of, wait_for
from git_gpuspace import cli, config
from git_gpuspace.errors import UsageError
from git_gpuspace.runs.sbatch import Resources, options

ERROR = "git-gpuspace: error:"


def runs(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def one_line_refusal(result, *words: str) -> str:
    """Exit 2, one error line (and a hint), no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    return errors[0]


@pytest.mark.parametrize("text, seconds", [("30", 30), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5),
                                           ("0", 0), (" 2M ", 120), (".5", 0.5)])
def test_a_duration_in_seconds(text, seconds):
    assert config.duration(text, "--grace") == seconds


@pytest.mark.parametrize("text, why", [("-5", "not negative"), ("-1m", "not negative"), ("abc", "not a duration"),
                                       ("5x", "not a duration"), ("", "not a duration"), ("1e3", "not a duration"),
                                       ("inf", "not a duration"), ("5 m s", "not a duration")])
def test_a_bad_duration_is_named_with_its_flag(text, why):
    with pytest.raises(UsageError) as refused:
        config.duration(text, "--grace")
    assert f"invalid --grace '{text}'" in str(refused.value) and why in str(refused.value)
    assert "5m" in refused.value.hint


def test_a_time_slice_of_zero_is_refused():
    with pytest.raises(UsageError, match="more than 0"):
        config.duration("0s", "--time-slice", zero=False)


@pytest.mark.parametrize("flags, words", [
    (["--grace", "-5"], ["--grace '-5'", "not negative"]),
    (["--grace", "soon"], ["--grace 'soon'", "not a duration"]),
    (["--time-slice", "0"], ["--time-slice '0'", "more than 0"]),
    (["--time-slice", "10q"], ["--time-slice '10q'"]),
    (["--time-slice", "5m", "--no-preemptible"], ["--time-slice", "--no-preemptible"]),
])
def test_bad_preemption_flags_are_refused_before_anything_is_queued(plain_repo, flags, words):
    for verb in (["run"], ["sweep", "s", "-p", "x=1,2"]):
        refused = plain_repo.gs(*verb, *flags, "--gpus", "none", "--", "true")
        one_line_refusal(refused, *words)
        assert "hint:" in refused.stderr
    assert runs(plain_repo) == []


def test_the_preemptible_setting_is_true_or_false(plain_repo):
    one_line_refusal(plain_repo.gs("config", "set", "preemptible", "maybe"), "preemptible must be true or false")
    plain_repo.ok("config", "set", "preemptible", "yes")
    assert plain_repo.ok("config", "get", "preemptible").stdout.strip() == "true"
    assert "preemptible = true  (repo)" in plain_repo.ok("config", "list").stdout


def test_the_flags_parse_for_run_sweep_and_add():
    parser = cli.build_parser()
    run = parser.parse_args(["run", "--preemptible", "--preempt", "--grace", "45s", "--time-slice", "5m", "--", "x"])
    assert (run.preemptible, run.preempt, run.grace, run.time_slice) == (True, True, "45s", "5m")
    sweep = parser.parse_args(["sweep", "s", "--no-preemptible", "-p", "a=1"])
    assert (sweep.preemptible, sweep.preempt, sweep.grace, sweep.time_slice) == (False, False, None, None)
    assert parser.parse_args(["run"]).preemptible is None  # the setting decides
    assert parser.parse_args(["add", "--preempt", "../x"]).preempt is True
    assert parser.parse_args(["add", "../x"]).preempt is False
    assert parser.parse_args(["runs", "--state", "preempted"]).state == "preempted"


def test_a_preemptible_job_is_requeued_and_signalled_its_grace_before_its_end():
    assert "--requeue" not in options("r", Resources())
    found = options("r", Resources(preemptible=True, grace=1.5))
    assert "--requeue" in found and "--signal=B:TERM@2" in found  # whole seconds, rounded up
    assert "--signal=B:TERM@30" in options("r", Resources(preemptible=True))


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    yield from slurm_cluster(monkeypatch, tmp_path)


def test_a_submitted_run_carries_its_preemption_and_the_setting_is_its_default(repo):
    repo.ok("run", "--detach", "--gpus", "none", "--preemptible", "--preempt", "--grace", "1.5s", "--time-slice",
            "2m", "--priority", "3", "--", "true")
    repo.ok("config", "set", "preemptible", "true")
    repo.ok("run", "--detach", "--gpus", "none", "--", "true")  # the setting: preemptible
    repo.ok("run", "--detach", "--gpus", "none", "--no-preemptible", "--", "true")  # the flag wins
    first, second, third = runs(repo)
    assert {key: first[key] for key in ("preemptible", "preempt", "grace", "time_slice", "priority", "restarts",
                                        "lost_s")} == {"preemptible": True, "preempt": True, "grace": 1.5,
                                                       "time_slice": 120.0, "priority": 3, "restarts": 0,
                                                       "lost_s": 0.0}
    assert "reason" in first
    assert (second["preemptible"], second["preempt"], second["grace"], second["time_slice"]) == (True, False, 30.0,
                                                                                                 None)
    assert third["preemptible"] is False
    repo.ok("config", "set", "preemptible", "false")
    repo.ok("sweep", "ts", "-p", "n=1,2", "--detach", "--gpus", "none", "--time-slice", "90", "--", "true")
    assert [(r["preemptible"], r["time_slice"]) for r in runs(repo, "--sweep", "ts")] == [(True, 90.0)] * 2
    assert wait_for(lambda: all(r["state"] == "succeeded" for r in runs(repo)), 60), runs(repo)


@pytest.mark.parametrize("flags, words", [(["--time-slice", "5m"], ["--time-slice", "engine only"]),
                                          (["--preempt"], ["--preempt", "engine only"]),
                                          (["--preemptible", "--grace", "20h"], ["--grace", "65535"])])
def test_slurm_refuses_what_its_own_preemption_decides_before_anything_is_queued(repo, cluster, tmp_path, flags,
                                                                                 words):
    refused = repo.gs("run", "--backend", "slurm", "--gpus", "none", *flags, "--", "true")
    one_line_refusal(refused, *words)
    assert runs(repo) == [] and slurm_jobs_of(tmp_path) == []
