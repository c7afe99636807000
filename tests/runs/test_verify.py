"""`verify`: each commit checked in a run of its own on the real engine; verdicts in git notes,
cached by tree; ranges, on-commit and pre-push."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import FAKES, fake_gpu_uuids, wait_for
from git_gpuspace import verify
from git_gpuspace.errors import UsageError
from git_gpuspace.git import worktrees
from git_gpuspace.runs.model import Run

CHECK = ["sh", "-c", "test ! -e broken && echo checked $GPUSPACE_COMMIT"]


def commits(repo, *names: str) -> list[str]:
    made = []
    for name in names:
        (repo.path / name).write_text(name + "\n")
        repo.git("add", name)
        repo.git("commit", "-q", "-m", f"add {name}")
        made.append(repo.git("rev-parse", "HEAD").stdout.strip())
    return made


def runs(repo) -> list[dict]:
    return json.loads(repo.ok("runs", "--json").stdout)


def note(repo, name: str, commit: str) -> str:
    return repo.git("notes", f"--ref=gpuspace/{name}", "show", commit).stdout


def test_pass_and_fail_are_notes_that_git_log_shows(repo):
    repo.ok("verify", "add", "tests", "--gpus", "1", "--", *CHECK)
    assert "tests: sh -c" in repo.ok("verify", "list").stdout
    good, bad = commits(repo, "a", "broken")
    result = repo.gs("verify", f"{good}~1..{bad}", "--name", "tests", "-k")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2].startswith(f"{good[:7]} pass") and lines[-1].startswith(f"{bad[:7]} fail add broken  (log: ")
    passed = note(repo, "tests", good)
    assert passed.startswith("pass\n") and "exit code: 0" in passed and "gpu: " in passed and "GPU-" in passed
    assert "image: gpuspace-test:latest (sha256:" in passed and "duration: " in passed and "log: " in passed
    log_path = next(line.split(": ", 1)[1] for line in passed.splitlines() if line.startswith("log: "))
    assert f"checked {good}" in open(log_path).read()
    assert note(repo, "tests", bad).startswith("fail\n") and "exit code: 1" in note(repo, "tests", bad)
    shown = repo.git("log", "--notes=gpuspace/tests", "-2").stdout
    assert "Notes (gpuspace/tests):\n    fail" in shown and "Notes (gpuspace/tests):\n    pass" in shown
    assert repo.containers() == []


def test_a_tree_checked_once_is_not_run_again(repo):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    [commit] = commits(repo, "a")
    repo.ok("verify", "--name", "tests")
    before = len(runs(repo))
    again = repo.ok("verify", commit, "--name", "tests")
    assert "pass (cached)" in again.stdout and len(runs(repo)) == before
    repo.git("commit", "-q", "--amend", "-m", "reworded: same tree")  # a rebase that keeps the tree
    amended = repo.git("rev-parse", "HEAD").stdout.strip()
    assert amended != commit
    reworded = repo.ok("verify", "--name", "tests")
    assert reworded.stdout.startswith(f"{amended[:7]} pass (cached)") and len(runs(repo)) == before
    assert note(repo, "tests", amended).startswith("pass")  # copied to the new commit
    forced = repo.ok("verify", "--name", "tests", "--force")
    assert "(cached)" not in forced.stdout and len(runs(repo)) == before + 1


def test_a_range_stops_at_the_first_failure_unless_keep_going(repo):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    base = repo.git("rev-parse", "HEAD").stdout.strip()
    first, broken, after = commits(repo, "a", "broken", "c")
    stopped = repo.gs("verify", f"{base}..{after}", "--name", "tests")
    assert stopped.returncode == 1
    assert [line.split()[1] for line in stopped.stdout.splitlines()] == ["pass", "fail", "not"]  # "not run"
    assert repo.git("notes", "--ref=gpuspace/tests", "list", after, check=False).returncode != 0
    kept_going = repo.gs("verify", f"{base}..{after}", "--name", "tests", "-k", "-j", "2")
    assert kept_going.returncode == 1
    assert [line.split()[1] for line in kept_going.stdout.splitlines()] == ["pass", "fail", "fail"]  # c has broken too


def started_check(repo, name: str) -> tuple[subprocess.Popen, object]:
    """`verify --name NAME` of HEAD in the background, once its check's container runs."""
    checking = subprocess.Popen(["git-gpuspace", "verify", "--name", name], cwd=repo.path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: any(r["state"] == "running" for r in runs(repo)), 30)
    assert wait_for(lambda: [c.status for c in repo.containers()] == ["running"], 30)
    [container] = repo.containers()
    return checking, container


def test_a_check_stopped_before_it_ended_is_not_a_pass(repo):
    """A check stopped mid-run says "not run" and `verify` exits 1: 0 only when all pass."""
    repo.ok("verify", "add", "slow", "--gpus", "none", "--", "sleep", "60")
    [commit] = commits(repo, "a")
    checking, _ = started_check(repo, "slow")
    [record] = runs(repo)
    repo.ok("runs", "stop", record["id"])
    out, err = checking.communicate(timeout=60)
    assert checking.returncode == 1, out + err
    assert out.startswith(f"{commit[:7]} not run add a"), out
    assert repo.git("notes", "--ref=gpuspace/slow", "list", commit, check=False).returncode != 0


def test_a_check_whose_container_was_killed_gets_no_verdict(repo):
    """A check interrupted from outside (its container killed) leaves no note: no verdict about the code."""
    repo.ok("verify", "add", "slow", "--gpus", "none", "--", "sleep", "60")
    [commit] = commits(repo, "a")
    checking, container = started_check(repo, "slow")
    container.kill()  # as the engine's death would
    out, err = checking.communicate(timeout=60)
    assert checking.returncode == 1, out + err
    [record] = runs(repo)
    assert (record["state"], record["reason"], record["exit_code"]) == ("failed", "interrupted", None)
    for target in (commit, f"{commit}^{{tree}}"):
        assert repo.git("notes", "--ref=gpuspace/slow", "list", target, check=False).returncode != 0, target


def test_a_dirty_worktree_is_checked_as_committed_and_says_so(repo):
    (repo.path / "broken").write_text("not committed\n")
    repo.git("add", "broken")  # staged only
    result = repo.gs("verify", "--", *CHECK)
    assert result.returncode == 0, result.stderr
    assert "uncommitted changes are not checked" in result.stderr
    assert note(repo, "default", repo.git("rev-parse", "HEAD").stdout.strip()).startswith("pass")


def test_on_commit_queues_the_check_and_git_commit_does_not_wait(repo):
    repo.ok("verify", "add", "slow", "--gpus", "none", "--", "sh", "-c", "sleep 3")
    repo.ok("verify", "on-commit", "slow")
    assert "[on commit]" in repo.ok("verify", "list").stdout
    began = time.monotonic()
    commits(repo, "a")
    assert time.monotonic() - began < 2.5  # the hook queues the check and returns
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    assert wait_for(lambda: repo.status()[0]["checks"]["slow"] in ("queued", "running"), 10)
    assert wait_for(lambda: repo.status()[0]["checks"]["slow"] == "pass", 60)
    assert note(repo, "slow", head).startswith("pass")
    repo.ok("verify", "off", "slow")
    assert not (repo.common_dir / "gpuspace.verify-on-commit").exists()


def test_a_commit_queues_only_the_on_commit_checks(repo):
    """Of two named checks, a commit queues the one turned on with `verify on-commit`, not the other."""
    repo.ok("verify", "add", "full", "--gpus", "none", "--", "true")
    repo.ok("verify", "add", "quick", "--gpus", "none", "--", "true")
    repo.ok("verify", "on-commit", "quick")
    [head] = commits(repo, "a")
    assert wait_for(lambda: repo.status()[0]["checks"]["quick"] == "pass", 60)
    assert [r["sweep"] for r in runs(repo) if r["commit"] == head] == ["verify-quick"]
    assert repo.status()[0]["checks"]["full"] == "-"


def test_pre_push_refuses_commits_without_a_pass(repo, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    repo.git("remote", "add", "origin", str(remote))
    repo.git("push", "-q", "origin", "main")
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    repo.ok("hooks", "install", "--pre-push", "tests")
    [unchecked] = commits(repo, "a")
    refused = repo.git("push", "origin", "main", check=False)
    assert refused.returncode != 0
    assert f"{unchecked[:7]} (tests: not checked)" in refused.stderr and "git push --no-verify" in refused.stderr
    new_branch = repo.git("push", "origin", "HEAD:refs/heads/new", check=False)  # the remote has no such branch yet
    assert new_branch.returncode != 0 and f"{unchecked[:7]} (tests: not checked)" in new_branch.stderr
    repo.ok("verify", "--name", "tests")
    assert repo.git("push", "-q", "origin", "main", check=False).returncode == 0
    [broken] = commits(repo, "broken")
    repo.gs("verify", "--name", "tests")
    assert "(tests: fail)" in repo.git("push", "origin", "main", check=False).stderr
    assert repo.git("push", "-q", "--no-verify", "origin", "main", check=False).returncode == 0
    assert broken


@pytest.mark.parametrize("arguments, message", [
    (["--name", "nope"], "no check named 'nope'"),
    (["HEAD..HEAD", "--", "true"], "has no commits"),
    (["add", "Bad/Name", "--", "true"], "invalid check name"),
    (["-j", "0", "--", "true"], "-j must be at least 1"),
    (["nosuchcommit", "--", "true"], "invalid reference"),
])
def test_bad_input_is_one_line_and_creates_nothing(repo, arguments, message):
    before = (repo.state_text(), repo.git("for-each-ref").stdout)
    result = repo.gs("verify", *arguments)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert (repo.state_text(), repo.git("for-each-ref").stdout) == before


# ---------------------------------------------------------------- engine-free: checks and verdicts

SIGNATURE = "-----BEGIN SSH SIGNATURE-----"
UNSIGNED = "not signed by a key you trust (unsigned)"
STARTED = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def info_of(repo) -> worktrees.RepoInfo:
    return worktrees.discover(repo.path)


def head_of(repo) -> str:
    return repo.git("rev-parse", "HEAD").stdout.strip()


def tree_of(repo, commit: str) -> str:
    return repo.git("rev-parse", f"{commit}^{{tree}}").stdout.strip()


def ended_run(commit: str, **fields) -> Run:
    """A check's run as the queue records it once its command ended."""
    values = dict(id="verify-tests-1", command=["pytest", "-q", "tests/"], commit=commit, worktree="/w/verify-1",
                  state="succeeded", exit_code=0, started=STARTED, finished=STARTED + dt.timedelta(seconds=12.34),
                  check="tests")
    values.update(fields)
    return Run(**values)


def text_of(note_text: str) -> str:
    """A note's verdict text, its signature left out."""
    assert SIGNATURE in note_text, note_text
    return note_text.split(SIGNATURE, 1)[0]


def verify_key_dir() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "git-gpuspace" / "verdict-key"


def logging_command(tmp_path, monkeypatch, name: str, real: str) -> Path:
    """`name` first on PATH: it logs each call's arguments, then runs `real`. Returns the log."""
    folder, log = tmp_path / f"logging-{name}", tmp_path / f"{name}.calls"
    folder.mkdir()
    (folder / name).write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    (folder / name).chmod(0o755)
    log.write_text("")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def has_note(repo, name: str, target: str) -> bool:
    return repo.git("notes", f"--ref=gpuspace/{name}", "list", target, check=False).returncode == 0


def plain_note(repo, name: str, target: str, text: str) -> None:
    """A note as `git notes add` writes it: no signature."""
    repo.git("notes", f"--ref=gpuspace/{name}", "add", "-f", "-m", text, target)


def amended(repo) -> str:
    """A new commit with HEAD's tree (a rebase or reword that kept it)."""
    repo.git("commit", "-q", "--amend", "-m", "reworded: same tree")
    return head_of(repo)


def test_a_checks_flags_are_the_gpus_and_image_it_was_given():
    assert verify.Check("tests", ["pytest"], gpus="1", image="img:1").flags() == {"gpus": "1", "image": "img:1"}
    assert verify.Check("tests", ["pytest"], gpus="none").flags() == {"gpus": "none"}
    assert verify.Check("tests", ["pytest"], image="img:1").flags() == {"image": "img:1"}
    assert verify.Check("tests", ["pytest"]).flags() == {}


def test_checks_read_from_the_state_file_and_written_back_are_the_same():
    raw = {"tests": {"command": ["pytest", "-q"], "gpus": "1", "image": "img:1", "on_commit": True},
           "lint": {"command": ["ruff", "check"]}}
    checks = verify.Checks.from_state(raw)
    assert checks.entries == {
        "tests": verify.Check("tests", ["pytest", "-q"], "1", "img:1", True),
        "lint": verify.Check("lint", ["ruff", "check"], None, None, False),
    }
    assert checks.to_state() == raw
    assert verify.Checks().to_state() == {} and verify.Checks.from_state({}).entries == {}


def test_a_check_off_commit_and_without_gpus_or_image_keeps_only_its_command_in_the_state_file():
    checks = verify.Checks({"quick": verify.Check("quick", ["true"], on_commit=False)})
    assert checks.to_state() == {"quick": {"command": ["true"]}}
    assert verify.Checks.from_state({"quick": {"command": ["true"], "on_commit": False}}).entries["quick"].on_commit \
        is False


@pytest.mark.parametrize("name", ["tests", "a", "0", "gpu-tests_2.full", "a" * 41])
def test_a_check_name_of_lower_case_letters_digits_dots_dashes_and_underscores_is_valid(name):
    assert verify.check_name(name) == name


@pytest.mark.parametrize("name", ["", "Tests", "bad/name", "-tests", ".tests", "_tests", "a b", "a" * 42,
                                  "tests:x", "tests\nx"])
def test_any_other_check_name_is_refused_with_what_a_name_may_hold(name):
    with pytest.raises(UsageError) as refused:
        verify.check_name(name)
    assert str(refused.value) == f"invalid check name '{name}'"
    assert refused.value.hint == "lower-case letters, digits, '.', '_' and '-' (it names a notes ref)"


def test_a_check_name_ending_in_a_newline_is_refused():
    """A pattern's `$` matches before a final newline: 'tests\\n' cannot name a notes ref."""
    with pytest.raises(UsageError, match="invalid check name"):
        verify.check_name("tests\n")


def test_each_checks_runs_are_a_sweep_named_after_it():
    assert verify.sweep_of("tests") == "verify-tests"


def test_an_ignored_note_is_one_line_naming_the_commit_or_its_tree_the_check_and_why():
    commit = "1a2b3c4d5e6f7a8b9c0d"
    assert verify.Ignored(commit, False, UNSIGNED).line("tests") == \
        f"git-gpuspace: ignored the note on 1a2b3c4 (tests): {UNSIGNED}"
    assert verify.Ignored(commit, True, "edited").line("lint") == \
        "git-gpuspace: ignored the note on 1a2b3c4's tree (lint): edited"


def test_a_verdicts_word_and_log_are_read_from_its_text():
    passed = verify.Verdict(True, "pass\n\nexit code: 0\nlog: /data/logs/run.log\ncommand: x\n")
    assert (passed.word, passed.log, passed.own) == ("pass", "/data/logs/run.log", True)
    failed = verify.Verdict(False, "fail\n\nexit code: 1\nlog:  /d/logs/run.log  \n", own=False)
    assert (failed.word, failed.log, failed.own) == ("fail", "/d/logs/run.log", False)
    assert verify.Verdict(True, "pass\nlog: -\n").log is None
    assert verify.Verdict(True, "pass\nlog: \n").log is None
    assert verify.Verdict(True, "pass\nexit code: 0\n").log is None
    assert verify.Verdict(True, "pass\ncatalog: /x\nlog: /y\n").log == "/y"


def test_a_verdict_is_a_pass_only_when_its_first_line_says_pass():
    assert verify._parse("pass\n\nexit code: 0\n") == verify.Verdict(True, "pass\n\nexit code: 0\n", True)
    assert verify._parse(" pass \nmore\n", False) == verify.Verdict(True, " pass \nmore\n", False)
    assert verify._parse("fail\n\nexit code: 0 pass\n").passed is False
    assert verify._parse("passed\n").passed is False
    assert verify._parse("\npass\n").passed is False
    assert verify._parse("pass").passed is True


def test_a_commit_never_checked_has_no_verdict(plain_repo):
    head = head_of(plain_repo)
    ignored: list = []
    assert verify.verdicts(info_of(plain_repo), "tests", [head], ignored) == {head: None}
    assert verify.verdict(info_of(plain_repo), "tests", head) is None
    assert ignored == []


def test_a_passed_check_is_a_signed_note_on_the_commit_and_its_tree_that_git_log_shows(plain_repo):
    head = head_of(plain_repo)
    [first, second] = fake_gpu_uuids()[:2]
    run = ended_run(head, gpus=[first, "GPU-gone"], data_dir="/var/data/verify-tests-1")
    verify.record(info_of(plain_repo), run, "gpuspace-test:latest (sha256:abc)")
    expected = "\n".join([
        "pass", "", "exit code: 0", "duration: 12.3 s", "image: gpuspace-test:latest (sha256:abc)",
        f"gpu: Fake H200 ({first}), ? (GPU-gone)", "log: /var/data/verify-tests-1/logs/run.log",
        "command: pytest -q tests/", f"commit: {head}", "run: verify-tests-1"]) + "\n"
    assert text_of(note(plain_repo, "tests", head)) == expected
    assert text_of(note(plain_repo, "tests", tree_of(plain_repo, head))) == expected
    shown = plain_repo.git("log", "-1", "--notes=gpuspace/tests").stdout
    assert "Notes (gpuspace/tests):\n    pass\n" in shown
    assert plain_repo.git("log", "-1", "--format=%s", "refs/notes/gpuspace/tests").stdout == \
        "git-gpuspace verify tests\n"
    found = verify.verdict(info_of(plain_repo), "tests", head)
    assert found == verify.Verdict(True, expected, True)
    assert (found.word, found.log) == ("pass", "/var/data/verify-tests-1/logs/run.log")
    assert second not in expected


def test_a_failed_check_is_a_fail_note_with_its_exit_code(plain_repo):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head, state="failed", exit_code=1, started=None, finished=None),
                  "img:1")
    expected = "\n".join(["fail", "", "exit code: 1", "duration: -", "image: img:1", "gpu: none", "log: -",
                          "command: pytest -q tests/", f"commit: {head}", "run: verify-tests-1"]) + "\n"
    assert text_of(note(plain_repo, "tests", head)) == expected
    assert verify.verdict(info_of(plain_repo), "tests", head) == verify.Verdict(False, expected, True)
    assert verify.verdict(info_of(plain_repo), "tests", head).word == "fail"


def test_a_succeeded_run_with_an_exit_code_other_than_0_is_a_fail(plain_repo):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head, state="failed", exit_code=3), "img:1")
    assert note(plain_repo, "tests", head).startswith("fail\n\nexit code: 3\n")


def test_a_one_off_check_is_recorded_as_default(plain_repo):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head, check=None), "img:1")
    assert note(plain_repo, "default", head).startswith("pass\n\nexit code: 0\nduration: 12.3 s\n")
    assert plain_repo.git("for-each-ref", "--format=%(refname)", "refs/notes/").stdout == \
        "refs/notes/gpuspace/default\n"
    assert verify.verdict(info_of(plain_repo), "default", head).passed is True


@pytest.mark.parametrize("state, exit_code", [("stopped", 0), ("stopped", None), ("failed", None), ("pruned", 0),
                                              ("running", 0), ("succeeded", None)])
def test_a_check_stopped_or_interrupted_leaves_no_verdict(plain_repo, state, exit_code):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head, state=state, exit_code=exit_code), "img:1")
    assert plain_repo.git("for-each-ref", "refs/notes/").stdout == ""
    assert verify.verdict(info_of(plain_repo), "tests", head) is None


def test_a_new_verdict_replaces_the_commits_earlier_one(plain_repo):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head, state="failed", exit_code=1), "img:1")
    verify.record(info_of(plain_repo), ended_run(head, id="verify-tests-2"), "img:1")
    assert note(plain_repo, "tests", head).startswith("pass\n")
    assert verify.verdict(info_of(plain_repo), "tests", head).text.endswith("run: verify-tests-2\n")


def test_a_commit_with_an_already_checked_tree_has_that_verdict_and_it_can_be_its_own(plain_repo):
    checked = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(checked), "img:1")
    own = verify.verdict(info_of(plain_repo), "tests", checked)
    reworded = amended(plain_repo)
    assert not has_note(plain_repo, "tests", reworded)
    by_tree = verify.verdict(info_of(plain_repo), "tests", reworded)
    assert by_tree == verify.Verdict(True, own.text, own=False)
    verify.copy_verdict(info_of(plain_repo), "tests", reworded, by_tree)
    assert text_of(note(plain_repo, "tests", reworded)) == own.text
    assert verify.verdict(info_of(plain_repo), "tests", reworded) == verify.Verdict(True, own.text, True)
    assert plain_repo.git("log", "-1", "--format=%s", "refs/notes/gpuspace/tests").stdout == \
        "git-gpuspace verify tests\n"


def test_a_copied_verdict_goes_on_the_commit_only_not_its_tree(plain_repo):
    head = head_of(plain_repo)
    text = "pass\n\nexit code: 0\n"
    verify.copy_verdict(info_of(plain_repo), "tests", head, verify.Verdict(True, text, own=False))
    assert text_of(note(plain_repo, "tests", head)) == text
    assert not has_note(plain_repo, "tests", tree_of(plain_repo, head))
    assert verify.verdict(info_of(plain_repo), "tests", head) == verify.Verdict(True, text, True)


def test_verdicts_of_a_range_are_each_commits_own_or_its_trees(plain_repo):
    base = head_of(plain_repo)
    [first, second] = commits(plain_repo, "a", "b")
    verify.record(info_of(plain_repo), ended_run(first), "img:1")
    verify.record(info_of(plain_repo), ended_run(second, state="failed", exit_code=1), "img:1")
    reworded = amended(plain_repo)  # second's tree
    ignored: list = []
    found = verify.verdicts(info_of(plain_repo), "tests", [base, first, second, reworded], ignored)
    assert list(found) == [base, first, second, reworded]
    assert found[base] is None
    assert (found[first].passed, found[first].own) == (True, True)
    assert (found[second].passed, found[second].own) == (False, True)
    assert (found[reworded].passed, found[reworded].own, found[reworded].text) == (False, False, found[second].text)
    assert ignored == []


def test_a_check_has_verdicts_of_its_own_name_only(plain_repo):
    head = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(head), "img:1")
    assert verify.verdict(info_of(plain_repo), "lint", head) is None
    assert not has_note(plain_repo, "lint", head)


def test_an_unsigned_note_is_not_a_verdict_and_is_said_once(plain_repo):
    head = head_of(plain_repo)
    plain_note(plain_repo, "tests", head, "pass")
    ignored: list = []
    assert verify.verdicts(info_of(plain_repo), "tests", [head], ignored) == {head: None}
    assert ignored == [verify.Ignored(head, False, UNSIGNED)]
    assert verify.verdicts(info_of(plain_repo), "tests", [head]) == {head: None}  # nobody asked why


def test_an_unsigned_note_on_a_shared_tree_is_said_once_for_the_range(plain_repo):
    first = head_of(plain_repo)
    plain_note(plain_repo, "tests", tree_of(plain_repo, first), "pass")
    reworded = amended(plain_repo)
    ignored: list = []
    assert verify.verdicts(info_of(plain_repo), "tests", [first, reworded], ignored) == {first: None, reworded: None}
    assert ignored == [verify.Ignored(first, True, UNSIGNED)]
    assert ignored[0].line("tests") == f"git-gpuspace: ignored the note on {first[:7]}'s tree (tests): {UNSIGNED}"


def test_a_commits_unsigned_note_gives_way_to_its_trees_signed_verdict(plain_repo):
    checked = head_of(plain_repo)
    verify.record(info_of(plain_repo), ended_run(checked), "img:1")
    reworded = amended(plain_repo)
    plain_note(plain_repo, "tests", reworded, "pass")
    plain_note(plain_repo, "tests", checked, "fail")  # replaces its signed note
    ignored: list = []
    found = verify.verdicts(info_of(plain_repo), "tests", [checked, reworded], ignored)
    assert (found[checked].passed, found[checked].own) == (True, False)
    assert (found[reworded].passed, found[reworded].own) == (True, False)
    assert ignored == [verify.Ignored(checked, False, UNSIGNED), verify.Ignored(reworded, False, UNSIGNED)]


def test_a_signed_note_copied_to_another_commit_is_not_its_verdict(plain_repo):
    [first, second] = commits(plain_repo, "a", "b")
    verify.record(info_of(plain_repo), ended_run(first), "img:1")
    plain_repo.git("notes", "--ref=gpuspace/tests", "copy", first, second)
    ignored: list = []
    assert verify.verdicts(info_of(plain_repo), "tests", [second], ignored) == {second: None}
    assert [(i.commit, i.on_tree) for i in ignored] == [(second, False)]
    assert "copied or edited" in ignored[0].why


def test_a_verdict_just_written_counts_without_running_ssh_keygen_again(plain_repo, tmp_path, monkeypatch):
    """What `record` signed is remembered as verified: reading it back (the commit's note, or its
    tree's for a commit with that tree) asks ssh-keygen nothing."""
    verify.record(info_of(plain_repo), ended_run(head_of(plain_repo)), "img:1")  # the key exists from here on
    [checked] = commits(plain_repo, "a")
    calls = logging_command(tmp_path, monkeypatch, "ssh-keygen", shutil.which("ssh-keygen"))
    verify.record(info_of(plain_repo), ended_run(checked), "img:1")
    assert [line.split()[:2] for line in calls.read_text().splitlines()] == [["-Y", "sign"], ["-Y", "sign"]]
    calls.write_text("")
    reworded = amended(plain_repo)
    found = verify.verdicts(info_of(plain_repo), "tests", [checked, reworded])
    assert [(v.passed, v.own) for v in found.values()] == [(True, True), (True, False)]
    assert calls.read_text() == ""


def test_the_very_first_verdict_counts_without_running_ssh_keygen_again(plain_repo, tmp_path, monkeypatch):
    head = head_of(plain_repo)
    calls = logging_command(tmp_path, monkeypatch, "ssh-keygen", shutil.which("ssh-keygen"))
    verify.record(info_of(plain_repo), ended_run(head), "img:1")
    calls.write_text("")
    assert verify.verdict(info_of(plain_repo), "tests", head).passed is True
    assert calls.read_text() == ""


def test_a_check_on_no_gpu_records_its_verdict_without_asking_the_driver(plain_repo, tmp_path, monkeypatch):
    head = head_of(plain_repo)
    calls = logging_command(tmp_path, monkeypatch, "nvidia-smi", str(FAKES / "nvidia-smi"))
    verify.record(info_of(plain_repo), ended_run(head), "img:1")
    assert calls.read_text() == ""
    assert "\ngpu: none\n" in note(plain_repo, "tests", head)
    [uuid] = fake_gpu_uuids()[:1]
    verify.record(info_of(plain_repo), ended_run(head, gpus=[uuid]), "img:1")
    assert calls.read_text() != ""
    assert f"\ngpu: Fake H200 ({uuid})\n" in note(plain_repo, "tests", head)


def test_a_failure_to_sign_is_one_line_naming_the_commit_check_and_why(plain_repo, tmp_path, monkeypatch, capsys):
    head = head_of(plain_repo)
    broken = tmp_path / "broken-bin"
    broken.mkdir()
    (broken / "ssh-keygen").write_text("#!/bin/sh\necho 'ssh-keygen: first line' >&2\necho 'no entropy' >&2\nexit 255\n")
    (broken / "ssh-keygen").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    verify.record(info_of(plain_repo), ended_run(head, check="lint"), "img:1")
    assert capsys.readouterr() == ("", f"git-gpuspace: the verdict of {head[:7]} (lint) was not written: ssh-keygen "
                                       "could not make your verdict signing key: no entropy\n")
    assert plain_repo.git("for-each-ref", "refs/notes/").stdout == ""


def test_a_verdict_that_cannot_be_signed_is_not_written_and_says_why(plain_repo, capsys):
    head = head_of(plain_repo)
    key = verify_key_dir()
    key.mkdir(parents=True)
    (key / "id_ed25519").write_text("not a key\n")
    (key / "id_ed25519.pub").write_text("ssh-ed25519 AAAA not-a-key\n")
    verify.record(info_of(plain_repo), ended_run(head), "img:1")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"git-gpuspace: the verdict of {head[:7]} (tests) was not written: ssh-keygen could not "
                          "sign the verdict: "), err
    assert len(err.splitlines()) == 1, err
    assert plain_repo.git("for-each-ref", "refs/notes/").stdout == ""


def test_without_ssh_keygen_a_verdict_is_not_written_and_the_line_says_what_to_install(plain_repo, capsys, tmp_path,
                                                                                       monkeypatch):
    head = head_of(plain_repo)
    only_git = tmp_path / "only-git"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(only_git))
    verify.record(info_of(plain_repo), ended_run(head, check=None), "img:1")
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"git-gpuspace: the verdict of {head[:7]} (default) was not written: ssh-keygen not "
                              "found: it is needed to make your verdict signing key (verdict notes are signed) "
                              "(install OpenSSH's client (Debian/Ubuntu: apt-get install openssh-client))\n")
    monkeypatch.undo()
    assert plain_repo.git("for-each-ref", "refs/notes/").stdout == ""
