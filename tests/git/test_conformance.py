"""A `git gpuspace add` worktree against a `git worktree add` one, made in the same test from
the same repository and arguments: files byte for byte (modes, link targets), the index as
`git ls-files -s --eol` shows it, `git status`, `git worktree list`, reflogs, upstream and
sparse state. A case is one row of CASES: how to set the repository up, and the arguments.

Each case runs git first, records what it made, removes it (and the branches it made), then
runs ours on the same repository and compares.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import Repo, gpuspace
from helpers import commit, git_out

pytestmark = pytest.mark.usefixtures("docker_client")


def run(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


# --------------------------------------------------------------------------- set-ups


def history(repo: Path) -> None:
    """Three commits, a tag, an annotated tag, a switch to a branch and back (for @{-1})."""
    commit(repo, {"a.txt": "one\n"}, "first")
    git_out("tag", "v1", cwd=repo)
    commit(repo, {"a.txt": "two\n", "b.txt": "b\n"}, "second")
    git_out("tag", "-a", "v2", "-m", "annotated", cwd=repo)
    commit(repo, {"a.txt": "three\n"}, "third")
    git_out("checkout", "-q", "-b", "side", cwd=repo)
    commit(repo, {"side.txt": "side\n"}, "side")
    git_out("checkout", "-q", "main", cwd=repo)


def modes_links_names(repo: Path) -> None:
    commit(repo, {"plain.txt": "x\n", "run.sh": "#!/bin/sh\n", "dir with space/ünïcödé.txt": "u\n",
                  "deep/a/b/c.txt": "c\n", "empty": b""})
    (repo / "run.sh").chmod(0o755)
    os.symlink("plain.txt", repo / "link-to-file")
    os.symlink("deep", repo / "link-to-dir")
    os.symlink("nowhere", repo / "dangling")
    commit(repo, {}, "modes and links")


def eol_and_filters(repo: Path) -> None:
    commit(repo, {".gitattributes": "*.crlf eol=crlf\n*.bin binary\n*.auto text=auto\n*.up filter=upper\n",
                  "x.crlf": "a\nb\n", "y.bin": b"\x00\x01\r\n", "z.auto": "line\r\nline\n", "w.up": "shout\n"})


def info_attributes(repo: Path) -> None:
    """Attributes that are the repository's, not the tree's: `$GIT_COMMON_DIR/info/attributes`."""
    commit(repo, {"a.txt": "a\nb\n", "b.md": "b\n"})
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("*.txt eol=crlf\n")


def ident(repo: Path) -> None:
    commit(repo, {".gitattributes": "*.c ident\n", "a.c": "/* $Id$ */\n/* $Id: old stuff $ */\n$Id: not\nclosed\n",
                  "b.txt": "$Id$ stays\n"})


def case_colliding(repo: Path) -> None:
    """README and readme in one tree (made by hand, as a repo from a case-sensitive system is)."""
    commit(repo, {"a.txt": "a\n"})
    blob = git_out("hash-object", "-w", "--stdin", cwd=repo, input="x\n").strip()
    tree = git_out("mktree", cwd=repo, input=f"100644 blob {blob}\tREADME\n100644 blob {blob}\treadme\n").strip()
    git_out("reset", "-q", "--hard", git_out("commit-tree", tree, "-m", "collide", cwd=repo).strip(), cwd=repo)


def post_checkout_hook(repo: Path) -> None:
    """The user's own hook: what it is given, where, and with which GIT_DIR, ends up in a file."""
    commit(repo, {"a.txt": "a\n"})
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text('#!/bin/sh\necho "args=$* git_dir=${GIT_DIR-unset} top=$(git rev-parse --show-prefix)" > hook.out\n')
    hook.chmod(0o755)


def lfs(repo: Path) -> None:
    """Content through git-lfs (its filter and its post-checkout hook: lockable files read-only)."""
    git_out("lfs", "install", "--local", cwd=repo)
    git_out("lfs", "track", "*.bin", cwd=repo)
    git_out("lfs", "track", "--lockable", "*.lock.bin", cwd=repo)
    commit(repo, {"model.bin": b"\x00weights" * 100, "big.lock.bin": b"\x01locked" * 100, "plain.txt": "p\n"})


def sparse_cone(repo: Path) -> None:
    """The main worktree is a sparse checkout (cone mode, a nested directory)."""
    commit(repo, {"top.txt": "t\n", "dir1/a.txt": "a\n", "dir1/sub/b.txt": "b\n", "dir1/other/c.txt": "c\n",
                  "dir2/d.txt": "d\n"})
    git_out("sparse-checkout", "set", "--cone", "dir1/sub", cwd=repo)


def sparse_patterns(repo: Path) -> None:
    commit(repo, {"keep.py": "k\n", "drop.md": "d\n", "src/x.py": "x\n", "src/y.md": "y\n"})
    git_out("sparse-checkout", "set", "--no-cone", "*.py", cwd=repo)


def submodule(repo: Path) -> None:
    """A submodule: an empty directory in a new worktree, for git and for us."""
    sub = repo.parent / "sub"
    sub.mkdir()
    git_out("init", "-q", "-b", "main", cwd=sub)
    commit(sub, {"s.txt": "s\n"})
    git_out("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor/sub", cwd=repo)
    git_out("commit", "-q", "-m", "submodule", cwd=repo)


def remote_branch(repo: Path) -> None:
    """A clone where `feature` exists only as origin/feature."""
    upstream = repo.parent / "upstream"
    upstream.mkdir()
    git_out("init", "-q", "-b", "main", cwd=upstream)
    commit(upstream, {"a.txt": "a\n"})
    git_out("branch", "feature", cwd=upstream)
    commit(upstream, {"b.txt": "b\n"})  # main moves on: feature is behind it
    git_out("remote", "add", "origin", str(upstream), cwd=repo)
    git_out("fetch", "-q", "origin", cwd=repo)
    git_out("reset", "-q", "--hard", "origin/main", cwd=repo)


def symlinked_dir_clean(repo: Path) -> None:
    (repo / "data").mkdir()
    (repo / "data" / "f.txt").write_text("f\n")
    os.symlink("data", repo / "current")
    commit(repo, {}, "a symlink to a directory")


def ignored_files(repo: Path) -> None:
    commit(repo, {".gitignore": "*.log\nbuild/\n", "src.py": "pass\n"})


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], None]
    args: tuple[str, ...]  # after the path; {b} is a branch name of the case's own
    config: dict = field(default_factory=dict)  # set in the repository after the set-up


CASES = [
    Case("detached HEAD~1", history, ("--detach", "HEAD~1")),
    Case("main^", history, ("--detach", "main^")),
    Case("@{-1}", history, ("--detach", "@{-1}")),
    Case("v2^{commit}", history, ("--detach", "v2^{commit}")),
    Case("annotated tag", history, ("v2",)),
    Case("lightweight tag", history, ("v1",)),
    Case("HEAD@{1}", history, ("--detach", "HEAD@{1}")),
    Case("@", history, ("--detach", "@")),
    Case("existing branch", history, ("side",)),
    Case("new branch", history, ("-b", "{b}")),
    Case("new branch from a revision", history, ("-b", "{b}", "HEAD~2")),
    Case("remote-only branch", remote_branch, ("feature",)),
    Case("new branch from a remote branch", remote_branch, ("-b", "{b}", "origin/feature")),
    Case("modes, links, unicode and space names", modes_links_names, ("--detach",)),
    Case("eol attributes and filters", eol_and_filters, ("--detach",)),
    Case("autocrlf", eol_and_filters, ("--detach",), config={"core.autocrlf": "true"}),
    Case("info/attributes", info_attributes, ("--detach",)),
    Case("ident", ident, ("--detach",)),
    Case("case-colliding names, core.ignorecase", case_colliding, ("--detach",), config={"core.ignorecase": "true"}),
    Case("the user's post-checkout hook", post_checkout_hook, ("--detach",)),
    Case("the user's post-checkout hook, new branch", post_checkout_hook, ("-b", "{b}")),
    Case("git-lfs content and lockable files", lfs, ("--detach",)),
    Case("sparse checkout, cone", sparse_cone, ("--detach",)),
    Case("sparse checkout, patterns", sparse_patterns, ("-b", "{b}")),
    Case("a submodule", submodule, ("--detach",)),
    Case("symlink to a directory", symlinked_dir_clean, ("--detach",)),
    Case("ignored files", ignored_files, ("--detach",)),
]


# --------------------------------------------------------------------------- what is compared


def tree(root: Path) -> dict[str, tuple]:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if relative == ".git":
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir",)
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
        dirs[:] = [d for d in dirs if not (Path(directory) / d).is_symlink()]
    return found


def observe(repo: Path, worktree: Path, branch: str | None) -> dict:
    """What a user or a tool sees of the worktree, with its path and branch name abstracted."""
    listed = git_out("worktree", "list", "--porcelain", cwd=repo).split("\n\n")
    [entry] = [block for block in listed if block.startswith(f"worktree {worktree}\n")]
    head_log = git_out("reflog", "show", "--format=%gs", "HEAD", cwd=worktree, check=False)
    seen = {
        "files": tree(worktree),
        "index": git_out("ls-files", "-s", "--eol", cwd=worktree),
        "status": git_out("status", "--porcelain", "--ignored", cwd=worktree),
        "list": entry.replace(str(worktree), "<path>"),
        "HEAD reflog": head_log,
        "sparse": git_out("config", "--worktree", "--get", "core.sparseCheckout", cwd=worktree, check=False),
        "sparse patterns": git_out("sparse-checkout", "list", cwd=worktree, check=False),
        "skip-worktree": git_out("ls-files", "-t", cwd=worktree),
        "worktree config": git_out("config", "--worktree", "--list", cwd=worktree, check=False),
    }
    if branch:
        seen["branch reflog"] = git_out("reflog", "show", "--format=%gs", f"refs/heads/{branch}", cwd=repo, check=False)
        seen["upstream"] = git_out("rev-parse", "--abbrev-ref", f"{branch}@{{upstream}}", cwd=worktree, check=False)
    if branch:
        seen = {key: value.replace(branch, "<branch>") if isinstance(value, str) else value for key, value in seen.items()}
    return seen


def branches(repo: Path) -> set[str]:
    return set(git_out("for-each-ref", "--format=%(refname:short)", "refs/heads/", cwd=repo).split())


def checked_out_branch(worktree: Path) -> str | None:
    name = git_out("symbolic-ref", "-q", "--short", "HEAD", cwd=worktree, check=False).strip()
    return name or None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_same_as_git_worktree_add(case, tmp_path, docker_client):
    repo = tmp_path / "repo"
    repo.mkdir()
    git_out("init", "-q", "-b", "main", cwd=repo)
    git_out("config", "filter.upper.smudge", "tr a-z A-Z", cwd=repo)
    # With a clean filter that undoes it, a filtered file's status does not hang on git's racy-
    # index check (an index written in the file's second re-reads the file; one written in the
    # next does not), so git's own `worktree add` says the same each time.
    git_out("config", "filter.upper.clean", "tr A-Z a-z", cwd=repo)
    case.setup(repo)
    for key, value in case.config.items():
        git_out("config", key, value, cwd=repo)
    made = Repo(path=repo, client=docker_client)
    before = branches(repo)
    results = {}
    try:
        for who in ("git", "ours"):
            where = tmp_path / f"wt-{who}"
            args = [arg.replace("{b}", "made-here") for arg in case.args]
            if who == "git":
                git_out("worktree", "add", "-q", str(where), *args, cwd=repo)
            else:
                result = gpuspace("add", str(where), *args, "--gpus", "none", "--no-start", cwd=repo)
                assert result.returncode == 0, result.stderr
            branch = checked_out_branch(where)
            results[who] = observe(repo, where, branch)
            if who == "git":
                git_out("worktree", "remove", "--force", str(where), cwd=repo)
                for name in branches(repo) - before:
                    git_out("branch", "-D", name, cwd=repo)
                    git_out("config", "--remove-section", f"branch.{name}", cwd=repo, check=False)
    finally:
        for container in made.containers():
            container.remove(force=True)
    for key in results["git"]:
        assert results["ours"][key] == results["git"][key], f"{case.name}: {key} differs"


def test_reflog_lines_match_gits_shape(tmp_path, docker_client):
    """Beyond the messages: the same number of lines, zero ids where git has them."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git_out("init", "-q", "-b", "main", cwd=repo)
    history(repo)
    git_out("worktree", "add", "-q", "-b", "by-git", str(tmp_path / "g"), cwd=repo)
    added = gpuspace("add", "-b", "by-us", str(tmp_path / "o"), "--gpus", "none", "--no-start", cwd=repo)
    for container in Repo(path=repo, client=docker_client).containers():
        container.remove(force=True)
    assert added.returncode == 0, added.stderr

    def shape(path: Path) -> list[str]:
        return [re.sub(r" \d+ [+-]\d{4}", " <when>", line) for line in path.read_text().splitlines()]

    common = repo / ".git"
    assert shape(common / "worktrees" / "o" / "logs" / "HEAD") == shape(common / "worktrees" / "g" / "logs" / "HEAD")
    assert shape(common / "logs" / "refs" / "heads" / "by-us") == shape(common / "logs" / "refs" / "heads" / "by-git")


# --------------------------------------------------------------------------- beyond one add


def test_a_clean_worktree_with_a_symlinked_dir_is_removed_without_force(repo):
    os.symlink("src", repo.path / "current")
    git_out("add", "current", cwd=repo.path)
    git_out("commit", "-q", "-m", "link", cwd=repo.path)
    where = repo.path.parent / "wt-link"
    repo.ok("add", str(where), "--detach", "--gpus", "none", "--no-start")
    assert git_out("status", "--porcelain", cwd=where) == ""
    assert [r["dirty"] for r in repo.status() if r["path"] == str(where)] == [False]
    repo.ok("remove", str(where))
    assert not where.exists()


def test_a_worktree_with_an_initialized_submodule_is_refused_as_git_refuses(repo, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    git_out("init", "-q", "-b", "main", cwd=sub)
    commit(sub, {"s.txt": "s\n"})
    git_out("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "sub", cwd=repo.path)
    git_out("commit", "-q", "-m", "submodule", cwd=repo.path)
    where = repo.path.parent / "wt-sub"
    repo.ok("add", str(where), "--detach", "--gpus", "none", "--no-start")
    git_out("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", cwd=where)
    by_git = subprocess.run(["git", "worktree", "remove", str(where)], cwd=repo.path, capture_output=True, text=True)
    ours = repo.gs("remove", str(where))
    assert by_git.returncode != 0 and ours.returncode != 0
    assert "working trees containing submodules cannot be moved or removed" in by_git.stderr
    assert "working trees containing submodules cannot be moved or removed" in ours.stderr
    assert (where / "sub" / "s.txt").exists() and len(repo.containers()) == 1  # nothing changed
    repo.ok("remove", "--force", str(where))  # as git, --force removes it
    assert not where.exists() and repo.containers() == []


def test_git_dir_and_work_tree_in_the_environment_are_honoured(repo, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    git_out("init", "-q", cwd=elsewhere)  # a repository of its own where the command runs
    monkeypatch.setenv("GIT_DIR", str(repo.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo.path))
    added = repo.gs("add", str(tmp_path / "wt-env"), "--detach", "HEAD", "--gpus", "none", "--no-start", cwd=elsewhere)
    assert added.returncode == 0, added.stderr
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert str(tmp_path / "wt-env") in git_out("worktree", "list", cwd=repo.path)
    assert not (elsewhere / ".git" / "worktrees").exists()


def test_adds_at_the_same_moment_under_one_basename_never_share_an_admin_dir(repo, tmp_path):
    """Ours and git's at once, each many times: git claims an admin dir by making it, so do we.
    (git's own adds racing each other can die reading a half-written admin dir of another
    git: those are git's, and are left out; every one of ours must succeed.)"""
    count = 12
    ours = [subprocess.Popen(["git-gpuspace", "add", str(tmp_path / f"o{i}" / "x"), "--detach", "--gpus", "none",
                              "--no-start"], cwd=repo.path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(count)]
    gits = [subprocess.Popen(["git", "worktree", "add", "-q", "--detach", str(tmp_path / f"g{i}" / "x")], cwd=repo.path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(count)]
    assert [process.stderr.read().decode() for process in ours if process.wait() != 0] == []
    made = [tmp_path / f"o{i}" / "x" for i in range(count)]
    made += [tmp_path / f"g{i}" / "x" for i, process in enumerate(gits) if process.wait() == 0]
    listed = git_out("worktree", "list", "--porcelain", cwd=repo.path)
    for where in made:
        assert f"worktree {where}\n" in listed
        assert git_out("status", "--porcelain", cwd=where) == ""
    assert len({(where / ".git").read_text() for where in made}) == len(made)


def test_a_remove_cut_short_is_finished_by_prune(repo):
    where = repo.path.parent / "wt-cut"
    repo.ok("add", "-b", "cut-short", str(where), "--gpus", "none", "--no-start")
    killed = repo.gs("remove", str(where), env={"GPUSPACE_FAULT_POINT": "after-dot-git-removed"})
    assert killed.returncode == -9
    taken = subprocess.run(["git", "worktree", "add", str(repo.path.parent / "by-git"), "cut-short"],
                           cwd=repo.path, capture_output=True, text=True)
    assert taken.returncode != 0 and "already" in taken.stderr  # until pruned, for git too
    pruned = repo.ok("prune")
    assert "Removing worktrees/wt-cut: gitdir file points to non-existent location" in pruned.stdout
    assert not (repo.common_dir / "worktrees" / "wt-cut").exists()
    freed = repo.gs("add", str(repo.path.parent / "wt-free"), "cut-short", "--gpus", "none", "--no-start")
    assert freed.returncode == 0, freed.stderr  # the branch is free again


def test_worktrees_git_prunes_are_pruned_by_us_and_locked_ones_kept(repo):
    for name in ("gone", "kept"):
        repo.ok("add", str(repo.path.parent / name), "--detach", "--gpus", "none", "--no-start")
    git_out("worktree", "lock", str(repo.path.parent / "kept"), cwd=repo.path)
    for name in ("gone", "kept"):
        (repo.path.parent / name / ".git").unlink()
    dry = subprocess.run(["git", "worktree", "prune", "--dry-run", "-v"], cwd=repo.path, capture_output=True,
                         text=True).stderr
    pruned = repo.ok("prune").stdout
    assert "Removing worktrees/gone" in dry and "Removing worktrees/gone" in pruned
    assert "kept" not in dry and "kept" not in pruned
    assert (repo.common_dir / "worktrees" / "kept").exists()


def _tree_with(repo: Path, listing: str) -> str:
    return git_out("commit-tree", git_out("mktree", cwd=repo, input=listing).strip(), "-m", "by hand", cwd=repo).strip()


@pytest.mark.parametrize("bad", [".GIT", "sub/.git", "failing filter"])
def test_what_git_refuses_is_refused_cleanly(repo, tmp_path, bad):
    blob = git_out("hash-object", "-w", "--stdin", cwd=repo.path, input="x\n").strip()
    if bad == "failing filter":
        git_out("config", "filter.broken.smudge", "false", cwd=repo.path)
        git_out("config", "filter.broken.required", "true", cwd=repo.path)
        attributes = git_out("hash-object", "-w", "--stdin", cwd=repo.path, input="*.txt filter=broken\n").strip()
        target = _tree_with(repo.path, f"100644 blob {attributes}\t.gitattributes\n100644 blob {blob}\ta.txt\n")
    elif bad == "sub/.git":
        inner = git_out("mktree", cwd=repo.path, input=f"100644 blob {blob}\t.git\n").strip()
        target = _tree_with(repo.path, f"040000 tree {inner}\tsub\n")
    else:
        target = _tree_with(repo.path, f"100644 blob {blob}\t{bad}\n")
    by_git = subprocess.run(["git", "worktree", "add", "--detach", str(tmp_path / "g"), target], cwd=repo.path,
                            capture_output=True, text=True)
    before = repo.snapshot(tmp_path)
    ours = repo.gs("add", str(tmp_path / "o"), "--detach", target, "--gpus", "none", "--no-start")
    assert by_git.returncode != 0 and not (tmp_path / "g").exists()
    assert ours.returncode not in (0, 70), ours.stderr
    assert len(ours.stderr.strip().splitlines()) <= 2 and "internal error" not in ours.stderr
    assert not (tmp_path / "o").exists() and repo.snapshot(tmp_path) == before
