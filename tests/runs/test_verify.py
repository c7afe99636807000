"""`verify`: each commit checked in a run of its own on the real engine; verdicts in git notes,
cached by tree; ranges, on-commit and pre-push."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import wait_for

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
