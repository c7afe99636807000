"""What `git gpuspace add` checks out and writes, against `git worktree add` in the same test:
working-tree-encoding, replace refs, partial clones, identity, SHA-256 reflogs, LFS failures,
and the index's own shape (cache-tree, version, split index), ORIG_HEAD and the admin dir.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import Repo, gpuspace
from helpers import commit, git_out
from test_conformance import observe

pytestmark = pytest.mark.usefixtures("docker_client")


def new_repo(path: Path, *init_args: str) -> Path:
    path.mkdir()
    git_out("init", "-q", "-b", "main", *init_args, cwd=path)
    return path


def add_both(repo: Path, tmp_path: Path, docker_client, *args: str, ours_first: bool = False) -> dict:
    """`git worktree add` at wt-git and ours at wt-ours, same arguments ({b}: a branch of each's
    own); what each made, as observe() sees it, plus the admin dir's files and the index."""
    seen = {}
    order = ("ours", "git") if ours_first else ("git", "ours")
    try:
        for who in order:
            where = tmp_path / f"wt-{who}"
            branch = f"made-by-{who}"
            argv = [arg.replace("{b}", branch) for arg in args]
            if who == "git":
                git_out("worktree", "add", "-q", str(where), *argv, cwd=repo)
            else:
                added = gpuspace("add", str(where), *argv, "--gpus", "none", "--no-start", cwd=repo)
                assert added.returncode == 0, added.stderr
            has_branch = "{b}" in " ".join(args)
            found = observe(repo, where, branch if has_branch else None)
            admin = repo / ".git" / "worktrees" / where.name
            found["admin files"] = sorted(str(p.relative_to(admin)) for p in admin.rglob("*")
                                          if not p.name.startswith("sharedindex."))
            found["shared indexes"] = len(list(admin.glob("sharedindex.*")))
            found["index shape"] = index_shape((admin / "index").read_bytes())
            seen[who] = found
    finally:
        for container in Repo(path=repo, client=docker_client).containers():
            container.remove(force=True)
    return seen


def index_shape(data: bytes) -> dict:
    """The index's version, entry count, which extensions it has and its cache-tree's bytes."""
    tree = re.search(rb"TREE(....)\x00-?\d+ \d+\n", data)
    cache_tree = data[tree.end(1):tree.end(1) + int.from_bytes(tree.group(1), "big")] if tree else None
    return {"version": int.from_bytes(data[4:8], "big"), "entries": int.from_bytes(data[8:12], "big"),
            "link": b"link\x00\x00" in data, "TREE": cache_tree}


def same(seen: dict, *keys: str) -> None:
    for key in keys or seen["git"]:
        assert seen["ours"][key] == seen["git"][key], f"{key} differs"


def reflog_shape(path: Path, branch_of: str | None = None) -> list[str]:
    text = path.read_text()
    if branch_of:
        text = text.replace(branch_of, "<branch>")
    return [re.sub(r" \d+ [+-]\d{4}", " <when>", line) for line in text.splitlines()]


# --------------------------------------------------------------------------- content


def test_working_tree_encoding_is_written_as_git_writes_it(tmp_path, docker_client):
    repo = new_repo(tmp_path / "repo")
    (repo / ".gitattributes").write_text("*.u16 working-tree-encoding=UTF-16\n"
                                         "*.le working-tree-encoding=UTF-16LE eol=crlf\n*.u8 working-tree-encoding=UTF-8\n")
    (repo / "a.u16").write_bytes("héllo\nwörld\n".encode("utf-16"))
    (repo / "b.le").write_bytes("hé\r\nx\r\n".encode("utf-16-le"))
    commit(repo, {"c.u8": "plain ü\n", "d.txt": "d\n"})
    seen = add_both(repo, tmp_path, docker_client, "--detach")
    same(seen)
    assert seen["ours"]["files"]["a.u16"][2].startswith(b"\xff\xfe")  # with its byte order mark
    assert seen["ours"]["status"] == ""
    for who in ("git", "ours"):  # a touch makes git read the files again: still clean, no BOM error
        os.utime(tmp_path / f"wt-{who}" / "a.u16", (1, 1))
        os.utime(tmp_path / f"wt-{who}" / "b.le", (1, 1))
    statuses = {who: subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path / f"wt-{who}", capture_output=True,
                                    text=True) for who in ("git", "ours")}
    assert (statuses["ours"].returncode, statuses["ours"].stdout, statuses["ours"].stderr) == \
        (statuses["git"].returncode, statuses["git"].stdout, statuses["git"].stderr)


def test_replace_refs_are_honoured_as_git_honours_them(tmp_path, docker_client):
    repo = new_repo(tmp_path / "repo")
    commit(repo, {"a.txt": "original\n", "b.txt": "b\n"}, "original")
    original = git_out("rev-parse", "HEAD", cwd=repo).strip()
    commit(repo, {"a.txt": "replacement\n", "c.txt": "new\n"}, "replacement")
    replacement = git_out("rev-parse", "HEAD", cwd=repo).strip()
    git_out("reset", "-q", "--hard", original, cwd=repo)
    git_out("replace", original, replacement, cwd=repo)
    old_blob = git_out("rev-parse", "HEAD:b.txt", cwd=repo).strip()
    new_blob = git_out("hash-object", "-w", "--stdin", cwd=repo, input="b replaced\n").strip()
    git_out("replace", old_blob, new_blob, cwd=repo)
    seen = add_both(repo, tmp_path, docker_client, "--detach", original)
    same(seen)  # git's status too shows the replaced blob modified: the index keeps the tree's id
    assert seen["ours"]["files"]["c.txt"][2] == b"new\n" and seen["ours"]["files"]["b.txt"][2] == b"b replaced\n"


def test_a_partial_clone_fetches_the_blobs_it_checks_out(tmp_path, docker_client):
    upstream = new_repo(tmp_path / "upstream")
    commit(upstream, {"a.txt": "a\n"})
    git_out("checkout", "-q", "-b", "other", cwd=upstream)
    commit(upstream, {"b.txt": "b\n", "d/c.txt": "c\n", ".gitattributes": "*.txt eol=crlf\n"})
    git_out("checkout", "-q", "main", cwd=upstream)
    git_out("config", "uploadpack.allowFilter", "true", cwd=upstream)
    repo = tmp_path / "repo"
    git_out("clone", "-q", "--filter=blob:none", f"file://{upstream}", str(repo), cwd=tmp_path)
    missing = git_out("rev-list", "--objects", "--missing=print", "origin/other", cwd=repo)
    assert "?" in missing  # the other branch's blobs are not here
    seen = add_both(repo, tmp_path, docker_client, "--detach", "origin/other", ours_first=True)
    same(seen)
    assert seen["ours"]["files"]["d/c.txt"][2] == b"c\r\n"


def test_no_configured_identity_works_as_git(tmp_path, docker_client, monkeypatch):
    repo = new_repo(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    assert subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=repo, capture_output=True).returncode != 0
    seen = add_both(repo, tmp_path, docker_client, "-b", "{b}")
    same(seen)
    common = repo / ".git"
    assert reflog_shape(common / "worktrees" / "wt-ours" / "logs" / "HEAD") == \
        reflog_shape(common / "worktrees" / "wt-git" / "logs" / "HEAD")
    assert reflog_shape(common / "logs" / "refs" / "heads" / "made-by-ours") == \
        reflog_shape(common / "logs" / "refs" / "heads" / "made-by-git")


def test_a_sha256_repository_logs_its_own_null_id(tmp_path, docker_client):
    repo = new_repo(tmp_path / "repo", "--object-format=sha256")
    commit(repo, {"a.txt": "a\n", "d/b.txt": "b\n"})
    seen = add_both(repo, tmp_path, docker_client, "-b", "{b}")
    same(seen)
    common = repo / ".git"
    ours = reflog_shape(common / "logs" / "refs" / "heads" / "made-by-ours")
    assert ours == reflog_shape(common / "logs" / "refs" / "heads" / "made-by-git")
    assert ours[0].startswith("0" * 64 + " ")
    assert reflog_shape(common / "worktrees" / "wt-ours" / "logs" / "HEAD") == \
        reflog_shape(common / "worktrees" / "wt-git" / "logs" / "HEAD")
    assert git_out("reflog", "show", "made-by-ours", cwd=repo).strip() != ""


def test_a_missing_lfs_object_fails_as_git_fails(tmp_path, docker_client):
    repo = new_repo(tmp_path / "repo")
    git_out("lfs", "install", "--local", cwd=repo)  # filter.lfs.required=true
    git_out("lfs", "track", "*.bin", cwd=repo)
    commit(repo, {"model.bin": b"\x00weights" * 10, "plain.txt": "p\n"})
    git_out("-c", "gc.auto=0", "lfs", "prune", "--force", cwd=repo, check=False)
    for found in (repo / ".git" / "lfs" / "objects").rglob("*"):
        if found.is_file():
            found.unlink()  # the object is nowhere: no remote either
    before = sorted(p.name for p in (repo / ".git").rglob("*") if "lfs" not in p.parts)
    results = {}
    for who in ("git", "ours"):
        where = tmp_path / f"wt-{who}"
        if who == "git":
            results[who] = subprocess.run(["git", "worktree", "add", "--detach", str(where)], cwd=repo,
                                          capture_output=True, text=True)
        else:
            results[who] = gpuspace("add", str(where), "--detach", "--gpus", "none", "--no-start", cwd=repo)
        assert not where.exists()
        # (ours leaves an empty worktrees/ folder where git leaves none: add's clean-up, not the checkout's)
        left = sorted(p.name for p in (repo / ".git").rglob("*") if "lfs" not in p.parts)
        assert [name for name in left if name != "worktrees"] == before
        assert not any((repo / ".git" / "worktrees").glob("*"))
    assert Repo(path=repo, client=docker_client).containers() == []
    assert results["ours"].returncode == results["git"].returncode == 128
    git_lines = [line for line in results["git"].stderr.splitlines() if line.strip()]
    our_lines = [line for line in results["ours"].stderr.splitlines() if line.strip()]
    assert git_lines[0] == our_lines[0]  # git-lfs's own words, then git's (and ours)
    assert "smudge filter lfs failed" in results["ours"].stderr and "internal error" not in results["ours"].stderr


def test_a_filter_git_has_no_driver_for_leaves_the_content_and_admin_dir_as_git(tmp_path, docker_client, monkeypatch):
    """`filter=lfs` in the tree, git-lfs not set up: git writes the pointer as it is, and makes
    no lfs/ folders in the admin dir."""
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")  # where git-lfs is set up for everyone
    repo = new_repo(tmp_path / "repo")
    assert git_out("config", "--get-regexp", "^filter", cwd=repo, check=False) == ""
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 5\n"
    commit(repo, {".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n", "m.bin": pointer})
    seen = add_both(repo, tmp_path, docker_client, "--detach")
    same(seen)
    assert "lfs" not in " ".join(seen["ours"]["admin files"])


# --------------------------------------------------------------------------- the index and the admin dir


def layout(repo: Path) -> None:
    commit(repo, {"a": "1\n", "d/b": "2\n", "d/e/c": "3\n", "f/g": "4\n", "ff/h": "5\n", "d/e2/x": "6\n"})


@pytest.mark.parametrize("config", [{}, {"index.version": "4"}, {"feature.manyFiles": "true"},
                                    {"core.splitIndex": "true"}],
                         ids=["plain", "index.version=4", "feature.manyFiles", "core.splitIndex"])
def test_the_index_has_gits_version_cache_tree_and_split(tmp_path, docker_client, config):
    repo = new_repo(tmp_path / "repo")
    layout(repo)
    for key, value in config.items():
        git_out("config", key, value, cwd=repo)
    seen = add_both(repo, tmp_path, docker_client, "--detach")
    same(seen)
    assert seen["ours"]["index shape"]["TREE"]  # git's checkout leaves a cache-tree
    assert git_out("ls-files", "-s", cwd=tmp_path / "wt-ours") == git_out("ls-files", "-s", cwd=repo)


def test_detach_leaves_orig_head_as_git(tmp_path, docker_client):
    repo = new_repo(tmp_path / "repo")
    layout(repo)
    seen = add_both(repo, tmp_path, docker_client, "--detach")
    same(seen, "admin files")
    assert "ORIG_HEAD" in seen["ours"]["admin files"]
    assert (repo / ".git" / "worktrees" / "wt-ours" / "ORIG_HEAD").read_text() == git_out("rev-parse", "HEAD", cwd=repo)


@pytest.mark.parametrize("worktree_config", ["[core]\n\tbare = false\n", "# mine\n[core]\n\tbare = true\n[x]\n\ty = 1\n"],
                         ids=["bare false", "bare true"])
def test_config_worktree_is_copied_as_git_copies_it(tmp_path, docker_client, worktree_config):
    repo = new_repo(tmp_path / "repo")
    layout(repo)
    git_out("config", "extensions.worktreeConfig", "true", cwd=repo)
    (repo / ".git" / "config.worktree").write_text(worktree_config)
    seen = add_both(repo, tmp_path, docker_client, "--detach")
    same(seen, "admin files", "files", "index", "status")
    admin = repo / ".git" / "worktrees"
    assert (admin / "wt-ours" / "config.worktree").read_bytes() == (admin / "wt-git" / "config.worktree").read_bytes()
