"""One host, several users: a GPU is released only when its worktree is provably gone, and never
by a user other than root when it is another user's. The second user is a real local one
(tests/users.py), on the real engine."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import TEST_IMAGE, Repo, _remove_containers, make_repo
from git_gpuspace.engine.containers import LABEL_REPO, LABEL_USER, LABEL_WORKTREE, ContainerInfo
from git_gpuspace.leases import _worktree_vanished
from users import User, make_user, user_dir


@pytest.fixture
def root_dir(docker_client):
    """A folder of root's under /tmp (0700, as `mkdir -m700 /tmp/p`); its repos' containers go after."""
    path = Path(tempfile.mkdtemp(prefix="gpuspace-p-", dir="/tmp"))
    made = []
    yield path, made
    for repo in made:
        _remove_containers(docker_client, repo)
    shutil.rmtree(path, ignore_errors=True)


def holders(result) -> dict[str, list[dict]]:
    return {record["uuid"]: record["holders"] for record in json.loads(result.stdout)}


def with_hidden(hidden: list[Path], user: User | None, *args: str, cwd: Path, env: dict | None = None):
    """`git gpuspace ARGS` as `user` (None: root) in a mount namespace of its own where each folder
    in `hidden` is an empty 0755 one: a worktree gone (and git's record of it) for this command
    only. Every other process on the host still sees it, so the root commands of tests running
    beside this one (which may release any user's vanished worktree) leave its container alone."""
    mounts = " && ".join(f"mount -t tmpfs -o mode=0755 none {shlex.quote(str(path))}" for path in hidden)
    drop = f"setpriv --reuid={user.uid} --regid={user.gid} --init-groups -- " if user else ""
    script = f'{mounts} && exec {drop}{shlex.quote(sys.executable)} -m git_gpuspace.cli "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *args], cwd=cwd,
                          env=user.environ(env) if user else {**os.environ, **(env or {})}, capture_output=True, text=True)


def test_another_users_gpus_leaves_a_worktree_it_cannot_see(root_dir, docker_client, tmp_path):
    """The issue as written: under root's 0700 folder the worktree cannot be seen (EACCES), which
    is not gone; another user's `gpus` shows it held by root and their `add` says whom to ask."""
    private, made = root_dir
    made.append(repo := make_repo(private / "repo", docker_client))
    repo.ok("add", "--no-start", "--gpus", "1", "-b", "s", "../wt")
    [container] = repo.containers()
    [gpu] = container.labels["gpuspace.gpus"].split(",")
    other = make_user("gpuspace-other", docker=True)
    home = user_dir(other, tmp_path)

    listed = other.gpuspace("gpus", cwd=home)
    assert listed.returncode == 0, listed.stderr
    assert "released" not in listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if gpu in line]
    assert f"root: {private / 'wt'} (s)" in row
    [holder] = holders(other.gpuspace("gpus", "--json", cwd=home))[gpu]
    assert (holder["user"], holder["worktree"]) == ("root", str(private / "wt"))
    assert [c.name for c in repo.containers()] == [container.name]
    assert [r["state"] for r in repo.status() if r["branch"] == "s"] == ["created"]

    assert other.run("sh", "-c", "git init -q -b main r && cd r && git commit -q --allow-empty -m a", cwd=home).returncode == 0
    index = next(r["index"] for r in json.loads(repo.ok("gpus", "--json").stdout) if r["uuid"] == gpu)
    try:
        refused = other.gpuspace("add", "-b", "mine", str(home / "wt"), "--no-start", "--gpus", f"{index},",
                                 "--image", TEST_IMAGE, cwd=home / "r")
        assert refused.returncode != 0, refused.stdout
        assert f"GPU {index} is held by {private / 'wt'} (s) of user root" in refused.stderr
        assert "ask them" in refused.stderr and "Traceback" not in refused.stderr
        assert [c.name for c in repo.containers()] == [container.name]
    finally:
        _remove_containers(docker_client, Repo(home / "r", docker_client))


def test_a_non_root_user_never_releases_another_users_gone_worktree(root_dir, docker_client, tmp_path):
    """Root's project is deleted (repository and worktree), where anyone can see it is: still
    root's GPU to other users (its state file, 0600, is no help to them); root's own look
    releases it."""
    shared, made = root_dir
    shared.chmod(0o755)
    made.append(repo := make_repo(shared / "repo", docker_client))
    repo.ok("add", "--no-start", "--gpus", "1", "-b", "gone", str(shared / "wts" / "wt"))
    [container] = repo.containers()
    [gpu] = container.labels["gpuspace.gpus"].split(",")
    other = make_user("gpuspace-other", docker=True)
    gone = [shared]

    listed = with_hidden(gone, other, "gpus", "--json", cwd=user_dir(other, tmp_path))
    assert listed.returncode == 0 and "released" not in listed.stderr, listed.stderr
    assert [h["user"] for h in holders(listed)[gpu]] == ["root"]
    assert [c.name for c in repo.containers()] == [container.name]

    released = with_hidden(gone, None, "gpus", cwd=tmp_path)  # root may, and the worktree is gone
    assert f"released {gpu} held by {container.name}" in released.stderr
    assert repo.containers() == []


def test_a_users_own_gone_worktree_is_released_by_them(docker_client, tmp_path):
    """The true positive, as a user other than root: the path is absent (ENOENT) under a folder
    they can read, and their repository no longer has it."""
    other = make_user("gpuspace-other", docker=True)
    home = user_dir(other, tmp_path)
    assert other.run("sh", "-c", "git init -q -b main r && cd r && git commit -q --allow-empty -m a", cwd=home).returncode == 0
    repo = Repo(home / "r", docker_client)
    try:
        made = other.gpuspace("add", "-b", "gone", str(home / "wts" / "wt"), "--no-start", "--gpus", "1",
                              "--image", TEST_IMAGE, cwd=repo.path)
        assert made.returncode == 0, made.stderr
        [container] = repo.containers()
        assert container.labels[LABEL_USER] == other.name

        listed = with_hidden([home / "wts", repo.common_dir / "worktrees"], other, "gpus", cwd=home)
        assert listed.returncode == 0, listed.stderr
        assert f"held by {container.name}: its worktree {home / 'wts' / 'wt'} is gone" in listed.stderr
        assert repo.containers() == []
    finally:
        _remove_containers(docker_client, repo)


def test_the_main_worktrees_container_is_never_released(repo, tmp_path):
    """A main worktree and its git dir missing together is a repository moved away or a drive
    not mounted now as much as one deleted: its GPU stays held."""
    repo.ok("bind", str(repo.path), "--gpus", "1", "--no-start")
    [container] = repo.containers()
    assert (container.labels[LABEL_WORKTREE], container.labels[LABEL_REPO]) == (str(repo.path), str(repo.path / ".git"))
    moved = repo.path.rename(tmp_path / "elsewhere")
    try:
        listed = repo.gs("gpus", cwd=tmp_path)
        assert listed.returncode == 0 and "released" not in listed.stderr, listed.stderr
        assert [c.name for c in repo.containers()] == [container.name]
    finally:
        moved.rename(repo.path)


def vanished(worktree: Path, repo: Path) -> bool:
    return _worktree_vanished(ContainerInfo(name="c", state="created", image="i",
                                            labels={LABEL_WORKTREE: str(worktree), LABEL_REPO: str(repo)}))


def test_only_enoent_under_a_readable_folder_is_gone(tmp_path):
    """Without a repository left to ask, the path alone decides."""
    assert vanished(tmp_path / "wt", tmp_path / "deleted" / ".git")  # really gone
    assert vanished(tmp_path / "a" / "b" / "wt", tmp_path / "deleted" / ".git")  # nearest existing folder readable
    assert not vanished(tmp_path / "main", tmp_path / "main" / ".git")  # a main worktree
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert not vanished(tmp_path / "loop" / "wt", tmp_path / "deleted" / ".git")  # ELOOP
    (tmp_path / "mnt").symlink_to(tmp_path / "not-mounted")
    assert not vanished(tmp_path / "mnt" / "wt", tmp_path / "deleted" / ".git")  # a dangling link on the way
    (tmp_path / "file").write_text("")
    assert not vanished(tmp_path / "file" / "wt", tmp_path / "deleted" / ".git")  # ENOTDIR
    (tmp_path / "there").mkdir()
    assert not vanished(tmp_path / "there", tmp_path / "deleted" / ".git")
    assert not vanished(tmp_path / "wt", tmp_path / "loop" / ".git")  # its repository cannot be told gone


def test_a_folder_that_cannot_be_searched_hides_nothing(tmp_path):
    """EACCES, as the user who cannot enter root's 0700 folder sees it."""
    other = make_user("gpuspace-other", docker=True)
    private = Path(tempfile.mkdtemp(prefix="gpuspace-p-", dir="/tmp"))
    try:
        code = ("import sys; from git_gpuspace.engine.containers import ContainerInfo; "
                "from git_gpuspace.leases import _worktree_vanished; "
                "print(_worktree_vanished(ContainerInfo('c', 'created', 'i', {'gpuspace.worktree': sys.argv[1], "
                "'gpuspace.repo': sys.argv[2]})))")
        seen = other.run(sys.executable, "-c", code, str(private / "wt"), str(private / "repo" / ".git"),
                         cwd=user_dir(other, tmp_path))
        assert seen.stdout.strip() == "False", seen.stderr
    finally:
        shutil.rmtree(private)
