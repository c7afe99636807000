"""The run state machine (runs/model.py), a run's resources as Slurm options (runs/sbatch.py) and
how many GPUs a node of the cluster has (runs/slurm.gpus_per_node): no engine, no cluster (a
stand-in `sinfo` and `scontrol` on PATH)."""

from __future__ import annotations

import datetime as _dt
import shlex

import pytest

from git_gpuspace import export
from git_gpuspace.runs import model, sbatch
from git_gpuspace.runs.model import MOVES, STARTING, STATES, STOPPING, Run
from git_gpuspace.runs.slurm import gpus_per_node


def a_run(state: str = "queued", **fields) -> Run:
    return Run(id="run-1", command=["true"], commit="0" * 40, worktree="/nonexistent/worktrees/runs/run-1",
               state=state, **fields)


def running(**fields) -> Run:
    run = a_run()
    model.start(run, **fields)
    return run


# --- the transitions ------------------------------------------------------------------------------

# Each function of the model and the state it moves a run to.
def _end_stopping(run: Run) -> None:
    run.reason = STOPPING
    model.end(run, 0)


def _end_pruning(run: Run) -> None:
    run.reason = model.PRUNING
    model.end(run, 143)


OPERATIONS = {
    "start": ("running", lambda run: model.start(run)),
    "drop": ("stopped", lambda run: model.drop(run, "dropped")),
    "could_not_start": ("failed", lambda run: model.could_not_start(run, "no image")),
    "requeue": ("queued", lambda run: model.requeue(run)),
    "end 0": ("succeeded", lambda run: model.end(run, 0)),
    "end 1": ("failed", lambda run: model.end(run, 1)),
    "end None": ("failed", lambda run: model.end(run, None)),
    "end stopping": ("stopped", _end_stopping),
    "end pruning": ("pruned", _end_pruning),
    "preempt": ("preempted", lambda run: model.preempt(run, "for a run of higher priority")),
    "back_in_line": ("queued", lambda run: model.back_in_line(run)),
}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("source", STATES)
def test_every_function_moves_as_moves_allows_and_no_other_way(source, operation):
    target, apply = OPERATIONS[operation]
    run = a_run(source)
    if target in MOVES[source]:
        apply(run)
        assert run.state == target
    else:
        with pytest.raises(AssertionError, match=f"no transition from {source} to {target}"):
            apply(run)
        assert run.state == source


def test_every_allowed_move_is_reached_by_some_function():
    reached = {(source, target) for source in STATES for target, _ in OPERATIONS.values() if target in MOVES[source]}
    assert reached == {(source, target) for source, targets in MOVES.items() for target in targets}
    assert MOVES["succeeded"] == ()  # a run that succeeded stays so
    assert MOVES["pruned"] == ()  # its trial was given up: told, and not run again


def test_a_run_whose_trial_is_pruned_ends_pruned_even_with_retries_left():
    run = running()
    run.retries, run.reason = 2, model.PRUNING
    line = model.end(run, 143)
    assert (run.state, run.reason, run.retries) == ("pruned", None, 2) and line.startswith("run-1 pruned (exit 143)")


@pytest.mark.parametrize("call", [
    lambda: model.end(a_run("succeeded"), 0),
    lambda: model.end(a_run("stopped"), 1),
    lambda: model.start(a_run("stopped")),
    lambda: model.start(a_run("failed")),
    lambda: model.drop(a_run("failed"), "too late"),
    lambda: model.requeue(a_run("succeeded")),
    lambda: model.could_not_start(a_run("stopped"), "no image"),
], ids=["end succeeded", "end stopped", "start stopped", "start failed", "drop failed", "requeue succeeded",
        "could_not_start stopped"])
def test_a_disallowed_move_raises(call):
    with pytest.raises(AssertionError):
        call()


def test_start_records_its_start_once_and_what_it_runs_with():
    run = a_run()
    model.start(run, STARTING, container="c-1", gpus=["GPU-a"], data_dir="/d")
    assert (run.state, run.reason, run.container, run.gpus, run.data_dir) == ("running", STARTING, "c-1", ["GPU-a"], "/d")
    started = run.started
    assert started is not None
    model.start(run)  # its container runs now: running (starting) -> running
    assert (run.state, run.reason, run.started) == ("running", None, started)
    assert (run.container, run.gpus, run.data_dir) == ("c-1", ["GPU-a"], "/d")  # not given: kept


# --- how a run ends -------------------------------------------------------------------------------


def test_exit_0_succeeded():
    run = running()
    line = model.end(run, 0)
    assert (run.state, run.exit_code, run.reason) == ("succeeded", 0, None)
    assert run.finished is not None and run.finished >= run.started
    assert line.startswith("run-1 succeeded (exit 0) after ") and line.endswith(" s")


def test_a_non_zero_exit_failed_with_its_code():
    run = running()
    line = model.end(run, 7)
    assert (run.state, run.exit_code, run.reason) == ("failed", 7, None)
    assert line.startswith("run-1 failed (exit 7) after ")


def test_no_exit_code_failed_interrupted_or_as_given():
    run = running()
    line = model.end(run, None)
    assert (run.state, run.exit_code, run.reason) == ("failed", None, "interrupted")
    assert line.startswith("run-1 failed (interrupted) after ")
    other = running()
    model.end(other, None, "TIMEOUT (the job ended without the run's exit code)")
    assert (other.state, other.reason) == ("failed", "TIMEOUT (the job ended without the run's exit code)")


def test_failed_with_code_0_is_failed():
    run = running()
    model.end(run, 0, failed=True)
    assert (run.state, run.exit_code) == ("failed", 0)


@pytest.mark.parametrize("code", [0, 1, 137, None])
def test_a_run_asked_to_stop_ends_stopped_whatever_its_code(code):
    run = running(reason=STOPPING)
    run.retries = 3  # a stopped run is not run again
    line = model.end(run, code)
    assert (run.state, run.reason, run.exit_code, run.retries) == ("stopped", None, code, 3)
    assert line.startswith("run-1 stopped ") and "queued again" not in line


def test_a_queued_run_asked_to_stop_whose_job_went_ends_stopped():
    run = a_run(reason=STOPPING)  # a pending job cancelled by `runs stop`
    model.end(run, None)
    assert (run.state, run.reason) == ("stopped", None)
    assert run.started == run.finished is not None


def test_a_failed_run_with_retries_is_queued_again_as_new(tmp_path):
    run = running(container="c-1", gpus=["GPU-a"], data_dir=str(tmp_path))
    run.retries, run.job = 2, "42"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("loss=0.5\n")
    line = model.end(run, 3)
    assert (run.state, run.retries) == ("queued", 1)
    assert (run.started, run.finished, run.container, run.job, run.exit_code, run.metrics, run.reason) == \
        (None, None, None, None, None, None, None)
    assert run.data_dir == str(tmp_path)  # what it did last time stays in its data dir
    assert line.startswith("run-1 failed (exit 3) after ") and line.endswith("; queued again (1 retry left)")
    model.start(run)
    line = model.end(run, None)
    assert (run.state, run.retries) == ("queued", 0)
    assert line.endswith("; queued again (0 retries left)")
    model.start(run)
    line = model.end(run, 1)
    assert (run.state, run.exit_code, run.retries) == ("failed", 1, 0)
    assert "queued again" not in line


def test_retries_left_are_counted_in_the_line():
    run = running()
    run.retries = 3
    assert model.end(run, 1).endswith("; queued again (2 retries left)")


def test_a_run_that_succeeded_keeps_its_retries():
    run = running()
    run.retries = 2
    model.end(run, 0)
    assert (run.state, run.retries) == ("succeeded", 2)


def test_end_keeps_the_metrics_of_its_log(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("epoch 1\nloss=0.5\n")
    run = running(data_dir=str(tmp_path))
    model.end(run, 0)
    assert run.metrics == {"loss": 0.5}
    without = running()
    model.end(without, 0)
    assert without.metrics == {}


def test_drop_a_queued_run():
    run = a_run()
    model.drop(run, "not run: an earlier one failed")
    assert (run.state, run.reason, run.exit_code, run.started) == ("stopped", "not run: an earlier one failed", None, None)
    assert run.finished is not None


def test_could_not_start_from_queued():
    run = a_run()
    line = model.could_not_start(run, "image 'x' missing")
    assert line == "run-1 failed: could not start: image 'x' missing"
    assert (run.state, run.reason, run.exit_code, run.started, run.container) == \
        ("failed", "could not start: image 'x' missing", None, None, None)
    assert run.finished is not None


def test_could_not_start_from_running_starting():
    run = running(reason=STARTING, container="c-1")
    run.exit_code = 5
    line = model.could_not_start(run, "its worktree is gone")
    assert line == "run-1 failed: could not start: its worktree is gone"
    assert (run.state, run.reason, run.exit_code, run.started, run.container) == \
        ("failed", "could not start: its worktree is gone", None, None, None)
    assert run.duration_s is None


@pytest.mark.parametrize("state", ["failed", "stopped"])
def test_requeue_of_a_failed_or_stopped_run_clears_what_it_did(state, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("loss=1\n")
    run = running(container="c-1", data_dir=str(tmp_path), reason=STOPPING if state == "stopped" else None)
    run.job = "7"
    model.end(run, 1)
    assert (run.state, run.metrics) == (state, {"loss": 1.0})
    model.requeue(run)  # `runs retry`
    assert (run.state, run.reason, run.exit_code, run.started, run.finished, run.container, run.job, run.metrics) == \
        ("queued", None, None, None, None, None, None, None)


# --- a run's resources as Slurm options -----------------------------------------------------------


def test_options_of_nothing_but_a_name():
    assert sbatch.options("run-1", sbatch.Resources()) == ["--job-name=run-1"]


def test_options_in_a_stable_order():
    resources = sbatch.Resources(
        gpus=2, cpus=1.5, memory_bytes=3 << 30, tasks=4, max_parallel=2, priority=-5,
        settings={"slurm.qos": "high", "slurm.time": "01:00:00", "slurm.account": "proj", "slurm.partition": "gpu",
                  "slurm.extra": "--exclusive --constraint='a100 80gb' --mail-type=END", "slurm.workdir": "/shared"})
    assert sbatch.options("grid", resources) == [
        "--job-name=grid", "--gres=gpu:2", "--cpus-per-task=2", "--mem=3072M", "--partition=gpu", "--account=proj",
        "--time=01:00:00", "--qos=high", "--nice=5", "--array=0-3%2", "--exclusive", "--constraint=a100 80gb",
        "--mail-type=END"]
    assert sbatch.options("grid", resources) == sbatch.options("grid", resources)


@pytest.mark.parametrize("cpus, expected", [(1.5, "2"), (0.25, "1"), (2, "2"), (2.0001, "3")])
def test_cpus_round_up(cpus, expected):
    assert sbatch.options("r", sbatch.Resources(cpus=cpus)) == ["--job-name=r", f"--cpus-per-task={expected}"]


def test_memory_in_mebibytes_at_least_one():
    assert sbatch.options("r", sbatch.Resources(memory_bytes=512 << 20)) == ["--job-name=r", "--mem=512M"]
    assert sbatch.options("r", sbatch.Resources(memory_bytes=1000)) == ["--job-name=r", "--mem=1M"]


@pytest.mark.parametrize("priority, nice", [(-5, "--nice=5"), (3, "--nice=-3")])
def test_priority_is_nice_negated(priority, nice):
    assert sbatch.options("r", sbatch.Resources(priority=priority)) == ["--job-name=r", nice]


def test_array_with_and_without_max_parallel():
    assert sbatch.options("s", sbatch.Resources(tasks=3)) == ["--job-name=s", "--array=0-2"]
    assert sbatch.options("s", sbatch.Resources(tasks=3, max_parallel=1)) == ["--job-name=s", "--array=0-2%1"]
    assert sbatch.options("s", sbatch.Resources(tasks=1, max_parallel=1)) == ["--job-name=s"]  # one run: one job


@pytest.mark.parametrize("key", sbatch.SETTINGS)
def test_each_setting_alone(key):
    assert sbatch.options("r", sbatch.Resources(settings={f"slurm.{key}": "v"})) == ["--job-name=r", f"--{key}=v"]
    assert sbatch.options("r", sbatch.Resources(settings={f"slurm.{key}": ""})) == ["--job-name=r"]


def test_extra_is_split_as_a_shell_would():
    extra = """--hold --comment="two words" --wrap='echo "$HOME"' -x\\ y"""
    found = sbatch.options("r", sbatch.Resources(settings={"slurm.extra": extra}))
    assert found == ["--job-name=r", "--hold", "--comment=two words", '--wrap=echo "$HOME"', "-x y"]
    assert found[1:] == shlex.split(extra)


@pytest.mark.parametrize("resources", [
    dict(),
    dict(gpus=1, cpus=1.5, memory_bytes=2 << 30),
    dict(gpus=2, priority=-5, max_parallel=2, commands=3),
    dict(priority=3, commands=2,
         slurm={"slurm.partition": "gpu", "slurm.account": "a", "slurm.time": "10", "slurm.qos": "q",
                "slurm.extra": "--exclusive --constraint='x y'"}),
], ids=["nothing", "gpus-cpus-memory", "array", "settings"])
def test_the_exports_sbatch_lines_are_the_backends_options(resources):
    commands = [["sh", "-c", f"echo {n}"] for n in range(resources.pop("commands", 1))]
    target = export.Target(name="grid", image="img:1", worktree="/w", commit="0" * 40, gpu_count=resources.get("gpus", 0),
                           commands=commands, memory_bytes=resources.get("memory_bytes"), cpus=resources.get("cpus"),
                           max_parallel=resources.get("max_parallel"), priority=resources.get("priority", 0),
                           slurm=resources.get("slurm", {}))
    script = export.sbatch(target)
    written = [line[len("#SBATCH "):] for line in script.splitlines() if line.startswith("#SBATCH ")]
    # sbatch reads a `#SBATCH` line's words as a shell would (quotes kept together, `--comment="a b"`;
    # an unquoted `--constraint=a b` is refused: "Invalid directive found in batch script: b")
    written = [word for line in written for word in shlex.split(line)]
    assert written == sbatch.options("grid", sbatch.Resources(
        gpus=resources.get("gpus", 0), cpus=resources.get("cpus"), memory_bytes=resources.get("memory_bytes"),
        tasks=len(commands), max_parallel=resources.get("max_parallel"), priority=resources.get("priority", 0),
        settings=resources.get("slurm", {})))


# --- how many GPUs a node has ---------------------------------------------------------------------


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """`sinfo` and `scontrol` on PATH that answer what the test writes and keep their arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()

    def answer(name: str, text: str, code: int = 0) -> None:
        (folder / f"{name}.out").write_text(text)
        script = folder / name
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{folder}/{name}.args"\ncat "{folder}/{name}.out"\n'
                          f"exit {code}\n")
        script.chmod(0o755)

    def args(name: str) -> list[str]:
        path = folder / f"{name}.args"
        return path.read_text().splitlines() if path.exists() else []

    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    answer.args = args  # type: ignore[attr-defined]
    return answer


def test_gpus_per_node_the_most_of_one_node_and_the_clusters_name(stand_ins):
    stand_ins("sinfo", "gpu:2\ngpu:a100:4(S:0-1)\n(null)\n")
    stand_ins("scontrol", "Configuration data as of 2024-01-01T00:00:00\nClusterName=test-cluster\nMaxJobCount=10000\n")
    assert gpus_per_node(None) == (4, "test-cluster")
    assert stand_ins.args("sinfo") == ["--noheader", "--format=%G"]
    assert stand_ins.args("scontrol") == ["show", "config"]


def test_gpus_per_node_of_a_partition(stand_ins):
    stand_ins("sinfo", "gpu:h100:8(S:0-1),shard:16\n")
    stand_ins("scontrol", "AccountingStorageType   = accounting_storage/none\nClusterName             = big one\n")
    assert gpus_per_node("gpu") == (8, "big one")
    assert stand_ins.args("sinfo") == ["--noheader", "--format=%G", "--partition=gpu"]


@pytest.mark.parametrize("listed", ["(null)\n", "", "shard:4\nmps:100\n", "gpu\n"])
def test_gpus_per_node_without_gpus_is_zero_and_a_nameless_cluster_is_question_mark(stand_ins, listed):
    stand_ins("sinfo", listed)
    stand_ins("scontrol", "MaxJobCount=10000\n")
    assert gpus_per_node(None) == (0, "?")


def test_gpus_per_node_when_sinfo_fails_says_so(stand_ins):
    from git_gpuspace.errors import GpuspaceError

    stand_ins("sinfo", "sinfo: error: Unable to contact slurm controller\n", code=1)
    stand_ins("scontrol", "ClusterName=x\n")
    with pytest.raises(GpuspaceError, match="sinfo failed"):
        gpus_per_node(None)


def test_gpus_per_node_without_sinfo_says_this_is_no_submit_host(tmp_path, monkeypatch):
    from git_gpuspace.errors import GpuspaceError

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GpuspaceError, match="sinfo is not on PATH"):
        gpus_per_node(None)


# --- preemption -----------------------------------------------------------------------------------


def test_a_preempted_run_restarts_where_it_left_off_and_counts_what_it_lost():
    run = running(data_dir="/d", container="c-1", gpus=["GPU-a"])
    line = model.preempt(run, "its time slice (5 s) is up")
    assert run.state == "preempted" and run.reason == "its time slice (5 s) is up"
    assert line == "run-1 preempted: its time slice (5 s) is up; SIGTERM, 30 s to checkpoint"
    assert model.params_env(run)["GPUSPACE_RESTARTS"] == "0" and "GPUSPACE_RESUME" not in model.params_env(run)
    model.back_in_line(run)
    assert (run.state, run.restarts, run.container, run.reason, run.data_dir) == ("queued", 1, None, None, "/d")
    assert model.params_env(run)["GPUSPACE_RESUME"] == "1" and model.params_env(run)["GPUSPACE_RESTARTS"] == "1"
    model.start(run)
    assert run.lost_s >= 0 and run.preempted_at is None


def test_a_preempted_run_asked_to_stop_is_stopped():
    run = running()
    model.preempt(run, "for add --preempt")
    run.reason = STOPPING
    model.end(run, None)
    assert run.state == "stopped"


# --- what the mutation audit of the run model asked for -------------------------------------------


class _Clock:
    """model.now()'s datetime, at times a test sets."""

    def __init__(self, monkeypatch, start: _dt.datetime):
        self.moment = start
        clock = self

        class FixedDatetime(_dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return clock.moment.astimezone(tz) if tz is not None else clock.moment.replace(tzinfo=None)

        monkeypatch.setattr(model._dt, "datetime", FixedDatetime)

    def advance(self, seconds: float) -> None:
        self.moment += _dt.timedelta(seconds=seconds)


T0 = _dt.datetime(2026, 12, 7, 12, 0, 0, 500400, tzinfo=_dt.timezone.utc)
T0_MS = T0.replace(microsecond=500000)  # what now() makes of it


def test_now_is_utc_to_the_millisecond(monkeypatch):
    _Clock(monkeypatch, T0)
    assert model.now() == T0_MS and model.now().utcoffset() == _dt.timedelta(0)


def test_params_env_names_every_parameter_in_upper_case_with_only_letters_digits_and_underscores():
    run = a_run(params={"lr": "0.1", "batch-size": "32", "Mixed.Case": "x", "a b/c": "y"})
    assert model.params_env(run) == {
        "GPUSPACE_RUN": "run-1", "GPUSPACE_SWEEP": "", "GPUSPACE_COMMIT": "0" * 40, "GPUSPACE_RESTARTS": "0",
        "GPUSPACE_PARAM_LR": "0.1", "GPUSPACE_PARAM_BATCH_SIZE": "32", "GPUSPACE_PARAM_MIXED_CASE": "x",
        "GPUSPACE_PARAM_A_B_C": "y"}
    assert model.params_env(a_run(sweep="grid"))["GPUSPACE_SWEEP"] == "grid"


def test_a_start_recorded_before_the_container_runs_keeps_its_time_when_the_container_runs(monkeypatch):
    clock = _Clock(monkeypatch, T0)
    run = a_run()
    model.start(run, STARTING)
    clock.advance(5)
    model.start(run, gpu_indices=[2, 0])
    assert run.started == T0_MS and run.reason is None and run.gpu_indices == [2, 0]


def test_the_time_lost_to_preemptions_adds_up_and_never_goes_below_zero(monkeypatch):
    clock = _Clock(monkeypatch, T0)
    run = a_run()
    for off in (10, 20):
        model.start(run)
        model.preempt(run, "time slice")
        model.back_in_line(run)
        clock.advance(off)
    model.start(run)
    assert run.lost_s == pytest.approx(30) and run.restarts == 2
    model.preempt(run, "again")
    model.back_in_line(run)
    run.preempted_at = model.now() + _dt.timedelta(seconds=60)  # a clock set back meanwhile
    model.start(run)
    assert run.lost_s == pytest.approx(30)


def test_end_takes_the_runs_own_times_within_what_is_possible(monkeypatch):
    clock = _Clock(monkeypatch, T0)
    now = T0_MS
    run = running()
    clock.advance(100)
    later = now + _dt.timedelta(seconds=100)
    model.end(run, 0, began=now + _dt.timedelta(seconds=10), at=now + _dt.timedelta(seconds=50))
    assert (run.started, run.finished) == (now + _dt.timedelta(seconds=10), now + _dt.timedelta(seconds=50))
    run = running()
    # a container's clock ahead of ours: never after now; an end before the start: at the start
    model.end(run, 0, began=later + _dt.timedelta(seconds=60), at=later + _dt.timedelta(seconds=90))
    assert (run.started, run.finished) == (later, later)
    run = running()
    model.end(run, 0, began=now, at=now - _dt.timedelta(seconds=5))
    assert (run.started, run.finished) == (now, now)


def test_a_failed_exit_keeps_the_reason_given():
    run = running()
    model.end(run, 137, "killed: out of memory")
    assert (run.state, run.exit_code, run.reason) == ("failed", 137, "killed: out of memory")


def test_a_preemptible_job_is_requeued_with_its_grace_as_the_signal_time():
    def preemptible(grace: float) -> list[str]:
        return sbatch.options("p", sbatch.Resources(gpus=1, preemptible=True, grace=grace))

    assert preemptible(12.2) == ["--job-name=p", "--gres=gpu:1", "--requeue", "--signal=B:TERM@13"]
    assert preemptible(-5)[-1] == "--signal=B:TERM@0"
    assert preemptible(10 ** 6)[-1] == f"--signal=B:TERM@{sbatch.MAX_SIGNAL_TIME}"


def test_two_runs_are_an_array_of_two():
    assert sbatch.options("s", sbatch.Resources(tasks=2)) == ["--job-name=s", "--array=0-1"]
