"""`git gpuspace runs`: the table of results (GPU indices, commit, reason, chosen metrics), `runs
clean` that keeps records and `runs forget` that drops them, options anywhere on the command
line, and `--help` from an editable install. Runs are put in the store as a finished `run`
leaves them (a detached worktree, a ref, a data dir): no engine needed, but for `runs retry`,
which runs what it queues again."""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from git_gpuspace import cliwalk
from git_gpuspace.cli import build_parser
from git_gpuspace.config import default_data_root
from git_gpuspace.runs import at_work, results, store
from git_gpuspace.runs.model import Run, Sweep

ROOT = Path(__file__).resolve().parents[2]


def seed(repo, *specs: dict, sweep: Sweep | None = None) -> list[Run]:
    """Runs in the store; a finished one with its worktree and ref, as `run` leaves it. Each
    spec: Run fields, plus `log` (its log's text) and `metrics_json` (a metrics.json)."""
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    where = repo.path.parent / "worktrees" / "runs"
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    made = []
    with store.locked(repo.common_dir) as runs:
        if sweep is not None:
            runs.sweeps[sweep.name] = sweep
        for spec in specs:
            spec = dict(spec)
            log, written = spec.pop("log", None), spec.pop("metrics_json", None)
            run_id = runs.next_id(spec.get("sweep") or "run")
            state = spec.setdefault("state", "succeeded")
            # where a run's data dir goes: the user's data root, named as its container
            data = Path(os.path.realpath(default_data_root())) / f"gpuspace-{repo.path.parent.name}-{run_id}"
            (data / "logs").mkdir(parents=True)
            if log is not None:
                (data / "logs" / "run.log").write_text(log)
            if written is not None:
                (data / "metrics.json").write_text(json.dumps(written))
            if state not in ("queued",):
                repo.git("worktree", "add", "-q", "--detach", str(where / run_id), head)
                repo.git("update-ref", f"refs/gpuspace/runs/{run_id}", head)
            finished = state in ("succeeded", "failed", "stopped")
            run = Run(**{"id": run_id, "command": ["true"], "commit": head, "worktree": str(where / run_id),
                         "data_dir": str(data), "container": data.name, "started": moment if state != "queued" else None,
                         "finished": moment + dt.timedelta(seconds=5) if finished else None,
                         "exit_code": 0 if state == "succeeded" else 1 if finished else None, **spec})
            runs.runs.append(run)
            made.append(run)
        runs.save()
    return made


def listed(repo, *args) -> list[dict]:
    return json.loads(repo.ok("runs", "--json", *args).stdout)


def table(repo, *args) -> tuple[list[str], list[dict[str, str]]]:
    """The table's headers, and each row as {header: cell} (cells have no spaces here)."""
    lines = repo.ok("runs", *args).stdout.splitlines()
    headers = lines[0].split()
    starts = [lines[0].index(h) for h in headers] + [10_000]
    return headers, [{h: line[starts[i]:starts[i + 1]].strip() for i, h in enumerate(headers)} for line in lines[1:]]


# --- the table --------------------------------------------------------------------------------

def test_table_shows_gpu_indices_the_commit_and_the_reason_apart_from_the_state(plain_repo):
    waiting = "waiting for 1 GPU: 0-3 held by hold (feature/x) and by two more worktrees of other users"
    seed(plain_repo,
         {"gpus": ["GPU-a", "GPU-b"], "gpu_indices": [0, 1], "snapshot": True},
         {"gpus": ["GPU-c"]},  # recorded before runs kept the host's numbers
         {"state": "queued", "reason": waiting})
    head = plain_repo.git("rev-parse", "HEAD").stdout.strip()
    headers, rows = table(plain_repo)
    assert headers[:9] == ["RUN", "SWEEP", "PARAMS", "STATE", "REASON", "EXIT", "TIME", "GPUS", "COMMIT"]
    assert [row["GPUS"] for row in rows] == ["0,1", "1 GPU", "-"]
    assert [row["COMMIT"] for row in rows] == [head[:7] + "*", head[:7], head[:7]]
    assert rows[2]["STATE"] == "queued"
    assert rows[2]["REASON"].startswith("waiting for 1 GPU: 0-3 held by hold") and rows[2]["REASON"].endswith("...")
    assert len(rows[2]["REASON"]) == 60
    records = listed(plain_repo)
    assert records[2]["reason"] == waiting  # whole in --json
    assert [r["gpu_indices"] for r in records] == [[0, 1], [], []]
    assert [r["snapshot"] for r in records] == [True, False, False]
    assert [r["cleaned"] for r in records] == [False, False, False]
    assert all(r["commit"] == head for r in records)
    csv_rows = plain_repo.ok("runs", "--csv").stdout.splitlines()
    assert csv_rows[0].startswith("run,sweep,params,state,reason,exit,time,gpus,commit")
    assert waiting in csv_rows[3]


def test_metrics_json_wins_and_parameters_are_not_metric_columns(plain_repo):
    seed(plain_repo,
         {"params": {"lr": "0.1"}, "log": "epoch 3 lr=0.1 loss=0.5\nacc: 0.25\n"},
         {"params": {"lr": "0.01"}, "log": "lr=0.01 loss=9 noise=3\n", "metrics_json": {"acc": 0.75, "flag": True}})
    headers, rows = table(plain_repo)
    assert headers[9:] == ["ACC", "LOSS"]  # not LR: a parameter; not NOISE: the second run's metrics.json rules
    assert [(row["ACC"], row["LOSS"]) for row in rows] == [("0.25", "0.5"), ("0.75", "-")]
    assert listed(plain_repo)[1]["metrics"] == {"acc": 0.75}

    assert table(plain_repo, "--metrics", "loss,lr")[0][9:] == ["LOSS", "LR"]  # asked for: shown, in that order
    assert table(plain_repo, "--metrics", "")[0][9:] == []
    plain_repo.ok("config", "set", "runs.metrics", "acc")
    assert plain_repo.ok("config", "get", "runs.metrics").stdout.strip() == "acc"
    assert table(plain_repo)[0][9:] == ["ACC"]
    assert table(plain_repo, "--metrics", "loss")[0][9:] == ["LOSS"]  # the flag over the setting


def test_sort_puts_runs_without_the_metric_last_either_way(plain_repo):
    """`runs --sort loss` and `--sort=-loss`: the runs that have no loss come after the rest."""
    seed(plain_repo, {"log": "loss=2\n"}, {"log": "no numbers here\n"}, {"log": "loss=1\n"}, {"log": "loss=3\n"})
    assert [r["id"] for r in listed(plain_repo, "--sort", "loss")] == ["run-3", "run-1", "run-4", "run-2"]
    assert [r["id"] for r in listed(plain_repo, "--sort=-loss")] == ["run-4", "run-1", "run-3", "run-2"]
    assert [row["RUN"] for row in table(plain_repo, "--sort=-loss")[1]] == ["run-4", "run-1", "run-3", "run-2"]


def test_metrics_from_metrics_json_are_only_its_numbers(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.log").write_text("loss=1 step=3\n")
    assert results.metrics(str(tmp_path)) == {"loss": 1.0, "step": 3.0}
    (tmp_path / "metrics.json").write_text(json.dumps({"val/acc": 0.5, "epochs": 3, "ok": True, "name": "x",
                                                      "huge": 10 ** 400}))
    assert results.metrics(str(tmp_path)) == {"val/acc": 0.5, "epochs": 3.0}
    (tmp_path / "metrics.json").write_text("not json")  # a broken file: the log, as before
    assert results.metrics(str(tmp_path)) == {"loss": 1.0, "step": 3.0}


def test_runs_names_the_dispatchers_pid_on_stderr(plain_repo):
    seed(plain_repo, {"state": "queued"})
    assert "dispatcher" not in plain_repo.gs("runs").stderr.replace("no dispatcher is running", "")
    fd = os.open(at_work.lock_path(plain_repo.common_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a dispatcher holds it while it lives
        shown = plain_repo.ok("runs")
        assert f"git-gpuspace: dispatcher: pid {os.getpid()}" in shown.stderr
        assert "no dispatcher is running" not in shown.stderr
    finally:
        os.close(fd)


# --- clean keeps records, forget drops them -----------------------------------------------------

def test_clean_keeps_the_records_of_finished_runs(plain_repo):
    made = seed(plain_repo, *[{"sweep": "s", "params": {"n": str(n)}, "log": f"loss={n}\n"} for n in (3, 1, 2)],
                {"state": "queued"}, sweep=Sweep("s"))
    cleaned = plain_repo.ok("runs", "clean", "--purge")
    assert "Removed 3 finished runs and their data" in cleaned.stdout
    assert all(not os.path.exists(run.worktree) and not os.path.exists(run.data_dir) for run in made[:3])
    assert plain_repo.git("for-each-ref", "refs/gpuspace").stdout == ""
    records = listed(plain_repo)
    assert [(r["id"], r["state"], r["cleaned"]) for r in records] == [
        ("s-1", "succeeded", True), ("s-2", "succeeded", True), ("s-3", "succeeded", True), ("run-1", "queued", False)]
    assert records[0]["params"] == {"n": "3"} and records[0]["commit"] == made[0].commit
    assert records[0]["metrics"] == {"loss": 3.0} and records[0]["finished"]
    assert [r["id"] for r in listed(plain_repo, "--sort", "loss")][:3] == ["s-2", "s-3", "s-1"]  # after --purge
    assert "s" in store.load(plain_repo.common_dir).sweeps
    # cleaned runs are not cleaned again
    assert "Removed 0 finished runs" in plain_repo.ok("runs", "clean").stdout
    assert "Removed 0 finished runs" in plain_repo.ok("runs", "clean", "--purge").stdout


def test_a_cleaned_run_is_not_retried(plain_repo):
    seed(plain_repo, {"state": "failed"})
    plain_repo.ok("runs", "clean")
    refused = plain_repo.gs("runs", "retry", "run-1")
    assert refused.returncode == 2
    assert "run run-1 was cleaned: its worktree is gone" in refused.stderr and "hint: submit it again" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert listed(plain_repo)[0]["state"] == "failed"


def test_retry_of_a_sweep_queues_its_failed_and_stopped_runs_and_failed_only_with_the_flag(repo):
    """`runs retry --sweep S` runs its failed and stopped runs again; `--failed` only the failed."""
    for name in ("all", "only"):
        seed(repo, *[{"sweep": name, "state": state, "flags": {"gpus": "none"}}
                     for state in ("failed", "stopped", "succeeded")], sweep=Sweep(name))
    retried = repo.gs("runs", "retry", "--sweep", "all")
    assert retried.returncode == 0 and "Queued again: all-1, all-2\n" in retried.stderr, retried.stderr
    assert [r["state"] for r in listed(repo, "--sweep", "all")] == ["succeeded"] * 3
    failed_only = repo.gs("runs", "retry", "--sweep", "only", "--failed")
    assert failed_only.returncode == 0 and "Queued again: only-1\n" in failed_only.stderr, failed_only.stderr
    assert [r["state"] for r in listed(repo, "--sweep", "only")] == ["succeeded", "stopped", "succeeded"]


def test_stop_of_a_sweep_leaves_its_queued_runs_queued_without_all(plain_repo):
    """`runs stop --sweep S` stops what runs and says how to drop the queued; `--all` drops them."""
    seed(plain_repo, {"sweep": "s", "state": "queued"}, {"sweep": "s", "state": "queued"}, sweep=Sweep("s"))
    kept = plain_repo.ok("runs", "stop", "--sweep", "s")
    assert kept.stdout == "Nothing to stop (queued runs stay queued; --all drops them)\n"
    assert [r["state"] for r in listed(plain_repo)] == ["queued", "queued"]
    assert plain_repo.ok("runs", "stop", "--sweep", "s", "--all").stdout == "Dropped 2 queued runs: s-1, s-2\n"
    assert [r["state"] for r in listed(plain_repo)] == ["stopped", "stopped"]


def test_forget_drops_records_and_never_an_active_run(plain_repo):
    made = seed(plain_repo, {"sweep": "s"}, {"sweep": "s"}, {}, {}, {"state": "queued"}, sweep=Sweep("s"))
    nothing = plain_repo.ok("runs", "forget")  # no target: the cleaned ones, and none is
    assert "Nothing to forget: no finished run is cleaned (4 not cleaned" in nothing.stdout
    assert len(listed(plain_repo)) == 5

    refused = plain_repo.gs("runs", "forget", "run-3")
    assert refused.returncode == 2 and "run run-3 is queued: not forgotten" in refused.stderr
    assert "hint: stop it first" in refused.stderr

    forgot = plain_repo.ok("runs", "forget", "run-1")  # not cleaned: cleaned first
    assert "Forgot 1 run (1 cleaned first)" in forgot.stdout
    assert not os.path.exists(made[2].worktree) and os.path.exists(made[2].data_dir)
    assert "run-1" not in [r["id"] for r in listed(plain_repo)]

    plain_repo.ok("runs", "clean", "run-2")
    assert "Forgot 1 run" in plain_repo.ok("runs", "forget").stdout  # the cleaned one
    assert [r["id"] for r in listed(plain_repo)] == ["s-1", "s-2", "run-3"]

    assert "Forgot 2 runs (2 cleaned first with their data)" in plain_repo.ok("runs", "forget", "--sweep", "s",
                                                                              "--purge").stdout
    assert not os.path.exists(made[0].data_dir)
    assert store.load(plain_repo.common_dir).sweeps == {}  # gone with its last run
    assert plain_repo.git("for-each-ref", "refs/gpuspace").stdout == ""
    assert plain_repo.git("worktree", "list", "--porcelain").stdout.count("worktree ") == 1

    plain_repo.ok("runs", "stop", "run-3")
    plain_repo.ok("runs", "forget", "run-3")
    assert listed(plain_repo) == []
    with store.locked(plain_repo.common_dir) as runs:  # ids are never given twice
        assert runs.next_id("run") == "run-4" and runs.next_id("s") == "s-3"


def test_forget_of_unknown_targets_is_one_line(plain_repo):
    seed(plain_repo, {})
    for args, message in ((("runs", "forget", "run-9"), "no run 'run-9'"),
                          (("runs", "forget", "--sweep", "nope"), "no sweep 'nope'")):
        result = plain_repo.gs(*args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


# --- options anywhere ---------------------------------------------------------------------------

def test_runs_takes_its_options_before_or_after_its_positionals(plain_repo):
    seed(plain_repo, {"state": "queued"}, {"state": "queued"}, {"state": "queued", "sweep": "s"}, sweep=Sweep("s"))
    assert "Dropped 1 queued run: run-1" in plain_repo.ok("runs", "stop", "--all", "run-1").stdout
    assert "Dropped 1 queued run: run-2" in plain_repo.ok("runs", "stop", "run-2", "--all").stdout
    assert "Dropped 1 queued run: s-1" in plain_repo.ok("runs", "--sweep", "s", "--all", "stop").stdout
    assert [r["state"] for r in listed(plain_repo)] == ["stopped"] * 3
    assert json.loads(plain_repo.ok("runs", "--json", "show", "run-1").stdout)["id"] == "run-1"


def _samples(positionals: list[cliwalk.Positional]) -> list[str]:
    return [p.choices[-1] if p.choices else f"{p.dest}-value" for p in positionals]


def _verbs(parser: argparse.ArgumentParser):
    """Every parser people type words to: each verb's, and each of config's actions."""
    for command in cliwalk.commands(parser):
        sub = cliwalk._subparsers(parser).choices[command.name]
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        yield from ([(f"{command.name} {name}", [command.name, name], p) for name, p in actions[0].choices.items()]
                    if actions else [(command.name, [command.name], sub)])


def test_every_verb_takes_an_option_anywhere_among_its_positionals():
    parser = build_parser()
    checked = 0
    for name, prefix, sub in _verbs(parser):
        positionals = [p for p in cliwalk.positionals(sub)]
        if not positionals or any(a.nargs == argparse.REMAINDER for a in sub._actions):
            continue  # exec: what follows its worktree is the command's
        flag = next((o.flags[-1] for o in cliwalk.options(sub) if not o.takes_value and o.dest != "help"), None)
        valued = next((o for o in cliwalk.options(sub) if o.takes_value and not o.choices and o.dest != "help"), None)
        words = _samples(positionals)
        required = [word for a in sub._actions if a.required and a.option_strings
                    for word in (a.option_strings[-1], list(a.choices)[-1] if a.choices else "1")]
        prefix = [*prefix, *required]
        expected = vars(parser.parse_args([*prefix, *words]))
        for option in ([flag] if flag else []) + ([[valued.flags[-1], "1"]] if valued else []):
            option = option if isinstance(option, list) else [option]
            wanted = vars(parser.parse_args([*prefix, *words, *option]))
            for at in range(len(words) + 1):
                argv = [*prefix, *words[:at], *option, *words[at:]]
                assert vars(parser.parse_args(argv)) == wanted, f"{name}: {argv}"
                checked += 1
        assert expected  # parsed with no option at all
    assert checked > 40


# --- --help from an editable install ------------------------------------------------------------

def test_help_after_an_editable_install_shows_the_man_page_or_the_usage(tmp_path):
    """`pip install -e` puts no data files: `git-gpuspace --help` shows the checkout's page, and
    its first run links the page where `man` (and so `git gpuspace --help`) finds it."""
    if shutil.which("man") is None:
        pytest.skip("no man here")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              "--no-deps", "-e", str(source)], capture_output=True, text=True)
    if install.returncode != 0:  # no index to fetch the build backend from: with this one's setuptools
        (venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "host.pth").write_text(
            next(p for p in sys.path if p.endswith("site-packages")) + "\n")
        install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                                  "--no-build-isolation", "-e", str(source)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    page = venv / "share" / "man" / "man1" / "git-gpuspace.1"
    assert not os.path.lexists(page)  # what an editable install leaves out

    system_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                  if not Path(p, "git-gpuspace").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env.update(MANPAGER="cat", PAGER="cat", MANWIDTH="80", PATH=f"{venv / 'bin'}{os.pathsep}{system_path}")
    direct = subprocess.run(["git-gpuspace", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    assert "GIT-GPUSPACE(1)" in direct.stdout and "EXIT STATUS" in direct.stdout
    assert page.resolve() == (source / "man" / "git-gpuspace.1").resolve()
    for argv in (["git", "gpuspace", "--help"], ["git", "help", "gpuspace"]):
        shown = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "GIT-GPUSPACE(1)" in shown.stdout

    # no man at all: the parser's help, not an error
    bare = {**env, "PATH": str(venv / "bin")}
    usage = subprocess.run([str(venv / "bin" / "git-gpuspace"), "--help"], capture_output=True, text=True, env=bare,
                           cwd=tmp_path)
    assert usage.returncode == 0 and "usage: git gpuspace" in usage.stdout and usage.stderr == ""


def test_restarts_and_time_lost_show_where_preemption_is_in_play(plain_repo):
    preempted_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=20)
    seed(plain_repo,
         {"preemptible": True, "restarts": 2, "lost_s": 41.4},
         {},
         {"state": "preempted", "preemptible": True, "preempted_at": preempted_at, "reason": "for run-9 (priority 5)"},
         {"state": "queued", "preemptible": True, "restarts": 1, "lost_s": 3.0, "preempted_at": preempted_at},
         {"preemptible": True, "lost_s": 700.0, "restarts": 3})
    headers, rows = table(plain_repo)
    assert headers[:10] == ["RUN", "SWEEP", "PARAMS", "STATE", "REASON", "EXIT", "TIME", "RESTARTS", "GPUS", "COMMIT"]
    assert rows[0]["RESTARTS"] == "2 (41s lost)" and rows[1]["RESTARTS"] == "0"
    assert rows[2]["STATE"] == "preempted" and rows[2]["RESTARTS"].startswith("0 (") and rows[2]["RESTARTS"] != "0 (0s lost)"
    assert rows[3]["RESTARTS"].startswith("1 (2") and rows[4]["RESTARTS"] == "3 (12m lost)"  # lost meanwhile counts
    records = listed(plain_repo)
    assert [(r["restarts"], r["preemptible"], r["priority"]) for r in records] == \
        [(2, True, 0), (0, False, 0), (0, True, 0), (1, True, 0), (3, True, 0)]
    assert records[0]["lost_s"] == 41.4 and records[2]["lost_s"] >= 20 and records[3]["lost_s"] >= 23
    assert [r["id"] for r in listed(plain_repo, "--state", "preempted")] == [records[2]["id"]]
    assert plain_repo.ok("runs", "--csv").stdout.splitlines()[0].startswith("run,sweep,params,state,reason,exit,time,"
                                                                            "restarts,gpus")
    status = plain_repo.gs("status")
    assert "runs: 2 queued" not in status.stdout
    assert "runs: 1 queued, 1 preempted, 3 succeeded" in status.stdout, status.stdout + status.stderr


def test_no_restarts_column_without_preemption(plain_repo):
    seed(plain_repo, {}, {"state": "failed"})
    headers, _ = table(plain_repo)
    assert "RESTARTS" not in headers
