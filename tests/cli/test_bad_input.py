"""The bad input catalogue: each case a clear one-line error, a non-zero exit, nothing changed.

And the inputs that look odd but are valid (spaces, unicode) work.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import gpuspace

LONG = "x" * 300
CASES = [
    # (id, arguments after `git gpuspace`, exit code, what the error says)
    ("branch with space", ["add", "-b", "has space", "{wt}"], 255, "not a valid branch name"),
    ("branch leading dash", ["add", "-b-dash", "{wt}"], 255, "not a valid branch name"),
    ("branch with ..", ["add", "-b", "a..b", "{wt}"], 255, "not a valid branch name"),
    ("branch ending .lock", ["add", "-b", "topic.lock", "{wt}"], 255, "not a valid branch name"),
    ("branch with ~^:", ["add", "-b", "a~1^2:x", "{wt}"], 255, "not a valid branch name"),
    ("branch HEAD", ["add", "-b", "HEAD", "{wt}"], 255, "not a valid branch name"),
    ("branch exists", ["add", "-b", "main", "{wt}"], 255, "already exists"),
    ("very long branch", ["add", "-b", LONG, "{wt}"], 1, "cannot create"),
    ("very long path", ["add", "-b", "long-path", "{wts}/" + LONG], 2, "too long"),
    ("path exists", ["add", "-b", "new", "{existing}"], 128, "already exists"),
    ("path is a file", ["add", "-b", "new", "{existing}/keep.txt"], 128, "already exists"),
    ("path inside .git", ["add", "-b", "new", "{repo}/.git/wt"], 2, "inside the git directory"),
    ("unknown commit", ["add", "-b", "new", "{wt}", "no-such-ref"], 255, "not a valid object name"),
    ("unknown commit, no -b", ["add", "{wt}", "no-such-ref"], 128, "invalid reference"),
    ("no path, no -b", ["add"], 2, "give a path"),
    ("gpu index out of range", ["add", "-b", "new", "{wt}", "--gpus", "4,"], 1, "unknown GPU '4'"),
    ("gpu count over inventory", ["add", "-b", "new", "{wt}", "--gpus", "5"], 1, "this host has 4"),
    ("gpu duplicated", ["add", "-b", "new", "{wt}", "--gpus", "1,1"], 2, "listed twice"),
    ("gpu index and uuid of same", ["add", "-b", "new", "{wt}", "--gpus", "0,{uuid0}"], 2, "named twice"),
    ("gpu unknown uuid", ["add", "-b", "new", "{wt}", "--gpus", "GPU-deadbeef"], 1, "unknown GPU"),
    ("gpu garbage", ["add", "-b", "new", "{wt}", "--gpus", "two"], 2, "invalid GPU id"),
    ("gpu negative", ["add", "-b", "new", "{wt}", "--gpus", "-1"], 2, "invalid GPU id"),
    ("memory malformed", ["add", "-b", "new", "{wt}", "--memory", "12q"], 2, "invalid --memory"),
    ("memory too small", ["add", "-b", "new", "{wt}", "--memory", "1m"], 2, "too small"),
    ("memory absurd", ["add", "-b", "new", "{wt}", "--memory", "1000p"], 2, "more than this host's memory"),
    ("cpus malformed", ["add", "-b", "new", "{wt}", "--cpus", "four"], 2, "invalid --cpus"),
    ("cpus zero", ["add", "-b", "new", "{wt}", "--cpus", "0"], 2, "out of range"),
    ("cpus absurd", ["add", "-b", "new", "{wt}", "--cpus", "99999"], 2, "out of range"),
    ("shm malformed", ["add", "-b", "new", "{wt}", "--shm-size", "lots"], 2, "invalid --shm-size"),
    ("port out of range", ["add", "-b", "new", "{wt}", "--port", "web=70000"], 2, "out of range"),
    ("port malformed", ["add", "-b", "new", "{wt}", "--port", "8000"], 2, "invalid --port"),
    ("port name twice", ["add", "-b", "new", "{wt}", "--port", "a=80", "--port", "a=81"], 2, "given twice"),
    ("host port twice", ["add", "-b", "new", "{wt}", "--port", "a=80:25001", "--port", "b=81:25001"], 2, "twice"),
    ("publish address", ["add", "-b", "new", "{wt}", "--jupyter", "--publish-address", "localhost:1"], 2, "invalid --publish-address"),
    ("unknown option", ["add", "-b", "new", "{wt}", "--gpu", "1"], 2, "unrecognized arguments"),
    ("unknown worktree", ["remove", "no-such-worktree"], 2, "no worktree 'no-such-worktree'"),
    ("remove main", ["remove", "{repo}"], 2, "main worktree cannot be removed"),
    ("start unbound", ["start", "main"], 1, "is not bound"),
    ("exec unbound", ["exec", "main", "--", "true"], 1, "is not bound"),
    ("exec without command", ["exec", "main"], 2, "no command given"),
    ("unknown setting", ["config", "set", "colour", "blue"], 2, "unknown setting 'colour'"),
    ("bad service value", ["config", "set", "jupyter", "maybe"], 2, "must be true, false or a host port"),
    ("unknown devcontainer", ["add", "-b", "new", "{wt}", "--devcontainer", "nope"], 2, "no devcontainer 'nope'"),
]


@pytest.mark.parametrize("arguments,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(repo, tmp_path, arguments, code, message):
    from conftest import fake_gpu_uuids

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data\n")
    wts = tmp_path / "wts"
    values = dict(wt=wts / "new", wts=wts, existing=existing, repo=repo.path, uuid0=fake_gpu_uuids()[0])
    args = [a.format(**values) for a in arguments]
    before = repo.snapshot(wts)
    result = repo.gs(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("git-gpuspace: error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert repo.snapshot(wts) == before
    assert (existing / "keep.txt").read_text() == "user data\n"


STATE_CASES = [
    ("corrupt", "schema = 1\n[[bindings]\n", "line 2, column"),
    ("truncated", 'schema = 1\n[[bindings]]\npath = "/x', "line 3"),
    ("wrong type", "schema = 1\nbindings = 'none'\n", "'bindings' must be an array of tables"),
    ("wrong binding type", "schema = 1\n[[bindings]]\npath = '/x'\ncontainer = 'c'\nimage = 'i'\nshare = 'yes'\n", "bindings[0].share must be true or false"),
    ("future schema", "schema = 2\n", "newer than this git-gpuspace understands"),
    ("bad port entry", "schema = 1\n[[bindings]]\npath = '/x'\ncontainer = 'c'\nimage = 'i'\nports = ['web']\n", "bad entry"),
]


@pytest.mark.parametrize("content,message", [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES])
def test_bad_state_file(plain_repo, tmp_path, content, message):
    state = plain_repo.common_dir / "gpuspace.toml"
    state.write_text(content)
    for args in (["status"], ["add", "-b", "x", str(tmp_path / "x"), "--gpus", "none"], ["prune"], ["init"]):
        result = gpuspace(*args, cwd=plain_repo.path)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert state.read_text() == content
    assert not (tmp_path / "x").exists()


def test_outside_a_repo_in_a_bare_repo_and_inside_git_dir(tmp_path, plain_repo):
    outside = gpuspace("status", cwd=tmp_path)
    assert outside.returncode == 1 and "not a git repository" in outside.stderr
    inside = gpuspace("add", "-b", "x", str(tmp_path / "x"), cwd=plain_repo.common_dir / "refs")
    assert inside.returncode == 1 and "inside the git directory" in inside.stderr
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(plain_repo.path), str(bare)], check=True)
    result = gpuspace("status", "--json", cwd=bare, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def test_odd_but_valid_names_work(repo, tmp_path):
    wt = tmp_path / "with space" / "ünïcødé wt"
    branch = "feature/ünïcødé-$(touch${IFS}pwned);`id`x"  # valid for git, hostile for a shell
    repo.ok("add", "-b", branch, str(wt), "--gpus", "none")
    [container] = repo.containers()
    assert container.labels["gpuspace.branch"] == branch  # data, never interpreted
    assert all(c.isalnum() or c in "_.-" for c in container.name)
    assert not os.path.exists("pwned") and not (repo.path / "pwned").exists()
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""
    assert [r["state"] for r in repo.status() if r["branch"] == branch] == ["running"]
    repo.ok("remove", str(wt))
