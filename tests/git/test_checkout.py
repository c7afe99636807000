"""The fast checkout (git_gpuspace/git/checkout.py) gives what `git worktree add` gives.

Each test makes a worktree with `worktrees.add` (the path `git gpuspace add` takes) and, for
the same commit, a twin with `git worktree add`, then compares them file by file and asks
git itself whether ours is clean. No engine needed.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from pathlib import Path

import pytest
from dulwich.index import Index, InvalidPathError
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo as DulwichRepo

from git_gpuspace.git import checkout, worktrees
from git_gpuspace.errors import WorktreeError
import helpers
from helpers import commit_all

git = functools.partial(helpers.git, text=False)  # bytes: what git checks out is compared byte for byte


def out(*args: str, cwd: Path, input: bytes | None = None) -> str:
    return git(*args, cwd=cwd, input=input).stdout.decode().strip()


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    return path


def ours(repo: Path, target: Path, commit: str, branch: str | None = None) -> Path:
    info = worktrees.discover(repo)
    worktrees.add(info, target, worktrees.Checkout(commit=commit, branch=branch))
    return target


def gits(repo: Path, target: Path, commit: str) -> Path:
    git("worktree", "add", "-q", "--detach", str(target), commit, cwd=repo)
    return target


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under a worktree (but .git): kind, content or link target, user-exec bit."""
    found = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not (directory == str(root) and d == ".git")]
        for name in subdirs + files:
            path = Path(directory, name)
            relative = str(path.relative_to(root))
            if relative == ".git":
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir",)
            else:
                found[relative] = ("file", path.read_bytes(), bool(info.st_mode & stat.S_IXUSR))
    return found


def assert_same_as_git(repo: Path, tmp_path: Path, commit: str) -> Path:
    mine = ours(repo, tmp_path / "ours", commit)
    twin = gits(repo, tmp_path / "twin", commit)
    assert snapshot(mine) == snapshot(twin)
    assert out("ls-files", "-s", cwd=mine) == out("ls-files", "-s", cwd=twin)
    assert_clean(mine)
    return mine


def assert_clean(worktree: Path) -> None:
    assert out("status", "--porcelain", "--ignored", cwd=worktree) == ""
    assert git("diff-index", "--quiet", "HEAD", cwd=worktree, check=False).returncode == 0
    assert git("diff-files", "--quiet", cwd=worktree, check=False).returncode == 0
    assert_index_stat_data_exact(worktree)


def assert_index_stat_data_exact(worktree: Path) -> None:
    """The index holds each file's real stat data, so git never needs to re-read a file."""
    admin = Path(out("rev-parse", "--absolute-git-dir", cwd=worktree))
    index = Index(str(admin / "index"))
    for path, entry in index.items():
        info = os.lstat(worktree / os.fsdecode(path))
        assert entry.mtime == (info.st_mtime_ns // 10**9, info.st_mtime_ns % 10**9), path
        assert entry.ctime == (info.st_ctime_ns // 10**9, info.st_ctime_ns % 10**9), path
        assert (entry.ino, entry.dev & 0xFFFFFFFF, entry.size) == (info.st_ino, info.st_dev & 0xFFFFFFFF, info.st_size), path


@pytest.fixture
def sample(tmp_path) -> Path:
    """Nested directories, an executable, symlinks (to a file, a directory, nowhere), binary
    and CRLF content (no .gitattributes: written byte for byte), an empty file."""
    repo = new_repo(tmp_path / "repo")
    (repo / "a" / "b" / "c" / "d").mkdir(parents=True)
    (repo / "a" / "b" / "c" / "d" / "deep.txt").write_text("deep\n")
    (repo / "a" / "top.txt").write_text("top\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "a" / "b" / "tool").write_text("#!/bin/sh\n")
    (repo / "a" / "b" / "tool").chmod(0o755)
    (repo / "link-to-file").symlink_to("a/top.txt")
    (repo / "link-to-dir").symlink_to("a/b")
    (repo / "a" / "dangling").symlink_to("../nowhere")
    (repo / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    (repo / "binary.bin").write_bytes(bytes(range(256)) * 40)
    (repo / "empty").write_bytes(b"")
    (repo / "name with spaces.txt").write_text("spaces\n")
    (repo / "ünïcode.txt").write_text("unicode\n")
    commit_all(repo)
    return repo


def test_same_files_modes_links_and_index_as_git(sample, tmp_path):
    commit = out("rev-parse", "HEAD", cwd=sample)
    mine = assert_same_as_git(sample, tmp_path, commit)
    assert os.readlink(mine / "link-to-dir") == "a/b"
    assert os.access(mine / "a" / "b" / "tool", os.X_OK) and not os.access(mine / "a" / "top.txt", os.X_OK)
    assert (mine / "crlf.txt").read_bytes() == b"one\r\ntwo\r\n"


def test_git_lists_and_removes_it(sample, tmp_path):
    commit = out("rev-parse", "HEAD", cwd=sample)
    mine = ours(sample, tmp_path / "wt", commit, branch=None)
    listing = out("worktree", "list", "--porcelain", cwd=sample)
    assert f"worktree {mine}\nHEAD {commit}\ndetached" in listing
    git("worktree", "remove", str(mine), cwd=sample)  # refuses a dirty worktree: ours is clean
    assert not mine.exists()
    assert out("worktree", "list", "--porcelain", cwd=sample).count("worktree ") == 1


def test_branch_checkout_leaves_nothing_of_main_behind(tmp_path):
    """Only the commit's files: none of the main worktree's HEAD (dulwich's own linked
    worktree setup checks out the main HEAD first, leaving such files as untracked)."""
    repo = new_repo(tmp_path / "repo")
    (repo / "old.txt").write_text("old\n")
    commit_all(repo)
    git("branch", "older", cwd=repo)
    (repo / "only-on-main.txt").write_text("main\n")
    (repo / "old.txt").unlink()
    commit_all(repo)
    older = out("rev-parse", "older", cwd=repo)
    mine = ours(repo, tmp_path / "wt", older, branch="older")
    assert sorted(p.name for p in mine.iterdir()) == [".git", "old.txt"]
    assert out("rev-parse", "--abbrev-ref", "HEAD", cwd=mine) == "older"
    assert_clean(mine)


def test_empty_subtree_and_empty_root_tree(tmp_path):
    repo = new_repo(tmp_path / "repo")
    empty = out("mktree", cwd=repo, input=b"")
    blob = out("hash-object", "-w", "--stdin", cwd=repo, input=b"kept\n")
    tree = out("mktree", cwd=repo, input=f"040000 tree {empty}\tvoid\n100644 blob {blob}\tkept.txt\n".encode())
    commit = out("commit-tree", tree, "-m", "with an empty subtree", cwd=repo)
    mine = assert_same_as_git(repo, tmp_path, commit)
    assert not (mine / "void").exists()  # git makes no directory for an empty tree

    bare_commit = out("commit-tree", empty, "-m", "nothing at all", cwd=repo)
    nothing = ours(repo, tmp_path / "nothing", bare_commit)
    assert [p.name for p in nothing.iterdir()] == [".git"]
    assert_clean(nothing)


def test_many_files_in_many_batches(tmp_path, monkeypatch):
    """More files than one batch and more batches than may wait at once: the pipeline's
    back-pressure and every batch's stat data reach the index."""
    monkeypatch.setattr(checkout, "BATCH_FILES", 7)
    repo = new_repo(tmp_path / "repo")
    for d in range(12):
        (repo / f"d{d:02d}").mkdir()
        for f in range(40):
            (repo / f"d{d:02d}" / f"f{f:02d}.txt").write_text(f"{d} {f}\n" * (f + 1))
    commit = commit_all(repo)
    assert_same_as_git(repo, tmp_path, commit)


def test_a_tree_of_one_batch_is_written_without_writer_threads(sample, tmp_path, monkeypatch):
    """A sweep's small worktrees: starting the writer threads cost more than the writes."""
    def no_pool(*args, **kwargs):
        raise AssertionError("a writer thread was started for one batch")

    monkeypatch.setattr(checkout, "ThreadPoolExecutor", no_pool)
    commit = out("rev-parse", "HEAD", cwd=sample)
    assert_same_as_git(sample, tmp_path, commit)
    monkeypatch.setattr(checkout, "BATCH_FILES", 3)  # more than one batch: the threads write them
    with pytest.raises(AssertionError, match="writer thread"):
        ours(sample, tmp_path / "two-batches", commit, branch=None)


def test_loose_objects_are_read_too(tmp_path):
    """Objects not yet in a pack (a fresh commit) are found as well as packed ones."""
    repo = new_repo(tmp_path / "repo")
    (repo / "packed.txt").write_text("packed\n")
    commit_all(repo)
    git("repack", "-adq", cwd=repo)
    (repo / "loose.txt").write_text("loose\n")
    commit = commit_all(repo)
    assert_same_as_git(repo, tmp_path, commit)


@pytest.mark.parametrize(
    "attributes, autocrlf",
    [("*.txt text eol=crlf\n", None), (None, "true"), ("sub/*.txt text eol=crlf\n", None)],
    ids=["gitattributes", "autocrlf", "nested-gitattributes"],
)
def test_checkout_filters_apply_as_in_git(tmp_path, attributes, autocrlf):
    repo = new_repo(tmp_path / "repo")
    (repo / "sub").mkdir()
    (repo / "a.txt").write_text("one\ntwo\n")
    (repo / "sub" / "b.txt").write_text("three\n")
    (repo / "c.bin").write_bytes(b"\x00\x01\n")
    if attributes and attributes.startswith("sub/"):
        (repo / "sub" / ".gitattributes").write_text(attributes.removeprefix("sub/"))
    elif attributes:
        (repo / ".gitattributes").write_text(attributes)
    commit = commit_all(repo)
    if autocrlf:
        git("config", "core.autocrlf", autocrlf, cwd=repo)
    mine = assert_same_as_git(repo, tmp_path, commit)
    assert (mine / "sub" / "b.txt").read_bytes() == b"three\r\n"


def _commit_tree_with(repo: Path, name: bytes) -> str:
    """A commit whose tree holds an entry git itself refuses to check out."""
    with DulwichRepo(str(repo)) as dulwich_repo:
        blob = Blob.from_string(b"evil\n")
        inner = Tree()
        inner.add(b"config", 0o100644, blob.id)
        tree = Tree()
        tree.add(name, 0o040000, inner.id)
        tree.add(b"fine.txt", 0o100644, blob.id)
        commit = Commit()
        commit.tree, commit.message = tree.id, b"evil\n"
        commit.author = commit.committer = b"Test <test@example.com>"
        commit.author_time = commit.commit_time = 0
        commit.author_timezone = commit.commit_timezone = 0
        for item in (blob, inner, tree, commit):
            dulwich_repo.object_store.add_object(item)
        return commit.id.decode()


@pytest.mark.parametrize("name", [b".git", b".GIT", b"..", b"git~1"])
def test_refuses_paths_git_refuses_and_leaves_nothing(tmp_path, name):
    repo = new_repo(tmp_path / "repo")
    (repo / "x").write_text("x\n")
    commit_all(repo)
    evil = _commit_tree_with(repo, name)
    target = tmp_path / "wt"
    with pytest.raises(WorktreeError, match="invalid path"):
        ours(repo, target, evil)
    assert not target.exists()
    assert not (repo / ".git" / "worktrees" / "wt").exists()
    assert not (tmp_path / "config").exists()


def test_refuses_to_write_through_a_symlink_of_the_same_tree(tmp_path):
    """A tree (made by hand: git never writes one) where `d` is a symlink and `d/x` a file."""
    entries = [
        _Entry(b"d", 0o120000, b"0" * 40),
        _Entry(b"d/x", 0o100644, b"1" * 40),
    ]
    with pytest.raises(InvalidPathError):
        checkout._check_paths(entries, lambda element: True, ignore_case=False)
    with pytest.raises(InvalidPathError):
        checkout._check_paths([_Entry(b".gitmodules", 0o120000, b"0" * 40)], lambda element: True, ignore_case=False)
    with pytest.raises(InvalidPathError):  # the same path twice
        checkout._check_paths([_Entry(b"a", 0o100644, b"0" * 40), _Entry(b"a", 0o100644, b"1" * 40)], lambda e: True, ignore_case=False)
    with pytest.raises(InvalidPathError):  # through a symlink that differs in case only, where case is ignored
        checkout._check_paths([_Entry(b"D", 0o120000, b"0" * 40), _Entry(b"d/x", 0o100644, b"1" * 40)], lambda e: True, ignore_case=True)
    # names that differ in case only are both written, as git writes them
    both = [_Entry(b"A", 0o100644, b"0" * 40), _Entry(b"a", 0o100644, b"1" * 40)]
    assert checkout._check_paths(both, lambda e: True, ignore_case=True) == []
    assert checkout._check_paths(entries[1:], lambda element: True, ignore_case=False) == [b"d"]


class _Entry:
    def __init__(self, path: bytes, mode: int, sha: bytes) -> None:
        self.path, self.mode, self.sha = path, mode, sha


def test_never_writes_over_what_is_there(sample, tmp_path):
    """The target must be empty: an existing file is an error, never overwritten."""
    commit = out("rev-parse", "HEAD", cwd=sample)
    target = tmp_path / "wt"
    target.mkdir()
    with DulwichRepo(str(sample)) as main:
        linked = checkout.init_linked_worktree(str(target), main, "wt", commit.encode())
        (target / "run.sh").write_text("mine\n")
        with pytest.raises(FileExistsError):
            checkout.materialize(linked)
        linked.close()
    assert (target / "run.sh").read_text() == "mine\n"


def _wide_repo(tmp_path: Path, dirs: int = 6, files: int = 30) -> tuple[Path, str]:
    repo = new_repo(tmp_path / "repo")
    for d in range(dirs):
        (repo / f"d{d}").mkdir()
        for f in range(files):
            (repo / f"d{d}" / f"f{f:02d}.txt").write_text(f"{d}/{f}\n")
        (repo / f"d{d}" / "run.sh").write_text("#!/bin/sh\n")
        (repo / f"d{d}" / "run.sh").chmod(0o755)
        (repo / f"d{d}" / "link").symlink_to("run.sh")
    return repo, commit_all(repo)


@pytest.fixture
def threads_of_this_test(monkeypatch):
    """The checkout forks only from a single-threaded process. Threads an earlier test of this
    worker left running (a client's connection pool) are not this test's: the check counts only
    the threads started since this test began."""
    import threading

    before = set(threading.enumerate()) - {threading.main_thread()}
    monkeypatch.setattr(threading, "active_count", lambda: len(set(threading.enumerate()) - before))


def test_a_big_tree_is_split_between_processes(tmp_path, monkeypatch, threads_of_this_test):
    monkeypatch.setattr(checkout, "MIN_FILES_PER_PROCESS", 40)
    monkeypatch.setattr(checkout, "_cpu_count", lambda: 3)
    forked = record_forks(monkeypatch)
    repo, commit = _wide_repo(tmp_path)
    assert_same_as_git(repo, tmp_path, commit)
    assert len(forked) == 2  # three processes: this one and two children
    assert_reaped(forked)


@pytest.mark.parametrize("failing", ["child", "parent"])
def test_a_failing_process_fails_the_checkout_and_all_are_reaped(tmp_path, monkeypatch, failing, threads_of_this_test):
    """The child writes the second half (d3..d5), this process the first (d0..d2)."""
    repo, commit = _wide_repo(tmp_path)
    real_write = checkout._write_batch
    parent = os.getpid()
    doomed = b"d5/" if failing == "child" else b"d0/"

    def write(batch, symlink_fn):
        if (os.getpid() != parent) == (failing == "child") and any(path.startswith(doomed) for path, *_ in batch):
            raise PermissionError(13, "denied for the test", os.fsdecode(batch[0][1]))
        return real_write(batch, symlink_fn)

    monkeypatch.setattr(checkout, "_write_batch", write)
    forked = record_forks(monkeypatch)
    target = tmp_path / "wt"
    target.mkdir()
    with DulwichRepo(str(repo)) as main:
        with checkout.init_linked_worktree(str(target), main, "wt", commit.encode()) as linked:
            with pytest.raises(PermissionError, match="denied for the test"):
                checkout.materialize(linked, processes=2)
    assert forked
    assert_reaped(forked)


def test_no_fork_while_other_threads_run(threads_of_this_test):
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not checkout._can_fork()
    finally:
        stop.set()
        thread.join()
    assert checkout._can_fork()


def test_objects_of_an_alternate_store_are_read(tmp_path):
    """A `git clone --shared` has no objects of its own: they are in the origin's store."""
    origin = new_repo(tmp_path / "origin")
    (origin / "shared.txt").write_text("from the alternate\n")
    commit_all(origin)
    git("repack", "-adq", cwd=origin)
    git("clone", "-q", "--shared", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    clone = tmp_path / "clone"
    assert (clone / ".git" / "objects" / "info" / "alternates").exists()
    assert_same_as_git(clone, tmp_path, out("rev-parse", "HEAD", cwd=clone))


@pytest.mark.parametrize("ofs_deltas", ["true", "false"], ids=["ofs-delta", "ref-delta"])
def test_old_commits_of_a_deeply_deltified_pack_in_two_processes(tmp_path, monkeypatch, ofs_deltas,
                                                                  threads_of_this_test):
    """Blobs deep in delta chains (read in pack order, bases cached or followed again), in a
    process of their own too."""
    from test_pack_order import versions_repo

    monkeypatch.setattr(checkout, "MIN_FILES_PER_PROCESS", 2)
    monkeypatch.setattr(checkout, "_cpu_count", lambda: 2)
    monkeypatch.setattr(checkout, "DELTA_CACHE_BYTES", 3000)  # a base or two at most
    repo = versions_repo(tmp_path / "repo")
    git("-c", f"repack.useDeltaBaseOffset={ofs_deltas}", "repack", "-adfq", "--depth=50", "--window=50", cwd=repo)
    for back, name in ((0, "head"), (15, "middle"), (29, "first")):
        commit = out("rev-parse", f"HEAD~{back}", cwd=repo)
        mine = ours(repo, tmp_path / f"ours-{name}", commit)
        twin = gits(repo, tmp_path / f"twin-{name}", commit)
        assert snapshot(mine) == snapshot(twin)
        assert_clean(mine)


def test_a_configured_delta_cache_limit_is_honoured(tmp_path, monkeypatch):
    repo = new_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a\n")
    commit = commit_all(repo)
    git("config", "core.deltaBaseCacheLimit", "1234567", cwd=repo)
    limits = []
    real_init = checkout.DiskObjectStore.__init__

    def spy(self, path, *args, **options):
        limits.append(options.get("delta_base_cache_limit"))
        real_init(self, path, *args, **options)

    monkeypatch.setattr(checkout.DiskObjectStore, "__init__", spy)
    assert_same_as_git(repo, tmp_path, commit)
    assert 1234567 in limits and checkout.DELTA_CACHE_BYTES not in limits


def record_forks(monkeypatch) -> list[int]:
    """The pids of the writer processes the checkout forks."""
    forked: list[int] = []
    real_fork = checkout._fork_writer

    def fork(*args):
        child = real_fork(*args)
        forked.append(child.pid)
        return child

    monkeypatch.setattr(checkout, "_fork_writer", fork)
    return forked


def assert_reaped(pids: list[int]) -> None:
    """Each forked writer was waited for (the test process may have other children)."""
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_batch_of_adds_reads_the_worktrees_and_the_committer_once_and_each_is_as_gits(tmp_path, monkeypatch):
    """A sweep's worktrees: one listing and one `git var` for all of them, each worktree the
    same as git's own, its HEAD's reflog line dated when that worktree was made."""
    repo = new_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a\n")
    commit = commit_all(repo, "one")
    info = worktrees.discover(repo)
    calls = {"list": 0, "ident": 0}
    listing, ident = worktrees.list_worktrees, worktrees.committer_ident

    def counted(name, real):
        def call(*args):
            calls[name] += 1
            return real(*args)
        return call

    monkeypatch.setattr(worktrees, "list_worktrees", counted("list", listing))
    monkeypatch.setattr(worktrees, "committer_ident", counted("ident", ident))
    clock = iter([1_900_000_000, 1_900_000_007, 1_900_000_009])
    monkeypatch.setattr("time.time", lambda: next(clock))
    with worktrees.batch(info):
        for name in ("w1", "w2", "w3"):
            worktrees.add(info, tmp_path / name, worktrees.Checkout(commit=commit))
    assert calls == {"list": 1, "ident": 1}
    monkeypatch.undo()
    for name, when in (("w1", 1_900_000_000), ("w2", 1_900_000_007), ("w3", 1_900_000_009)):
        assert snapshot(tmp_path / name) == snapshot(gits(repo, tmp_path / f"git-{name}", commit))
        assert out("reflog", "-1", "--date=unix", "--format=%gd", "HEAD", cwd=tmp_path / name) == f"HEAD@{{{when}}}"
    worktrees.add(info, tmp_path / "w4", worktrees.Checkout(commit=commit))  # no batch: read anew
    assert out("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 8


def test_a_batch_still_refuses_a_path_git_has_registered(tmp_path):
    repo = new_repo(tmp_path / "repo")
    (repo / "a.txt").write_text("a\n")
    commit = commit_all(repo, "one")
    gits(repo, tmp_path / "gone", commit)
    shutil.rmtree(tmp_path / "gone")  # registered, its directory gone: git refuses it without -f
    info = worktrees.discover(repo)
    with worktrees.batch(info), pytest.raises(worktrees.GitRefusal) as refused:
        worktrees.add(info, tmp_path / "gone", worktrees.Checkout(commit=commit))
    assert str(refused.value) == f"'{tmp_path / 'gone'}' is a missing but already registered worktree;"
