"""Our worktrees are git's worktrees, and git's worktrees are ours to bind."""

from __future__ import annotations

import os
import subprocess


def test_worktree_made_by_us_is_ordinary_for_git(repo, tmp_path):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "exp", str(wt), "--gpus", "none")
    listing = repo.git("worktree", "list", "--porcelain").stdout
    assert f"worktree {wt}\n" in listing and "branch refs/heads/exp" in listing
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""
    assert repo.git("fsck", "--no-progress").returncode == 0

    (wt / "src" / "model.py").write_text("class ViT: pass\n")
    repo.git("add", "src/model.py", cwd=wt)
    repo.git("commit", "-q", "-m", "add model", cwd=wt)
    assert repo.git("log", "-1", "--format=%s", "exp").stdout.strip() == "add model"
    assert [r["head"] for r in repo.status() if r["branch"] == "exp"] == [
        repo.git("rev-parse", "exp").stdout.strip()
    ]

    repo.git("worktree", "remove", str(wt))
    assert not wt.exists()
    assert "exp" in repo.branches()


def test_worktree_made_by_git_is_listed_and_can_be_bound(repo, tmp_path):
    wt = tmp_path / "by-git"
    repo.git("worktree", "add", "-q", str(wt), "feature/resnet50")
    [listed] = [r for r in repo.status() if r["path"] == str(wt)]
    assert listed["branch"] == "feature/resnet50" and listed["state"] == "none"

    repo.ok("bind", "feature/resnet50", "--gpus", "1")
    [bound] = [r for r in repo.status() if r["path"] == str(wt)]
    assert bound["state"] == "running" and len(bound["gpus"]) == 1
    assert repo.gs("bind", str(wt)).returncode == 1  # already bound
    repo.ok("remove", str(wt))
    assert not wt.exists()


def test_main_worktree_can_be_bound_and_unbound(repo):
    repo.ok("bind", "--gpus", "none", cwd=repo.path / "src")  # the worktree we are in
    [main] = [r for r in repo.status() if r["main"]]
    assert main["state"] == "running"
    refused = repo.gs("remove", str(repo.path))
    assert refused.returncode == 2 and "main worktree cannot be removed" in refused.stderr
    repo.ok("remove", "--keep-worktree", str(repo.path))
    assert repo.containers() == [] and (repo.path / "src").exists()


def test_existing_branch_detached_commit_and_basename_branch(repo, tmp_path):
    first = repo.git("rev-parse", "HEAD").stdout.strip()
    repo.ok("add", str(tmp_path / "r"), "feature/resnet50", "--gpus", "none")
    repo.ok("add", str(tmp_path / "d"), first[:10], "--gpus", "none")
    repo.ok("add", str(tmp_path / "auto-branch"), "--gpus", "none")
    by_path = {r["path"]: r for r in repo.status()}
    assert by_path[str(tmp_path / "r")]["branch"] == "feature/resnet50"
    assert by_path[str(tmp_path / "d")]["branch"] is None
    assert by_path[str(tmp_path / "d")]["head"] == first
    assert by_path[str(tmp_path / "auto-branch")]["branch"] == "auto-branch"
    assert repo.git("symbolic-ref", "-q", "HEAD", cwd=tmp_path / "d", check=False).returncode == 1
    for name in ("r", "d", "auto-branch"):
        assert repo.git("status", "--porcelain", cwd=tmp_path / name).stdout == ""


def test_same_basename_in_two_places_keeps_both_apart(repo, tmp_path):
    a, b = tmp_path / "x" / "exp", tmp_path / "y" / "exp"
    repo.ok("add", "-b", "exp-a", str(a), "--gpus", "none")
    repo.ok("add", "-b", "exp-b", str(b), "--gpus", "none")
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD", cwd=a).stdout.strip() == "exp-a"
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD", cwd=b).stdout.strip() == "exp-b"
    names = {c.name for c in repo.containers()}
    assert len(names) == 2


def test_branch_checked_out_elsewhere_is_refused(repo, tmp_path):
    refused = repo.gs("add", str(tmp_path / "again"), "main", "--gpus", "none")
    assert refused.returncode == 128  # git's own exit code for it
    assert "already checked out" in refused.stderr
    assert not (tmp_path / "again").exists()


def test_a_git_dir_apart_from_its_work_tree(tmp_path, docker_client):
    """GIT_DIR and GIT_WORK_TREE name a store and a work tree in two places (no `.git` in the
    work tree): status, add and remove work there as git's own worktree commands do."""
    from conftest import LABEL_REPO, gpuspace
    from helpers import git

    store, tree = tmp_path / "store.git", tmp_path / "tree"
    git("init", "-q", "--bare", str(store), cwd=tmp_path)
    tree.mkdir()
    env = {"GIT_DIR": str(store), "GIT_WORK_TREE": str(tree)}
    (tree / "a.txt").write_text("a\n")
    for step in (["add", "a.txt"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *step], cwd=tree, env={**os.environ, **env}, check=True, capture_output=True)
    try:
        assert gpuspace("status", cwd=tree, env=env).returncode == 0
        added = gpuspace("add", "--no-start", "--gpus", "none", "-b", "x", str(tmp_path / "x"), cwd=tree, env=env)
        assert added.returncode == 0, added.stderr
        assert f"{tmp_path / 'x'} " in git("worktree", "list", cwd=store).stdout
        assert git("status", "--porcelain", cwd=tmp_path / "x").stdout == ""
        removed = gpuspace("remove", str(tmp_path / "x"), cwd=tree, env=env)
        assert removed.returncode == 0, removed.stderr
        assert str(tmp_path / "x") not in git("worktree", "list", cwd=store).stdout
    finally:
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL_REPO}={store}"}):
            container.remove(force=True)
