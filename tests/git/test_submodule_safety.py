"""`add` never writes a checkout into a git dir: not inside a submodule (whose git dir,
.git/modules/<name>, sets core.worktree), not in a repo with core.worktree set by hand, and
not at a path inside any git dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import LABEL_REPO, gpuspace, make_repo
from helpers import assert_refused, git
from git_gpuspace.git import worktrees
from git_gpuspace.errors import UsageError, WorktreeError

# What may change under .git while the refused commands run: git's own index, and the empty
# flock file that `add` takes (<git dir>/gpuspace.lock) before worktrees.add() refuses; it goes
# away once commands/add.py calls worktrees.require_plain_repo() right after discover().
REWRITTEN = {"index", "index.lock", "gpuspace.lock"}


def listing(git_dir: Path) -> dict[str, bytes | None]:
    """Every path under a git dir, with the content of each file (None for directories)."""
    found: dict[str, bytes | None] = {}
    for directory, subdirs, files in os.walk(git_dir):
        for name in subdirs + files:
            if name in REWRITTEN:
                continue
            path = Path(directory, name)
            found[str(path.relative_to(git_dir))] = None if path.is_dir() else path.read_bytes()
    return found


def hooks_named(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob(name) if p.parent.name == "hooks")


@pytest.fixture(params=["default-template", "empty-template"])
def superproject(request, tmp_path):
    """A superproject with submodule `mod`, added as a user would; the submodule's repo tracks
    an executable hooks/post-checkout that leaves a marker wherever git runs it.

    With git's default template the submodule's git dir has a hooks/ dir of samples; with an
    empty init.templateDir (a common setting) it has none, and a checkout written into that git
    dir (what the old code did: dulwich resolves core.worktree from the new admin dir, which
    leads back to .git/modules/mod) would create hooks/post-checkout, which git then runs."""
    marker = tmp_path / "MARKER"
    template = ["-c", f"init.templateDir={tmp_path / 'empty-template'}"] if request.param == "empty-template" else []
    (tmp_path / "empty-template").mkdir()
    inner = make_repo(tmp_path / "inner")
    hook = inner.path / "hooks" / "post-checkout"
    hook.parent.mkdir()
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    hook.chmod(0o755)
    inner.git("add", "hooks")
    inner.git("commit", "-q", "-m", "a tracked hooks/ dir")
    outer = make_repo(tmp_path / "super")
    outer.git(*template, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner.path), "mod")
    outer.git("commit", "-q", "-m", "add submodule")
    module_git_dir = outer.path / ".git" / "modules" / "mod"
    assert "worktree" in (module_git_dir / "config").read_text()  # git set core.worktree
    assert (module_git_dir / "hooks").is_dir() == (request.param == "default-template")
    return outer, marker


@pytest.fixture
def no_leftover_containers(docker_client, tmp_path):
    """Refused commands make no container; if one is made anyway, it goes after the test."""
    yield
    for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_REPO}):
        if container.labels[LABEL_REPO].startswith(str(tmp_path)):
            container.remove(force=True)


def test_add_inside_a_submodule_is_refused_and_writes_nothing_into_git_dirs(superproject, no_leftover_containers):
    outer, marker = superproject
    mod = outer.path / "mod"
    dot_git = outer.path / ".git"
    before = listing(dot_git)
    hooks_before = hooks_named(dot_git, "post-checkout")
    assert hooks_before == []

    default = gpuspace("add", "-b", "x", "--gpus", "none", cwd=mod)
    explicit = gpuspace("add", "-b", "y", "../wt-y", "--gpus", "none", cwd=mod)

    for result in (default, explicit):
        assert_refused(result, None, "core.worktree")
        assert "hint: run it in the superproject" in result.stderr
    assert listing(dot_git) == before  # nothing written into the superproject's .git
    assert hooks_named(dot_git, "post-checkout") == hooks_before
    assert not (outer.path / "wt-y").exists() and not (outer.path / "worktrees").exists()
    branches = git("for-each-ref", "--format=%(refname:short)", "refs/heads/", cwd=mod).stdout.split()
    assert "x" not in branches and "y" not in branches
    assert git("worktree", "list", "--porcelain", cwd=mod).stdout.count("worktree ") == 1
    # git's own checkout in the submodule runs no hook that a checkout of ours planted
    git("checkout", "-q", "-b", "z", cwd=mod)
    assert not marker.exists()


def test_discover_in_a_submodule_finds_its_working_tree(superproject):
    outer, _ = superproject
    info = worktrees.discover(outer.path / "mod" / "src")
    assert info.common_dir == (outer.path / ".git" / "modules" / "mod").resolve()
    assert info.main_path == info.core_worktree == (outer.path / "mod").resolve()
    [main] = worktrees.list_worktrees(info)
    assert main.is_main and main.path == outer.path / "mod" and main.admin_id is None
    with pytest.raises(UsageError, match="cannot bind worktrees"):
        worktrees.require_plain_repo(info, "bind")


def test_add_never_checks_out_where_core_worktree_leads(superproject, tmp_path):
    """Defence in depth: even given a RepoInfo without core_worktree (as the old discover()
    made in a submodule), add() checks out only into the path it was given."""
    outer, marker = superproject
    found = worktrees.discover(outer.path / "mod")
    info = worktrees.RepoInfo(common_dir=found.common_dir, main_path=None)  # what the old code saw
    before = listing(outer.path / ".git")
    target = tmp_path / "wt-q"
    with pytest.raises(WorktreeError, match="core.worktree"):
        worktrees.add(info, target, worktrees.Checkout(commit=worktrees.head_commit(info), branch="q", create_branch=True))
    after = listing(outer.path / ".git")
    # the rollback removes the admin dir it made, but leaves its parent worktrees/ (empty), as git does
    if "modules/mod/worktrees" not in before:
        assert after.pop("modules/mod/worktrees", None) is None
        assert not any((outer.path / ".git" / "modules" / "mod" / "worktrees").iterdir())
    assert after == before and not target.exists()
    assert "q" not in git("branch", "--list", "q", cwd=outer.path / "mod").stdout
    git("checkout", "-q", "-b", "z", cwd=outer.path / "mod")
    assert not marker.exists()


def test_a_repo_with_core_worktree_set_is_refused(plain_repo, tmp_path, no_leftover_containers):
    tree = tmp_path / "tree"
    tree.mkdir()
    plain_repo.git("config", "core.worktree", "../../tree")  # relative to the git dir, as git reads it
    info = worktrees.discover(plain_repo.path)
    assert info.core_worktree == info.main_path == tree.resolve()
    assert info.common_dir == plain_repo.common_dir
    before = listing(plain_repo.common_dir)

    result = plain_repo.gs("add", "-b", "w", str(tmp_path / "w"), "--gpus", "none")

    assert_refused(result, None, "core.worktree")
    assert listing(plain_repo.common_dir) == before
    assert not (tmp_path / "w").exists() and "w" not in plain_repo.branches()
    with pytest.raises(UsageError, match="core.worktree"):  # the API refuses too
        worktrees.add(info, tmp_path / "w2", worktrees.Checkout(commit=worktrees.head_commit(info), branch="w2",
                                                                create_branch=True))
    assert not (tmp_path / "w2").exists() and "w2" not in plain_repo.branches()


def test_core_worktree_in_config_worktree_counts_too(plain_repo, tmp_path):
    """`git sparse-checkout init` moves core.worktree from config into config.worktree."""
    (tmp_path / "tree").mkdir()
    plain_repo.git("config", "extensions.worktreeConfig", "true")
    plain_repo.git("config", "--worktree", "core.worktree", str(tmp_path / "tree"))
    assert "worktree" in (plain_repo.common_dir / "config.worktree").read_text()
    assert worktrees.discover(plain_repo.path).core_worktree == (tmp_path / "tree").resolve()


def test_add_refuses_a_target_inside_any_git_dir(plain_repo, tmp_path):
    other = make_repo(tmp_path / "other")
    info = worktrees.discover(plain_repo.path)
    commit = worktrees.head_commit(info)
    link = tmp_path / "link"
    link.symlink_to(other.common_dir)  # a way into a git dir that the path itself does not show
    targets = [
        other.common_dir / "hooks" / "wt",  # another repo's git dir: a tracked hooks/ would run
        other.common_dir / "modules" / "worktrees" / "x",  # where the old default path landed
        plain_repo.common_dir / "wt",  # our own
        link / "wt",
    ]
    before = [listing(repo.common_dir) for repo in (plain_repo, other)]
    for number, target in enumerate(targets):
        branch = f"b{number}"
        with pytest.raises(UsageError, match="inside a git directory") as refused:
            worktrees.add(info, target, worktrees.Checkout(commit=commit, branch=branch, create_branch=True))
        assert refused.value.hint and ".git" in refused.value.hint
        assert not target.exists() and branch not in plain_repo.branches()
    assert [listing(repo.common_dir) for repo in (plain_repo, other)] == before
    # a plain path beside them still works
    made = worktrees.add(info, tmp_path / "fine", worktrees.Checkout(commit=commit, branch="fine", create_branch=True))
    assert made.path == tmp_path / "fine" and (tmp_path / "fine" / "file0.txt").is_file()
    assert "worktree" not in (plain_repo.common_dir / "config").read_text()
    assert worktrees.discover(plain_repo.path).core_worktree is None


def test_a_container_cannot_write_a_submodules_git_dir(tmp_path, docker_client, no_leftover_containers):
    """A submodule's git dir (`modules/<m>`, the main worktree's and a linked worktree's) is read-only
    in a container: its info/attributes (which the host's git reads for filters) cannot be written."""
    inner = make_repo(tmp_path / "inner")
    outer = make_repo(tmp_path / "super", docker_client)
    outer.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner.path), "mod")
    outer.git("commit", "-q", "-m", "add submodule")
    linked = tmp_path / "linked"
    outer.ok("add", "-b", "linked", str(linked), "--gpus", "none")
    git("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", cwd=linked)
    module_dirs = [Path(git("rev-parse", "--absolute-git-dir", cwd=where / "mod").stdout.strip())
                   for where in (outer.path, linked)]
    assert module_dirs == [outer.common_dir / "modules" / "mod",
                           outer.common_dir / "worktrees" / "linked" / "modules" / "mod"]
    [container] = outer.containers()
    for module in module_dirs:
        attributes = module / "info" / "attributes"
        assert container.exec_run(["test", "-f", str(module / "info" / "exclude")]).exit_code == 0  # it is there
        written = container.exec_run(["sh", "-c", f"echo '* filter=planted' >> '{attributes}'"])
        assert written.exit_code != 0 and b"Read-only file system" in written.output, written.output
        assert not attributes.exists()
