"""Plain git drives the lifecycle: hooks bind on `git worktree add`, reconcile cleans up after."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from conftest import wait_for

NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}



def git_env(repo, *args, env=None, cwd=None):
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd or repo.path, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def initialized(repo):
    repo.ok("init", "--gpus", "1")
    return repo


def hook_files(directory):
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in sorted(directory.iterdir())
            if not p.name.endswith(".sample")}


def test_init_records_defaults_and_installs_hooks_once(repo):
    result = repo.ok("init", "--gpus", "2", "--memory", "4g")
    assert "installed" in result.stdout
    text = repo.state_text()
    assert "auto_bind = true" in text and 'gpus = "2"' in text and 'memory = "4g"' in text
    hooks = repo.common_dir / "hooks"
    before = hook_files(hooks)
    assert {"post-checkout", "post-commit", "post-merge"} <= set(before)
    assert "Nothing to do" in repo.ok("hooks", "install").stdout
    repo.ok("init")
    assert hook_files(hooks) == before
    assert "installed in" in repo.ok("hooks", "status").stdout


def test_init_refuses_bad_defaults(repo):
    result = repo.gs("init", "--memory", "lots")
    assert result.returncode == 2 and "invalid --memory" in result.stderr
    assert repo.state_text() == ""


def test_existing_hook_is_chained_and_restored_byte_for_byte(repo, tmp_path):
    hooks = repo.common_dir / "hooks"
    log = tmp_path / "user-hook.log"
    original = f'#!/bin/sh\n# a hand-written hook\necho "$@" >> {log}\n'.encode()
    (hooks / "post-checkout").write_bytes(original)
    os.chmod(hooks / "post-checkout", 0o750)
    before = hook_files(hooks)

    repo.ok("init", "--gpus", "none")
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    assert log.read_text().strip().endswith(" 1")  # the user's hook still ran, with git's arguments
    assert [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["running"]

    repo.ok("hooks", "uninstall")
    assert hook_files(hooks) == before
    assert (hooks / "post-checkout").read_bytes() == original


def test_core_hooks_path_is_honoured(repo, tmp_path):
    repo.git("config", "core.hooksPath", ".githooks")
    repo.ok("init", "--gpus", "none")
    assert (repo.path / ".githooks" / "post-checkout").exists()
    assert not (repo.common_dir / "hooks" / "post-checkout").exists()
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    assert [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["running"]
    repo.ok("hooks", "uninstall")
    assert not (repo.path / ".githooks" / "post-checkout").exists()


def test_git_worktree_add_binds_like_gpuspace_add(initialized, tmp_path):
    repo = initialized
    repo.git("worktree", "add", "-q", str(tmp_path / "by-git"), "-b", "by-git")
    repo.ok("add", "-b", "by-us", str(tmp_path / "by-us"))
    records = {r["branch"]: r for r in repo.status()}
    assert records["by-git"]["state"] == records["by-us"]["state"] == "running"
    assert len(records["by-git"]["gpus"]) == len(records["by-us"]["gpus"]) == 1
    assert records["by-git"]["gpus"][0]["uuid"] != records["by-us"]["gpus"][0]["uuid"]

    import tomllib

    bindings = {b["branch"]: b for b in tomllib.loads(repo.state_text())["bindings"]}
    ignore = {"path", "container", "gpus", "created", "worktree_id", "branch", "data_dir"}
    assert {k: v for k, v in bindings["by-git"].items() if k not in ignore} == \
           {k: v for k, v in bindings["by-us"].items() if k not in ignore}
    containers = {c.labels["gpuspace.branch"]: c for c in repo.containers()}
    assert set(containers["by-git"].labels) == set(containers["by-us"].labels)
    for key in ("Init", "ShmSize", "Memory", "NanoCpus", "RestartPolicy"):
        assert containers["by-git"].attrs["HostConfig"][key] == containers["by-us"].attrs["HostConfig"][key]
    for key in ("WorkingDir", "Cmd", "User"):
        assert containers["by-git"].attrs["Config"][key] == containers["by-us"].attrs["Config"][key]

    def env(container):  # the same variables; only the worktree's own context differs
        pairs = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
        return {k: v for k, v in pairs.items() if k not in ("GPUSPACE_WORKTREE", "GPUSPACE_BRANCH")}

    assert env(containers["by-git"]) == env(containers["by-us"])


def test_checkouts_in_existing_worktrees_create_nothing(initialized, tmp_path):
    repo = initialized
    wt = tmp_path / "wt"
    repo.git("worktree", "add", "-q", str(wt), "-b", "exp")
    [container] = repo.containers()
    repo.git("checkout", "-q", "-b", "side")  # in main: no container
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "exp-next", cwd=wt)  # in the bound worktree
    [same] = repo.containers()
    assert same.id == container.id and same.status == "running"
    assert [r["branch"] for r in repo.status() if r["path"] == str(wt)] == ["exp-next"]


def test_git_worktree_remove_then_a_hook_firing_command_cleans_up(initialized, tmp_path):
    repo = initialized
    wt = tmp_path / "wt"
    repo.git("worktree", "add", "-q", str(wt), "-b", "exp")
    assert len(repo.containers()) == 1
    repo.git("worktree", "remove", str(wt))
    (repo.path / "notes.txt").write_text("next idea\n")
    repo.git("add", "notes.txt")
    repo.git("commit", "-q", "-m", "notes")  # post-commit notices, converges in the background
    # the container goes first, the binding in the one write at the end of the cleanup
    assert wait_for(lambda: repo.containers() == [] and "bindings = []" in repo.state_text())
    assert (repo.path / "notes.txt").read_text() == "next idea\n"


def test_rm_rf_then_prune(initialized, tmp_path):
    repo = initialized
    wt = tmp_path / "wt"
    repo.git("worktree", "add", "-q", str(wt), "-b", "exp")
    shutil.rmtree(wt)
    down = git_env(repo, "gpuspace", "status", "--json", env=NOWHERE)
    assert [r["state"] for r in json.loads(down.stdout) if r["path"] == str(wt)] == ["orphaned"]
    result = repo.ok("prune")
    assert "is gone" in result.stdout
    assert repo.containers() == []
    assert "exp" in repo.branches()


def test_git_worktree_move_keeps_binding_and_gpus(initialized, tmp_path):
    repo = initialized
    old, new = tmp_path / "old", tmp_path / "moved" / "new"
    new.parent.mkdir()
    repo.git("worktree", "add", "-q", str(old), "-b", "exp")
    [before] = repo.containers()
    gpus_before = before.labels["gpuspace.gpus"]
    repo.git("worktree", "move", str(old), str(new))
    repo.git("checkout", "-q", "-b", "poke")  # any hook-firing command reconciles

    def moved():  # made again for the new path, and started (the hook works in the background)
        found = repo.containers()
        return len(found) == 1 and found[0].labels["gpuspace.worktree"] == str(new) and found[0].status == "running"

    assert wait_for(moved), [(c.labels["gpuspace.worktree"], c.status) for c in repo.containers()]
    [after] = repo.containers()
    assert after.labels["gpuspace.gpus"] == gpus_before
    assert {m["Destination"]: m["Source"] for m in after.attrs["Mounts"]}["/workspace"] == str(new)
    [record] = [r for r in repo.status() if r["branch"] == "exp"]
    assert record["path"] == str(new) and record["state"] == "running"


def test_hook_never_breaks_git_and_binding_waits(initialized, tmp_path):
    repo = initialized
    wt = tmp_path / "wt"
    result = git_env(repo, "worktree", "add", "-q", str(wt), "-b", "exp", env=NOWHERE)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot reach the Docker engine" in warnings[0] and "pending" in warnings[0]
    assert (wt / "src" / "train.py").exists()
    assert repo.containers() == []
    shown = repo.ok("status").stdout  # the engine answers now: the binding is retried meanwhile
    [row] = [line for line in shown.splitlines() if line.startswith(str(wt))]
    assert row.split()[4] == "pending" and "(cannot reach" not in row  # the reason is no table cell
    assert f"  {wt}  pending: cannot reach the Docker engine" in shown and shown.rstrip().endswith("retrying now")

    def exp_state():
        [record] = [r for r in repo.status() if r["branch"] == "exp"]
        return record["state"], record["reason"], len(record["gpus"])

    assert wait_for(lambda: exp_state() == ("running", None, 1))  # the cause went away: so did the reason


def test_pending_binding_is_started_by_the_next_reconcile(initialized, tmp_path, monkeypatch):
    repo = initialized
    monkeypatch.setenv("FAKE_GPU_COUNT", "1")
    repo.ok("add", "-b", "holder", str(tmp_path / "holder"))
    result = git_env(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    assert result.returncode == 0 and "0 free" in result.stderr
    assert [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["pending"]
    repo.ok("remove", "holder")
    repo.git("checkout", "-q", "-b", "poke")  # the hook sees the pending marker and converges
    assert wait_for(lambda: [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["running"])


def test_hook_with_its_interpreter_gone_warns_and_git_succeeds(initialized, tmp_path):
    repo = initialized
    hook = repo.common_dir / "hooks" / "post-checkout"
    text = hook.read_text()
    start = text.index("GPUSPACE_BIN='") + len("GPUSPACE_BIN='")
    hook.write_text(text[:start] + "/gone/venv/bin/git-gpuspace" + text[text.index("'", start):])
    result = repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    assert "is gone" in result.stderr and "hooks install" in result.stderr
    assert (tmp_path / "wt" / "src").exists()


def _record_calls(hook, tmp_path):
    """Point our hook at a script that writes down how it was called."""
    record = tmp_path / "calls"
    recorder = tmp_path / "recorder"
    recorder.write_text(f'#!/bin/sh\necho "$@" >>{record}\n')
    recorder.chmod(0o755)
    text = hook.read_text()
    start = text.index("GPUSPACE_BIN='") + len("GPUSPACE_BIN='")
    hook.write_text(text[:start] + str(recorder) + text[text.index("'", start):])
    return record


def test_add_runs_the_hook_of_its_worktree_without_a_second_binding_process(initialized, tmp_path):
    """`add` binds the worktree itself: the hook it runs (as git would) needs no interpreter
    of ours to tell it so, while `git worktree add` still has it bind."""
    repo = initialized
    record = _record_calls(repo.common_dir / "hooks" / "post-checkout", tmp_path)
    repo.ok("add", "--no-start", "--gpus", "none", "-b", "ours", str(tmp_path / "ours"))
    assert not record.exists() or "new-worktree" not in record.read_text()
    repo.git("worktree", "add", "-q", "-b", "plain", str(tmp_path / "plain"))
    assert record.read_text().splitlines() == ["_hook new-worktree"]


def test_the_hook_binds_git_worktree_add_in_a_sha256_repository(tmp_path):
    """A SHA-256 repository's null id is 64 zeros."""
    import subprocess

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "--object-format=sha256", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "i"],
                   cwd=repo, check=True)
    from git_gpuspace.git.hooks import hook_text

    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(hook_text())
    hook.chmod(0o755)
    (repo / ".git" / "gpuspace.toml").write_text("")  # as `init` leaves it
    record = _record_calls(hook, tmp_path)
    subprocess.run(["git", "worktree", "add", "-q", "-b", "x", str(tmp_path / "wt")], cwd=repo, check=True)
    assert record.read_text().splitlines() == ["_hook new-worktree"]


def test_hook_does_not_import_code_from_the_repo(initialized, tmp_path):
    repo = initialized
    marker = tmp_path / "pwned"
    package = repo.path / "git_gpuspace"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (package / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    repo.git("add", "git_gpuspace")
    repo.git("commit", "-q", "-m", "hostile")
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    repo.git("checkout", "-q", "-b", "again")
    assert not marker.exists()
    assert [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["running"]


def test_hooks_without_init_bind_nothing(repo, tmp_path):
    repo.ok("hooks", "install")
    repo.ok("add", "-b", "x", str(tmp_path / "x"), "--gpus", "none")  # the repo uses gpuspace...
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")  # ...but did not init
    assert [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["none"]


def test_a_hook_that_replaced_ours_is_chained_after_the_older_one(repo):
    hooks = repo.common_dir / "hooks"
    (hooks / "post-commit").write_text("#!/bin/sh\necho first >> ran\n")
    (hooks / "post-commit").chmod(0o755)
    repo.ok("hooks", "install")
    (hooks / "post-commit").write_text("#!/bin/sh\necho second >> ran\n")  # someone else's installer, --force
    (hooks / "post-commit").chmod(0o755)
    status = repo.ok("hooks", "status").stdout
    assert "another hook replaced ours" in status
    repo.ok("hooks", "install")
    assert (hooks / "post-commit.gpuspace-chained.2").read_text() == "#!/bin/sh\necho second >> ran\n"
    repo.git("commit", "-q", "--allow-empty", "-m", "x")
    assert (repo.path / "ran").read_text() == "first\nsecond\n"  # nothing lost, in order
    assert "another hook replaced ours" not in repo.ok("hooks", "status").stdout
    repo.ok("hooks", "install")  # again: nothing changes
    assert not (hooks / "post-commit.gpuspace-chained.3").exists()
    removed = repo.ok("hooks", "uninstall").stdout
    assert (hooks / "post-commit").read_text() == "#!/bin/sh\necho second >> ran\n"
    assert "merge it into" in removed and (hooks / "post-commit.gpuspace-chained").exists()


@pytest.mark.parametrize("order", ["lfs first", "gpuspace first"])
def test_git_lfs_and_gpuspace_hooks_work_in_either_order(repo, tmp_path, order):
    """The README's sequences: LFS content is smudged and our hook binds, whichever came first."""
    if order == "lfs first":
        repo.git("lfs", "install", "--local")
        repo.ok("init", "--gpus", "none")
    else:
        repo.ok("init", "--gpus", "none")
        repo.git("lfs", "update", "--force")  # `git lfs install` refuses: a hook is there
        repo.ok("hooks", "install")
    repo.git("lfs", "track", "--lockable", "*.bin")
    (repo.path / "w.bin").write_bytes(b"\x00weights")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "lfs")
    hooks = repo.common_dir / "hooks"
    assert all("git lfs" in "".join(p.read_text() for p in hooks.glob(f"{name}.gpuspace-chained*"))
               for name in ("post-checkout", "post-commit", "post-merge"))
    repo.git("worktree", "add", "-q", str(tmp_path / "wt"), "-b", "exp")
    assert (tmp_path / "wt" / "w.bin").read_bytes() == b"\x00weights"
    assert oct((tmp_path / "wt" / "w.bin").stat().st_mode & 0o777) == "0o444"  # git-lfs's post-checkout ran
    assert wait_for(lambda: [r["state"] for r in repo.status() if r["branch"] == "exp"] == ["running"])
