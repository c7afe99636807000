"""A main repository moved by hand and mended with `git worktree repair` (run in the moved main
worktree, as its manual says): its bindings stay its own, so `status`, `remove`, `prune` and
`start` work as git's own commands do. The containers keep the names and labels of the old place;
the state file vouches for that place with the user's key, and only while nothing is there."""

from __future__ import annotations

import json
import shutil
import sys

import tomli_w

from conftest import LABEL_REPO, Repo, make_repo
from helpers import git

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _bind_two(repo: Repo, tmp_path) -> None:
    for name in ("one", "two"):
        repo.ok("add", "--no-start", "--gpus", "none", "-b", name, str(tmp_path / name))


def _worktree_list(path) -> list[str]:
    """`git worktree list --porcelain`'s paths, relative to the folder the repositories are in."""
    out = git("worktree", "list", "--porcelain", cwd=path).stdout
    return [line.split(" ", 1)[1].replace(str(path.parent), "") for line in out.splitlines()
            if line.startswith("worktree ")]


def _labelled(client, common_dir) -> list:
    return client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL_REPO}={common_dir}"})


def test_a_moved_repository_works_after_git_worktree_repair_as_git_does(repo, tmp_path, docker_client):
    # plain git, the same shape and the same move
    plain = make_repo(tmp_path / "plain" / "project")
    for name in ("one", "two"):
        plain.git("worktree", "add", "-q", "-b", name, str(tmp_path / "plain" / name))
    plain.path.rename(tmp_path / "plain" / "moved")
    plain = Repo(tmp_path / "plain" / "moved")
    plain.git("worktree", "repair")
    assert plain.git("-C", str(tmp_path / "plain" / "one"), "status", "--short", check=False).returncode == 0

    _bind_two(repo, tmp_path)
    old_common = repo.common_dir
    assert len(_labelled(docker_client, old_common)) == 2
    moved = Repo(tmp_path / "moved", docker_client)
    repo.path.rename(moved.path)
    try:
        moved.git("worktree", "repair")
        assert moved.git("-C", str(tmp_path / "one"), "status", "--short", check=False).returncode == 0

        records = {r["path"]: r for r in json.loads(moved.ok("status", "--json").stdout)}
        assert records[str(tmp_path / "one")]["state"] == records[str(tmp_path / "two")]["state"] == "created"
        assert records[str(moved.path)]["main"]

        assert plain.git("worktree", "remove", str(tmp_path / "plain" / "one"), check=False).returncode == 0
        removed = moved.gs("remove", str(tmp_path / "one"))
        assert removed.returncode == 0, removed.stderr
        assert not (tmp_path / "one").exists()
        [left] = _labelled(docker_client, old_common)
        assert left.name == records[str(tmp_path / "two")]["container"]

        plain.git("worktree", "prune")
        pruned = moved.gs("prune")
        assert pruned.returncode == 0, pruned.stderr
        assert _worktree_list(moved.path) == ["/moved", "/two"] == _worktree_list(plain.path)
        assert [r["path"] for r in moved.status()] == [str(moved.path), str(tmp_path / "two")]

        # `start` makes the container again where the repository is now (its mounts named the old
        # place), keeping its git dir, which finds the repository's objects at their new place
        started = moved.gs("start", str(tmp_path / "two"))
        assert started.returncode == 0 and "the repository moved" in started.stdout, started.stderr
        assert _labelled(docker_client, old_common) == []
        [made] = _labelled(docker_client, moved.common_dir)
        assert made.status == "running"
        inside = made.exec_run(["git", "-C", "/workspace", "log", "--oneline", "-1"])
        assert inside.exit_code == 0 and b"initial" in inside.output, inside.output
        assert str(old_common) not in (moved.common_dir / "gpuspace.origins").read_text()  # nothing names it now
        moved.ok("remove", str(tmp_path / "two"))
        assert _labelled(docker_client, moved.common_dir) == []
    finally:
        for container in _labelled(docker_client, moved.common_dir):
            container.remove(force=True)


def _first_binding(repo: Repo) -> dict:
    return tomllib.loads(repo.state_text())["bindings"][0]


def _plant(repo: Repo, binding: dict) -> None:
    document = tomllib.loads(repo.state_text()) if repo.state_text() else {"schema": 1}
    document["bindings"] = [binding]
    (repo.common_dir / "gpuspace.toml").write_text(tomli_w.dumps(document))


def _refused(result, key: str) -> None:
    assert result.returncode == 1, result.stderr
    assert f"bindings[0].{key}" in result.stderr and "Traceback" not in result.stderr, result.stderr


def _origins(repo: Repo):
    return repo.common_dir / "gpuspace.origins"


def test_a_recorded_old_place_names_no_other_repositorys_containers(repo, other_repo, tmp_path, docker_client):
    repo.ok("add", "--no-start", "--gpus", "none", "-b", "one", str(tmp_path / "one"))
    [victim] = repo.containers()
    genuine, vouched = _first_binding(repo), _origins(repo).read_text()
    assert vouched.endswith(f" {repo.common_dir}\n")

    # a copy (the original is still there): its containers stay the original's
    copy = Repo(tmp_path / "copy", docker_client)
    shutil.copytree(repo.path, copy.path, symlinks=True)
    for command in (("status",), ("prune",), ("remove", "--keep-worktree", str(tmp_path / "one"))):
        result = copy.gs(*command)
        _refused(result, "container")
        assert "still holds a git dir" in result.stderr

    # another repository's state file naming this one's container, then this one's place too
    other_repo.ok("init", "--gpus", "none")
    _plant(other_repo, genuine)
    _refused(other_repo.gs("prune"), "container")
    _origins(other_repo).write_text(vouched)
    result = other_repo.gs("prune")
    _refused(result, "container")
    assert "still holds a git dir" in result.stderr

    # this one moved away: its old place is free, but only the user's key vouches for it
    repo.path.rename(tmp_path / "moved")
    for forged in ("0" * 64 + f" {repo.common_dir}\n", vouched.replace(" ", "0 ", 1)):
        _origins(other_repo).write_text(forged)
        before = other_repo.state_text()
        result = other_repo.gs("prune")
        _refused(result, "container")
        assert "does not vouch for" in result.stderr and other_repo.state_text() == before
    # ... nor is the user's own line vouched for by another user's key (their own owner.key)
    _origins(other_repo).write_text(vouched)
    result = other_repo.gs("prune", env={"XDG_STATE_HOME": str(tmp_path / "stranger")})
    _refused(result, "container")
    assert "does not vouch for" in result.stderr
    victim.reload()
    assert victim.status == "created"
