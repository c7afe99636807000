"""Signed verdicts: a note counts in `verify`, `status` and the pre-push hook only when an SSH
signature by a trusted key (the user's own, or one of git's gpg.ssh.allowedSignersFile) covers
its check, its commit or tree, and its text. Everything else is "not checked"."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Repo
from helpers import git
from test_verify import commits

CHECK = ["sh", "-c", "test ! -e broken"]
SIGNATURE = "-----BEGIN SSH SIGNATURE-----"
UNSIGNED = "not signed by a key you trust (unsigned)"
MISMATCH = "its signature is not for this object, check and text (copied or edited)"


def run_count(repo) -> int:
    return len(json.loads(repo.ok("runs", "--json").stdout))


def head_check(repo, name: str = "tests") -> str:
    [main] = [record for record in repo.status() if record["main"]]
    return main["checks"][name]


def note(repo, commit: str, name: str = "tests") -> str:
    return repo.git("notes", f"--ref=gpuspace/{name}", "show", commit).stdout


def ignored_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "ignored the note" in line]


def assert_checked_again(result, repo, runs_before: int, commit: str) -> None:
    """verify ran the check (no `(cached)`) and its new note is signed."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{commit[:7]} pass" in result.stdout and "(cached)" not in result.stdout, result.stdout
    assert run_count(repo) == runs_before + 1
    assert SIGNATURE in note(repo, commit)


def fingerprint(public_key: Path) -> str:
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key)], capture_output=True, text=True, check=True)
    return shown.stdout.split()[1]


def user_env(home: Path) -> dict[str, str]:
    """A second user (a teammate): their own HOME and XDG dirs, so their own key."""
    env = {"HOME": str(home)}
    for name, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"),
                      ("XDG_CACHE_HOME", "cache")):
        env[name] = str(home / sub)
    (home / "config" / "git-gpuspace").mkdir(parents=True)
    (home / "config" / "git-gpuspace" / "config.toml").write_text(
        (Path(os.environ["XDG_CONFIG_HOME"]) / "git-gpuspace" / "config.toml").read_text())
    return env


def own_public_key(home_env: dict[str, str] | None = None) -> Path:
    config = Path((home_env or os.environ)["XDG_CONFIG_HOME"])
    return config / "git-gpuspace" / "verdict-key" / "id_ed25519.pub"


def bare_remote(repo, tmp_path) -> Path:
    remote = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    repo.git("remote", "add", "origin", str(remote))
    repo.git("push", "-q", "origin", "main")
    return remote


def clone(remote: Path, folder: Path, client) -> Repo:
    path = folder / "clone"  # its runs' worktrees go in folder/worktrees, apart from the repo's
    folder.mkdir()
    git("clone", "-q", str(remote), str(path), cwd=remote.parent)
    git("fetch", "-q", "origin", "refs/notes/*:refs/notes/*", cwd=path)
    return Repo(path=path, client=client)


def path_without_ssh_keygen(tmp_path) -> str:
    """PATH as the tests have it, but with no ssh-keygen anywhere on it."""
    system = tmp_path / "system-bin"
    system.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if entry != "ssh-keygen" and not (system / entry).exists():
                    (system / entry).symlink_to(os.path.join(folder, entry))
    kept = [p for p in os.environ["PATH"].split(os.pathsep)
            if p and not os.path.exists(os.path.join(p, "ssh-keygen"))]
    return os.pathsep.join([*kept, str(system)])


def counting_ssh_keygen(tmp_path) -> tuple[str, Path]:
    """PATH with an ssh-keygen that logs each call, then runs the real one."""
    real = subprocess.run(["sh", "-c", "command -v ssh-keygen"], capture_output=True, text=True).stdout.strip()
    folder, log = tmp_path / "counting-bin", tmp_path / "ssh-keygen.calls"
    folder.mkdir()
    (folder / "ssh-keygen").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    (folder / "ssh-keygen").chmod(0o755)
    log.write_text("")
    return f"{folder}{os.pathsep}{os.environ['PATH']}", log


def test_a_collaborators_plain_note_counts_as_not_checked(repo, tmp_path):
    """The attack: `git notes add -m pass` on a commit and its tree, pushed to refs/notes/gpuspace/*;
    a fresh clone neither shows nor trusts that pass, refuses the push, and checks the commit."""
    remote = bare_remote(repo, tmp_path)
    [commit] = commits(repo, "a")
    repo.git("push", "-q", "origin", "main")
    collaborator = clone(remote, tmp_path / "collaborator", repo.client)
    for target in (commit, f"{commit}^{{tree}}"):
        collaborator.git("notes", "--ref=gpuspace/tests", "add", "-m", "pass", target)
    collaborator.git("push", "-q", "origin", "refs/notes/gpuspace/*")

    fresh = clone(remote, tmp_path / "fresh", repo.client)
    assert note(fresh, commit) == "pass\n"  # the forged note arrived
    fresh.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    fresh.ok("hooks", "install", "--pre-push", "tests")
    assert head_check(fresh) == "-"
    fresh.git("commit", "-q", "--amend", "-m", "reworded: the same tree")  # its pass would come by the tree
    reworded = fresh.git("rev-parse", "HEAD").stdout.strip()
    refused = fresh.git("push", "origin", "HEAD:refs/heads/reworded", check=False)
    assert refused.returncode != 0 and f"{reworded[:7]} (tests: not checked)" in refused.stderr, refused.stderr

    result = fresh.gs("verify", commit, "--name", "tests")
    assert_checked_again(result, fresh, 0, commit)
    assert ignored_lines(result) == [f"git-gpuspace: ignored the note on {commit[:7]} (tests): {UNSIGNED}",
                                     f"git-gpuspace: ignored the note on {commit[:7]}'s tree (tests): {UNSIGNED}"]
    assert "Traceback" not in result.stderr
    assert SIGNATURE in fresh.git("notes", "--ref=gpuspace/tests", "show", f"{commit}^{{tree}}").stdout  # replaced
    assert fresh.git("push", "-q", "origin", "HEAD:refs/heads/reworded", check=False).returncode == 0  # checked now
    fresh.git("checkout", "-q", "--detach", commit)
    assert head_check(fresh) == "pass"


def test_a_teammates_verdict_counts_once_their_key_is_in_allowed_signers(repo, tmp_path):
    remote = bare_remote(repo, tmp_path)
    first, second = commits(repo, "a", "b")
    repo.git("push", "-q", "origin", "main")
    teammate_env = user_env(tmp_path / "teammate-home")
    teammate = clone(remote, tmp_path / "teammate", repo.client)
    teammate.gs("verify", "add", "tests", "--gpus", "none", "--", *CHECK, env=teammate_env)
    checked = teammate.gs("verify", f"{first}~1..{second}", "--name", "tests", env=teammate_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    teammate.git("push", "-q", "origin", "refs/notes/gpuspace/*")
    their_key = own_public_key(teammate_env)
    assert their_key.exists() and not own_public_key().exists()  # theirs, not ours

    repo.git("fetch", "-q", "origin", "refs/notes/*:refs/notes/*")
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    assert head_check(repo) == "-"  # before: their key is not one we trust
    before = repo.gs("verify", first, "--name", "tests")
    assert_checked_again(before, repo, 0, first)
    assert ignored_lines(before)[0] == (f"git-gpuspace: ignored the note on {first[:7]} (tests): not signed by a key "
                                        f"you trust (signed by ssh-ed25519 key {fingerprint(their_key)})")

    signers = tmp_path / "allowed_signers"
    kind, key = their_key.read_text().split()[:2]
    signers.write_text(f"# the team\nteammate@example.com {kind} {key}\n")
    repo.git("config", "gpg.ssh.allowedSignersFile", str(signers))
    assert head_check(repo) == "pass"
    after = repo.ok("verify", second, "--name", "tests")
    assert after.stdout.startswith(f"{second[:7]} pass (cached)") and not ignored_lines(after)
    assert run_count(repo) == 1

    signers.write_text("")  # their key taken out again: the remembered verification no longer holds
    assert head_check(repo) == "-"


def test_a_signed_note_copied_to_another_commit_or_check_does_not_count(repo):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    repo.ok("verify", "add", "other", "--gpus", "none", "--", *CHECK)
    checked, unchecked = commits(repo, "a", "b")
    repo.ok("verify", checked, "--name", "tests")
    assert SIGNATURE in note(repo, checked) and run_count(repo) == 1
    for source, target in ((checked, unchecked), (f"{checked}^{{tree}}", f"{unchecked}^{{tree}}")):
        repo.git("notes", "--ref=gpuspace/tests", "copy", source, target)
        blob = repo.git("notes", "--ref=gpuspace/tests", "list", source).stdout.strip()
        repo.git("notes", "--ref=gpuspace/other", "add", "-C", blob, source)  # the same bytes, another check
    assert head_check(repo) == "-"

    moved = repo.gs("verify", unchecked, "--name", "tests")
    assert_checked_again(moved, repo, 1, unchecked)
    assert ignored_lines(moved) == [f"git-gpuspace: ignored the note on {unchecked[:7]} (tests): {MISMATCH}",
                                    f"git-gpuspace: ignored the note on {unchecked[:7]}'s tree (tests): {MISMATCH}"]
    renamed = repo.gs("verify", checked, "--name", "other")
    assert renamed.returncode == 0 and "(cached)" not in renamed.stdout and run_count(repo) == 3
    assert ignored_lines(renamed)[0] == f"git-gpuspace: ignored the note on {checked[:7]} (other): {MISMATCH}"


def test_a_signed_note_with_edited_text_does_not_count(repo, tmp_path):
    bare_remote(repo, tmp_path)
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    repo.ok("hooks", "install", "--pre-push", "tests")
    [broken] = commits(repo, "broken")
    assert repo.gs("verify", "--name", "tests").returncode == 1
    for target in (broken, f"{broken}^{{tree}}"):
        text = repo.git("notes", "--ref=gpuspace/tests", "show", target).stdout
        assert text.startswith("fail\n") and SIGNATURE in text
        forged = tmp_path / "forged"
        forged.write_text("pass" + text[len("fail"):])  # the verdict flipped, the signature kept
        blob = repo.git("hash-object", "-w", str(forged)).stdout.strip()
        repo.git("notes", "--ref=gpuspace/tests", "add", "-f", "-C", blob, target)
    assert head_check(repo) == "-"
    refused = repo.git("push", "origin", "main", check=False)
    assert refused.returncode != 0 and f"{broken[:7]} (tests: not checked)" in refused.stderr
    again = repo.gs("verify", "--name", "tests")
    assert again.returncode == 1 and f"{broken[:7]} fail add broken" in again.stdout, again.stdout + again.stderr
    assert ignored_lines(again) == [f"git-gpuspace: ignored the note on {broken[:7]} (tests): {MISMATCH}",
                                    f"git-gpuspace: ignored the note on {broken[:7]}'s tree (tests): {MISMATCH}"]
    assert note(repo, broken).startswith("fail\n") and head_check(repo) == "fail"


def test_own_verdicts_are_remembered_and_checked_again_without_ssh_keygen(repo, tmp_path):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    first, second = commits(repo, "a", "b")
    counting, calls = counting_ssh_keygen(tmp_path)
    checked = repo.gs("verify", f"{first}~1..{second}", "--name", "tests", env={"PATH": counting})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    made = calls.read_text().splitlines()
    assert sum(line.startswith("-q -t ed25519") for line in made) == 1  # the key, made once
    assert sum(line.startswith("-Y sign") for line in made) == 4  # each commit and each tree

    key = own_public_key().with_name("id_ed25519")
    assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    memo = Path(os.environ["XDG_STATE_HOME"]) / "git-gpuspace" / "verified-verdicts"
    assert memo.stat().st_mode & 0o777 == 0o600

    no_ssh_keygen = path_without_ssh_keygen(tmp_path)
    again = repo.gs("verify", f"{first}~1..{second}", "--name", "tests", env={"PATH": no_ssh_keygen})
    assert again.returncode == 0, again.stdout + again.stderr
    assert [line.split()[1:3] for line in again.stdout.splitlines()] == [["pass", "(cached)"]] * 2
    shown = repo.gs("status", env={"PATH": no_ssh_keygen})
    assert shown.returncode == 0 and "tests:pass" in shown.stdout, shown.stderr

    memo.unlink()  # forgotten: the note is checked once more, then remembered again
    calls.write_text("")
    assert "pass (cached)" in repo.gs("verify", second, "--name", "tests", env={"PATH": counting}).stdout
    assert [line.split()[:2] for line in calls.read_text().splitlines()] == [["-Y", "verify"]]
    repo.gs("verify", second, "--name", "tests", env={"PATH": counting})
    assert len(calls.read_text().splitlines()) == 1


def test_without_ssh_keygen_signing_and_checking_fail_in_one_line(repo, tmp_path):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    [commit] = commits(repo, "a")
    no_ssh_keygen = path_without_ssh_keygen(tmp_path)
    refused = repo.gs("verify", "--name", "tests", env={"PATH": no_ssh_keygen})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [
        "git-gpuspace: error: ssh-keygen not found: it is needed to make your verdict signing key (verdict notes "
        "are signed)", "hint: install OpenSSH's client (Debian/Ubuntu: apt-get install openssh-client)"]
    assert run_count(repo) == 0  # nothing queued before the key

    repo.ok("verify", "--name", "tests")
    (Path(os.environ["XDG_STATE_HOME"]) / "git-gpuspace" / "verified-verdicts").unlink()
    unchecked = repo.gs("verify", "--name", "tests", env={"PATH": no_ssh_keygen})
    assert unchecked.returncode == 1 and len(unchecked.stderr.splitlines()) == 2, unchecked.stderr
    assert "ssh-keygen not found: it is needed to check a verdict's signature" in unchecked.stderr
    assert commit


@pytest.mark.parametrize("kind", ["missing", "fifo", "directory"])
def test_an_unreadable_allowed_signers_file_is_one_line(repo, tmp_path, kind):
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", *CHECK)
    commits(repo, "a")
    repo.ok("verify", "--name", "tests")
    signers = tmp_path / "allowed_signers"
    if kind == "fifo":
        os.mkfifo(signers)
    elif kind == "directory":
        signers.mkdir()
    repo.git("config", "gpg.ssh.allowedSignersFile", str(signers))
    result = subprocess.run(["git-gpuspace", "verify", "--name", "tests"], cwd=repo.path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [error, hint] = result.stderr.splitlines()
    assert error.startswith("git-gpuspace: error: ") and f"gpg.ssh.allowedSignersFile {signers}" in error
    assert hint.startswith("hint: ")
