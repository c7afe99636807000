"""The container boundary: code in a container cannot change what the host's git executes or
what git-gpuspace trusts, while git still works inside (on a git dir of its own: see also
test_private_git.py). Each attack is made by a real process
in a real container, and judged by real git commands on the host afterwards."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from git_gpuspace import boundary
from git_gpuspace.errors import UsageError, WorktreeError

GIT_ENV = {"GIT_AUTHOR_NAME": "In", "GIT_AUTHOR_EMAIL": "in@example.com", "GIT_COMMITTER_NAME": "In",
           "GIT_COMMITTER_EMAIL": "in@example.com", "GIT_PAGER": "cat"}


def sh(container, script: str):
    result = container.exec_run(["sh", "-c", script], environment=GIT_ENV, workdir="/workspace")
    return result.exit_code, result.output.decode(errors="replace")


def attacks(common_dir, admin, marker) -> dict[str, str]:
    """What hostile code would write to make the host run `touch <marker>`."""
    hook = f"printf '#!/bin/sh\\ntouch {marker}\\n' > {{}} && chmod +x {{}}"
    return {
        "hook": hook.format(f"{common_dir}/hooks/post-checkout", f"{common_dir}/hooks/post-checkout"),
        "config": f"printf '[core]\\n\\tfsmonitor = touch {marker}\\n' >> {common_dir}/config",
        "info": f"echo '* filter=evil' >> {common_dir}/info/attributes",
        "state": f"echo 'privileged = true' >> {common_dir}/gpuspace.toml",
        "paths": f"echo / >> {common_dir}/gpuspace.paths",
        "packed-refs": f"echo x > {common_dir}/packed-refs",
        "new file at the top": f"echo {common_dir}/worktrees/x > {common_dir}/commondir",
        "other worktree": f"echo x > {common_dir}/worktrees/other/HEAD",
        **({
            "commondir": f"echo /workspace/evil > {admin}/commondir",
            "gitdir": f"echo / > {admin}/gitdir",
            "config.worktree": f"printf '[core]\\n\\tfsmonitor = touch {marker}\\n' > {admin}/config.worktree",
            ".git file": "echo 'gitdir: /workspace/evil' > /workspace/.git",
            "replace .git file": "rm -f /workspace/.git",
        } if admin else {}),
    }


def assert_host_git_is_unharmed(repo, worktree, marker):
    for where in (repo.path, worktree):
        repo.git("status", "--short", cwd=where)
        repo.git("checkout", "-q", "-b", f"probe-{time.monotonic_ns()}", cwd=where)
    assert not marker.exists(), "the host's git ran a command planted from the container"


def test_container_cannot_plant_hooks_config_or_state_but_git_works(repo, tmp_path):
    repo.git("worktree", "add", "-q", str(tmp_path / "other"), "-b", "other")
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = [c for c in repo.containers() if c.labels["gpuspace.worktree"] == str(tmp_path / "wt")]
    admin = repo.common_dir / "worktrees" / "wt"
    marker = tmp_path / "PWNED"
    before = {p: p.read_bytes() for p in (repo.common_dir / "config", repo.common_dir / "gpuspace.toml", admin / "commondir")}
    for name, script in attacks(repo.common_dir, admin, marker).items():
        code, output = sh(container, script)
        assert code != 0, f"{name}: the container could write it"
        assert "Read-only file system" in output or "busy" in output, (name, output)
    assert {p: p.read_bytes() for p in before} == before
    assert not (repo.common_dir / "hooks" / "post-checkout").exists()

    # git itself works inside: status, add, commit, branch, log; the commit comes in by `sync`,
    # the container's other branches stay its own
    code, output = sh(container, "echo new > made.txt && git status --short && git add made.txt"
                                 " && git commit -q -m 'from the container' && git branch from-container"
                                 " && git log --oneline -1")
    assert code == 0, output
    assert "from the container" in output
    repo.ok("sync")
    assert repo.git("log", "-1", "--format=%s", cwd=tmp_path / "wt").stdout.strip() == "from the container"
    assert "from-container" not in repo.branches()
    assert repo.git("status", "--porcelain", cwd=tmp_path / "wt").stdout == ""
    assert_host_git_is_unharmed(repo, tmp_path / "wt", marker)


def test_protection_survives_the_host_replacing_files_by_rename(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    inode = os.stat(repo.common_dir / "config").st_ino
    repo.git("config", "user.extra", "1")  # git writes config.lock, then renames it over config
    repo.ok("add", "-b", "exp2", str(tmp_path / "wt2"), "--gpus", "none")  # the state file is renamed over too
    assert os.stat(repo.common_dir / "config").st_ino != inode
    code, output = sh(container, f"grep -c extra {repo.common_dir}/config")
    assert code == 0, "the container should see the host's new config"
    for target in ("config", "gpuspace.toml"):
        code, output = sh(container, f"echo x >> {repo.common_dir}/{target}")
        assert code != 0 and "Read-only" in output, (target, output)


def test_container_cannot_hold_the_hosts_state_lock(repo, tmp_path):
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    container.exec_run(["flock", str(repo.common_dir / "gpuspace.lock"), "sleep", "60"], detach=True)
    time.sleep(1)
    started = time.monotonic()
    result = repo.gs("prune", env={"GPUSPACE_LOCK_TIMEOUT": "5"})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5


def test_main_worktree_container_cannot_change_what_the_host_runs(repo, tmp_path):
    repo.ok("bind", "--gpus", "none")
    [container] = repo.containers()
    marker = tmp_path / "PWNED"
    for name, script in attacks(repo.common_dir, None, marker).items():
        code, output = sh(container, script.replace("/worktrees/other/", "/"))
        assert code != 0, f"{name}: the container could write it"
    code, output = sh(container, "git status --short && git log --oneline -1")
    assert code == 0 and "initial" in output, output
    assert_host_git_is_unharmed(repo, repo.path, marker)


def test_hooks_path_inside_the_worktree_is_read_only(repo, tmp_path):
    repo.git("config", "core.hooksPath", ".githooks")
    repo.ok("add", "-b", "exp", str(tmp_path / "wt"), "--gpus", "none")
    [container] = repo.containers()
    marker = tmp_path / "PWNED"
    code, output = sh(container, f"printf '#!/bin/sh\\ntouch {marker}\\n' > .githooks/post-checkout")
    assert code != 0 and "Read-only" in output, output
    subprocess.run(["git", "checkout", "-q", "-b", "probe"], cwd=tmp_path / "wt", check=True)
    assert not marker.exists()


# --- the mounts, without the engine: what the layout above is made of ------------------------------


class _Private:
    def __init__(self, root):
        self.repo, self.dot_git = root / "private.git", root / "private-dot-git"


@pytest.fixture
def layout(tmp_path):
    common, worktree = tmp_path / "repo" / ".git", tmp_path / "wt"
    (common / "worktrees" / "wt").mkdir(parents=True)
    worktree.mkdir()
    return common, worktree


def test_a_runs_container_gets_the_git_dir_and_its_dot_git_read_only(layout):
    common, worktree = layout
    main_tree = common.parent
    assert boundary.git_binds(main_tree, common, True, None) == [
        (str(common), str(common), True), (str(common), "/workspace/.git", True)]
    assert boundary.git_binds(worktree, common, False, None) == [
        (str(common), str(common), True), (str(worktree / ".git"), "/workspace/.git", True)]
    store, tree = common.parent.parent / "store.git", common.parent.parent / "tree"  # GIT_DIR apart from its tree
    assert boundary.git_binds(tree, store, True, None) == [(str(store), str(store), True), (str(store), "/workspace/.git", True)]
    (common / boundary.LOCK_NAME).write_text("")
    assert boundary.git_binds(worktree, common, False, None, workspace="/w") == [
        (str(common), str(common), True), ("/dev/null", str(common / boundary.LOCK_NAME), True),
        (str(worktree / ".git"), "/w/.git", True)]


def test_a_bound_container_gets_its_private_git_dir_writable(layout, tmp_path):
    common, worktree = layout
    private = _Private(tmp_path)
    assert boundary.git_binds(common.parent, common, True, private) == [
        (str(common), str(common), True), (str(private.repo), "/workspace/.git", False)]
    assert boundary.git_binds(worktree, common, False, private) == [
        (str(common), str(common), True), (str(private.repo), str(private.repo), False),
        (str(private.dot_git), "/workspace/.git", True)]


def test_a_hooks_path_inside_the_worktree_is_made_and_mounted_read_only(layout):
    common, worktree = layout
    binds = boundary.git_binds(worktree, common, False, None, hooks_path="tools/hooks")
    assert binds[-1] == (str(worktree / "tools" / "hooks"), "/workspace/tools/hooks", True)
    assert (worktree / "tools" / "hooks").is_dir()
    assert boundary.git_binds(worktree, common, False, None, hooks_path="tools/hooks") == binds  # there already
    for outside in ("../elsewhere", "/etc/hooks", ".", ""):
        assert len(boundary.git_binds(worktree, common, False, None, hooks_path=outside)) == 2, outside


def test_a_workspace_folder_at_the_repositorys_own_path_is_refused(tmp_path):
    common = tmp_path / "repo" / ".git"
    common.mkdir(parents=True)
    with pytest.raises(UsageError, match="is the repository's own path") as refused:
        boundary.git_binds(common.parent, common, True, None, workspace=str(common.parent))
    assert refused.value.hint == "choose another workspaceFolder"


def test_an_admin_dir_is_one_of_the_repository_s_worktrees(layout, tmp_path):
    common, _ = layout
    assert boundary.admin_dir(common, "wt") == common / "worktrees" / "wt"
    (common / "worktrees" / "file").write_text("")
    (common / "worktrees" / "link").symlink_to(tmp_path)
    for bad in (None, "", ".", "..", "wt/..", "file", "link", "absent"):
        with pytest.raises(WorktreeError, match="is not a directory of this repository") as refused:
            boundary.admin_dir(common, bad)
        assert refused.value.hint == "`git worktree repair` fixes a worktree whose .git file points elsewhere"
        assert f"'{common / 'worktrees' / (bad or '')}'" in str(refused.value)


def test_protected_paths_and_what_exposes_them(layout, tmp_path):
    common, worktree = layout
    protected = boundary.protected_paths(worktree, common, common.parent, "hooks")
    assert protected == (common.resolve(), worktree / ".git", common.parent / ".git", worktree / "hooks")
    assert boundary.protected_paths(worktree, common, common.parent, None) == protected[:3]
    assert boundary.exposes(worktree / "hooks" / "post-checkout", protected)  # inside one
    assert boundary.exposes(worktree, protected)  # holds one
    assert boundary.exposes(common.resolve(), protected)  # is one
    assert boundary.exposes(tmp_path / "elsewhere" / ".git" / "config", protected)  # any .git
    assert not boundary.exposes(worktree / "src", protected) and not boundary.exposes(tmp_path / "data", protected)
