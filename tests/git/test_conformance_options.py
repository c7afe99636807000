"""`git gpuspace add`/`remove`/`prune` with the options git's own take, and refused where git
refuses: each test runs `git worktree ...` and ours on the same repository and compares exit
codes, stderr's first line (git's `fatal: `/`error: ` is our `git-gpuspace: error: `), the
worktree list, branches, upstreams and the admin dir's files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Repo
from helpers import commit, git_out
from test_conformance import branches, history, observe, remote_branch

pytestmark = pytest.mark.usefixtures("docker_client")

OURS = ("--gpus", "none", "--no-start")


def run_git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def first_lines(stderr: str, count: int = 1) -> list[str]:
    """stderr's first lines with git's and our error prefixes made one."""
    lines = [re.sub(r"^(fatal|error|git-gpuspace: error): ", "<error>: ", line) for line in stderr.splitlines()]
    return lines[:count]


def admin_files(repo: Path, worktree: Path) -> dict[str, str]:
    admin = Path((worktree / ".git").read_text().split(": ", 1)[1].strip())
    found = {}
    for name in sorted(os.listdir(admin)):
        if (admin / name).is_file() and name in ("locked", "HEAD", "commondir", "ORIG_HEAD"):
            found[name] = (admin / name).read_text().replace(str(worktree), "<path>")
        else:
            found[name] = "dir" if (admin / name).is_dir() else "file"
    found.pop("index", None)  # whether an index is there is compared by the callers that care
    return found


def new_repo(tmp_path: Path, setup=history) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git_out("init", "-q", "-b", "main", cwd=repo)
    setup(repo)
    return repo


def compare_add(repo: Path, tmp_path: Path, args: list[str], *, reset=None) -> dict:
    """`git worktree add` then ours with `args` (with {p}, the path), each observed and undone in
    between; returns both observations and stderrs."""
    before = branches(repo)
    tips = {name: git_out("rev-parse", name, cwd=repo).strip() for name in before}
    logs = {name: (repo / ".git" / "logs" / "refs" / "heads" / name).read_bytes() for name in before}
    seen = {}
    for who in ("git", "ours"):
        where = tmp_path / who / "wt"
        made = [arg.replace("{p}", str(where)) for arg in args]
        if who == "git":
            result = run_git("worktree", "add", *made, cwd=repo)
        else:
            result = subprocess.run(["git-gpuspace", "add", *made, *OURS], cwd=repo, capture_output=True, text=True)
        assert result.returncode == 0, (who, result.stderr)
        branch = git_out("symbolic-ref", "-q", "--short", "HEAD", cwd=where, check=False).strip() or None
        seen[who] = {
            "observed": observe(repo, where, branch),
            "admin": admin_files(repo, where),
            "index file": (Path((where / ".git").read_text().split(": ", 1)[1].strip()) / "index").exists(),
            "branches": branches(repo),
            "tips": {name: git_out("rev-parse", name, cwd=repo).strip() for name in branches(repo)},
            "stderr": first_lines(result.stderr),
        }
        if who == "git":
            git_out("worktree", "remove", "-f", "-f", str(where), cwd=repo)
            for name in branches(repo) - before:
                git_out("branch", "-D", name, cwd=repo)
                git_out("config", "--remove-section", f"branch.{name}", cwd=repo, check=False)
            for name, tip in tips.items():  # as they were, reflogs too
                git_out("update-ref", f"refs/heads/{name}", tip, cwd=repo)
                (repo / ".git" / "logs" / "refs" / "heads" / name).write_bytes(logs[name])
            if reset:
                reset(repo)
    return seen


def assert_same(seen: dict) -> None:
    for key in seen["git"]:
        assert seen["ours"][key] == seen["git"][key], key


@pytest.fixture
def cleanup(docker_client):
    repos = []
    yield repos.append
    for path in repos:
        for container in Repo(path=path, client=docker_client).containers():
            container.remove(force=True)


@pytest.mark.parametrize("args", [
    ["-B", "made", "{p}"],
    ["-B", "side", "{p}", "HEAD~1"],
    ["-B", "side", "{p}"],
    ["--lock", "--detach", "{p}"],
    ["--lock", "--reason", "on a USB disk", "-b", "made", "{p}"],
    ["--no-checkout", "-b", "made", "{p}"],
    ["--no-checkout", "--detach", "{p}", "HEAD~1"],
    ["-f", "{p}", "main"],
    ["--force", "--force", "{p}", "main"],
    ["--track", "-b", "made", "{p}", "side"],
    ["--track", "-b", "made", "{p}"],
    ["-d", "{p}", "v1"],
], ids=lambda args: " ".join(args))
def test_an_option_does_what_gits_does(tmp_path, cleanup, args):
    repo = new_repo(tmp_path)
    cleanup(repo)
    assert_same(compare_add(repo, tmp_path, args))


@pytest.mark.parametrize("args,config", [
    (["--guess-remote", "{p}"], {}),
    (["{p}"], {"worktree.guessRemote": "true"}),
    (["--no-guess-remote", "{p}"], {"worktree.guessRemote": "true"}),
    (["--no-track", "-b", "made", "{p}", "origin/feature"], {}),
    (["--track", "-b", "made", "{p}", "origin/feature"], {}),
], ids=lambda value: " ".join(value) if isinstance(value, list) else str(value))
def test_remote_tracking_options_do_what_gits_do(tmp_path, cleanup, args, config):
    """Row 4: a worktree at .../feature with origin/feature there: `feature` made from it,
    tracking it, under --guess-remote or worktree.guessRemote."""
    repo = new_repo(tmp_path, setup=lambda repo: (commit(repo, {"x": "x\n"}), remote_branch(repo)))
    cleanup(repo)
    for key, value in config.items():
        git_out("config", key, value, cwd=repo)
    seen = {}
    for who in ("git", "ours"):
        where = tmp_path / who / "feature"
        made = [arg.replace("{p}", str(where)) for arg in args]
        result = (run_git("worktree", "add", *made, cwd=repo) if who == "git" else
                  subprocess.run(["git-gpuspace", "add", *made, *OURS], cwd=repo, capture_output=True, text=True))
        assert result.returncode == 0, result.stderr
        branch = git_out("symbolic-ref", "-q", "--short", "HEAD", cwd=where).strip()
        seen[who] = (observe(repo, where, branch), first_lines(result.stderr), git_out("rev-parse", "HEAD", cwd=where))
        if who == "git":
            git_out("worktree", "remove", "-f", str(where), cwd=repo)
            git_out("branch", "-D", branch, cwd=repo)
            git_out("config", "--remove-section", f"branch.{branch}", cwd=repo, check=False)
    assert seen["ours"] == seen["git"]


def test_quiet_says_nothing_and_the_preparing_line_is_gits(tmp_path, cleanup):
    repo = new_repo(tmp_path)
    cleanup(repo)
    quiet = subprocess.run(["git-gpuspace", "add", "-q", "--detach", str(tmp_path / "q"), *OURS], cwd=repo,
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    side = git_out("rev-parse", "side", cwd=repo).strip()
    for args in (["-b", "fresh"], ["--detach"], [], ["-B", "side"]):
        by_git = run_git("worktree", "add", *args, str(tmp_path / "g" / "side"), cwd=repo)
        git_out("worktree", "remove", "-f", str(tmp_path / "g" / "side"), cwd=repo)
        if args[:1] == ["-b"]:
            git_out("branch", "-D", "fresh", cwd=repo)
        git_out("update-ref", "refs/heads/side", side, cwd=repo)  # where -B found it
        ours = subprocess.run(["git-gpuspace", "add", *args, str(tmp_path / "o" / "side"), *OURS], cwd=repo,
                              capture_output=True, text=True)
        assert ours.returncode == 0, ours.stderr
        assert first_lines(ours.stderr) == first_lines(by_git.stderr) != [], args
        assert first_lines(ours.stderr)[0].startswith("Preparing worktree (")
        subprocess.run(["git-gpuspace", "remove", "-f", str(tmp_path / "o" / "side")], cwd=repo, check=True,
                       capture_output=True)
        if args[:1] == ["-b"]:
            git_out("branch", "-D", "fresh", cwd=repo)


def refusals_compare(repo: Path, by_git: subprocess.CompletedProcess, ours: subprocess.CompletedProcess,
                     lines: int = 1) -> None:
    assert ours.returncode == by_git.returncode, (by_git.stderr, ours.stderr)
    lines = min(lines, len(by_git.stderr.splitlines()))  # after git's last line, ours may give a hint
    assert first_lines(ours.stderr, lines) == first_lines(by_git.stderr, lines), (by_git.stderr, ours.stderr)


def ours(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git-gpuspace", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
def test_add_over_a_registered_but_missing_path_is_refused_as_git_refuses(tmp_path, cleanup, locked):
    """Row 1: git's refusal (exit 128, its words), -f (twice when locked) takes the path over:
    one entry in `worktree list`, which `git worktree remove` then removes."""
    repo = new_repo(tmp_path)
    cleanup(repo)
    where = tmp_path / "wt"
    git_out("worktree", "add", "-q", "--detach", str(where), cwd=repo)
    if locked:
        git_out("worktree", "lock", str(where), cwd=repo)
    shutil.rmtree(where)
    listed = git_out("worktree", "list", "--porcelain", cwd=repo)
    by_git = run_git("worktree", "add", "--detach", str(where), cwd=repo)
    mine = ours("add", "--detach", str(where), *OURS, cwd=repo)
    refusals_compare(repo, by_git, mine, lines=2)
    assert by_git.returncode == 128
    if locked:
        by_git = run_git("worktree", "add", "-f", "--detach", str(where), cwd=repo)
        mine = ours("add", "-f", "--detach", str(where), *OURS, cwd=repo)
        refusals_compare(repo, by_git, mine, lines=2)
    assert git_out("worktree", "list", "--porcelain", cwd=repo) == listed and not where.exists()  # nothing changed
    forced = ours("add", *(["-f"] * (2 if locked else 1)), "--detach", str(where), *OURS, cwd=repo)
    assert forced.returncode == 0, forced.stderr
    assert git_out("worktree", "list", "--porcelain", cwd=repo).count(f"worktree {where}\n") == 1
    assert os.listdir(repo / ".git" / "worktrees") == ["wt"]
    git_out("worktree", "remove", str(where), cwd=repo)  # git finds it its own


def test_remove_of_a_locked_worktree_needs_force_twice_as_gits(tmp_path, cleanup):
    """Row 8."""
    repo = new_repo(tmp_path)
    cleanup(repo)
    for who in ("g", "o"):
        git_out("worktree", "add", "-q", "--lock", "--reason", "on a USB disk", "--detach", str(tmp_path / who), cwd=repo)
    for force in ([], ["-f"]):
        by_git = run_git("worktree", "remove", *force, str(tmp_path / "g"), cwd=repo)
        mine = ours("remove", *force, str(tmp_path / "o"), cwd=repo)
        refusals_compare(repo, by_git, mine)
        assert by_git.returncode == 128 and "lock reason: on a USB disk" in mine.stderr
    assert (tmp_path / "o" / ".git").exists()
    git_out("worktree", "unlock", str(tmp_path / "o"), cwd=repo)
    git_out("worktree", "lock", str(tmp_path / "o"), cwd=repo)  # no reason: git's other wording
    by_git = run_git("worktree", "remove", "-f", str(tmp_path / "g"), cwd=repo)
    git_out("worktree", "unlock", str(tmp_path / "g"), cwd=repo)
    git_out("worktree", "lock", str(tmp_path / "g"), cwd=repo)
    by_git = run_git("worktree", "remove", "-f", str(tmp_path / "g"), cwd=repo)
    mine = ours("remove", "-f", str(tmp_path / "o"), cwd=repo)
    refusals_compare(repo, by_git, mine)
    assert ours("remove", "-f", "-f", str(tmp_path / "o"), cwd=repo).returncode == 0
    assert run_git("worktree", "remove", "-f", "-f", str(tmp_path / "g"), cwd=repo).returncode == 0
    assert not (tmp_path / "o").exists() and not (tmp_path / "g").exists()


def test_add_after_git_removed_a_bound_worktree_works_at_once(tmp_path, cleanup, docker_client):
    """Row 9: the binding of the worktree git removed is cleaned up by `add` itself."""
    repo = new_repo(tmp_path)
    cleanup(repo)
    where = tmp_path / "wt"
    assert ours("add", "--detach", str(where), *OURS, cwd=repo).returncode == 0
    [first] = Repo(path=repo, client=docker_client).containers()
    git_out("worktree", "remove", str(where), cwd=repo)
    again = ours("add", "--detach", str(where), *OURS, cwd=repo)
    assert again.returncode == 0, again.stderr
    [second] = Repo(path=repo, client=docker_client).containers()
    assert second.id != first.id
    assert str(where) in (repo / ".git" / "gpuspace.toml").read_text()


def _bad_tree(repo: Path) -> str:
    blob = git_out("hash-object", "-w", "--stdin", cwd=repo, input="x\n").strip()
    inner = git_out("mktree", cwd=repo, input=f"100644 blob {blob}\t.git\n").strip()
    tree = git_out("mktree", cwd=repo, input=f"040000 tree {inner}\tsub\n").strip()
    return git_out("commit-tree", tree, "-m", "by hand", cwd=repo).strip()


@pytest.mark.parametrize("case", ["checked out elsewhere", "-B checked out elsewhere", "sub/.git", "-b and --detach",
                                  "--reason without --lock", "--track without a new branch",
                                  "--track from a commit", "-b an existing branch", "-b a bad name",
                                  "an unknown commit", "-b from an unknown commit"])
def test_add_refusals_have_gits_exit_code_and_words(tmp_path, cleanup, case):
    repo = new_repo(tmp_path)
    cleanup(repo)
    args = {
        "checked out elsewhere": ["{p}", "main"],
        "-B checked out elsewhere": ["-B", "main", "{p}"],
        "sub/.git": ["--detach", "{p}", _bad_tree(repo)],
        "-b and --detach": ["-b", "x", "--detach", "{p}"],
        "--reason without --lock": ["--reason", "why", "{p}"],
        "--track without a new branch": ["--track", "{p}", "side"],
        "--track from a commit": ["--track", "-b", "x", "{p}", "HEAD~1"],
        "-b an existing branch": ["-b", "side", "{p}"],
        "-b a bad name": ["-b", "bad name", "{p}"],
        "an unknown commit": ["{p}", "no-such-ref"],
        "-b from an unknown commit": ["-b", "x", "{p}", "no-such-ref"],
    }[case]
    before = (branches(repo), git_out("worktree", "list", "--porcelain", cwd=repo))
    by_git = run_git("worktree", "add", *[a.replace("{p}", str(tmp_path / "g")) for a in args], cwd=repo)
    mine = ours("add", *[a.replace("{p}", str(tmp_path / "o")) for a in args], *OURS, cwd=repo)
    refusals_compare(repo, by_git, mine, lines=2)
    assert by_git.returncode in (128, 255)
    assert (branches(repo), git_out("worktree", "list", "--porcelain", cwd=repo)) == before
    assert not (tmp_path / "o").exists()


def test_add_over_a_path_that_exists_is_refused_as_git_refuses(tmp_path, cleanup):
    """The path as the user gave it, in git's words, and git's exit code."""
    repo = new_repo(tmp_path)
    cleanup(repo)
    for who in ("g", "o"):
        (tmp_path / who).mkdir()
        (tmp_path / who / "keep.txt").write_text("mine\n")
    by_git = run_git("worktree", "add", "-b", "gits", "../g", cwd=repo)
    mine = ours("add", "-b", "ours", "../o", *OURS, cwd=repo)
    assert by_git.returncode == mine.returncode == 128
    assert first_lines(mine.stderr, 2) == first_lines(by_git.stderr.replace("gits", "ours").replace("../g", "../o"), 2)
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine\n"


def test_remove_refusals_have_gits_exit_code_and_words(tmp_path, cleanup):
    repo = new_repo(tmp_path)
    cleanup(repo)
    for who in ("g", "o"):
        git_out("worktree", "add", "-q", "--detach", str(tmp_path / who), cwd=repo)
        (tmp_path / who / "untracked.txt").write_text("u\n")
    # the path as the user gave it, as git echoes it
    by_git = run_git("worktree", "remove", "../g", cwd=repo)
    mine = ours("remove", "../o", cwd=repo)
    assert by_git.returncode == mine.returncode == 128
    assert first_lines(mine.stderr) == first_lines(by_git.stderr.replace("../g", "../o"))
    assert (tmp_path / "o" / "untracked.txt").exists()
    assert ours("remove", "--force", "../o", cwd=repo).returncode == 0


def test_prune_dry_run_says_what_gits_says(tmp_path, cleanup):
    """Row: `prune -n` (and --dry-run) says git's "Removing worktrees/x: ..." and removes nothing."""
    repo = new_repo(tmp_path)
    cleanup(repo)
    git_out("worktree", "add", "-q", "--detach", str(tmp_path / "gone"), cwd=repo)
    shutil.rmtree(tmp_path / "gone")
    by_git = run_git("worktree", "prune", "-n", cwd=repo)
    for flag in ("-n", "--dry-run"):
        mine = ours("prune", flag, cwd=repo)
        assert mine.returncode == 0, mine.stderr
        assert by_git.stderr.strip() in mine.stdout.splitlines(), (by_git.stderr, mine.stdout)
    assert (repo / ".git" / "worktrees" / "gone").is_dir()
