"""Git worktrees, read and written through dulwich. The only module that imports dulwich,
with checkout.py, which fills a new worktree.

What this writes is what `git worktree add` writes (a `.git` file in the worktree, an admin
dir under `<common dir>/worktrees/<id>`), so the git CLI treats our worktrees as its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dulwich.config import ConfigFile
from dulwich.errors import NotGitRepository
from dulwich.objectspec import parse_commit
from dulwich.refs import check_ref_format
from dulwich.repo import Repo
from dulwich.worktree import list_worktrees as _dulwich_list_worktrees
from dulwich.worktree import remove_worktree

from .checkout import init_linked_worktree, materialize
from .errors import NotARepository, UsageError, WorktreeError

HEADS = b"refs/heads/"


@dataclass(frozen=True)
class RepoInfo:
    common_dir: Path  # the shared .git directory (absolute, resolved)
    main_path: Path | None  # the main worktree; None for a bare repository
    # core.worktree, absolute: git sets it in submodules' git dirs (.git/modules/<name>), users
    # by hand. When set it is also main_path; `add` refuses such repositories (require_plain_repo).
    core_worktree: Path | None = None

    @property
    def name(self) -> str:
        if self.main_path is not None:
            return self.main_path.name
        return self.common_dir.name.removesuffix(".git") or "repo"

    @property
    def anchor(self) -> Path:
        """Where relative defaults such as ../worktrees/<branch> hang from."""
        return self.main_path if self.main_path is not None else self.common_dir

    def open(self) -> Repo:
        if self.core_worktree is not None:
            # The working tree may have no .git of its own (a hand-set core.worktree): open the
            # git dir, where dulwich, like git, reads core.worktree.
            return Repo(str(self.common_dir))
        return Repo(str(self.anchor))


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str | None  # short name; None when detached
    head: str | None  # commit hex; None on an unborn branch
    is_main: bool = False
    prunable: bool = False  # registered with git, but its directory is gone
    locked: bool = False
    admin_id: str | None = None  # name of its admin dir, <common dir>/worktrees/<id>; None for main


def discover(start: Path | None = None) -> RepoInfo:
    """Find the repo around `start` (main worktree, linked worktree or any subdirectory)."""
    start = (start or Path.cwd()).resolve()
    try:
        repo = Repo.discover(str(start))
    except NotGitRepository:
        raise NotARepository(
            f"not a git repository: {start}",
            hint="run this inside a git repository (or a worktree of one)",
        ) from None
    with contextlib.closing(repo):
        common_dir = Path(repo.commondir()).resolve()
    bare = _is_bare(common_dir)
    if not bare and (start == common_dir or common_dir in start.parents):
        raise NotARepository(
            f"{start} is inside the git directory, not a worktree",
            hint="run this from the repository's working tree",
        )
    # A submodule's git dir (.git/modules/<name>) is not named .git, so _is_bare calls it bare;
    # its working tree is what core.worktree says. Without this, anchor would be the git dir
    # and ../worktrees/<branch> would land inside the superproject's .git.
    core_worktree = _core_worktree(common_dir)
    if core_worktree is not None:
        main_path = core_worktree
    else:
        main_path = None if bare else common_dir.parent
    return RepoInfo(common_dir=common_dir, main_path=main_path, core_worktree=core_worktree)


def _is_bare(common_dir: Path) -> bool:
    if common_dir.name != ".git":
        return True
    with contextlib.closing(Repo(str(common_dir))) as repo:
        return repo.get_config().get_boolean(b"core", b"bare", False)


def _core_worktree(common_dir: Path) -> Path | None:
    """core.worktree, resolved as git does: relative to the git dir. `git sparse-checkout init`
    (extensions.worktreeConfig) moves it into config.worktree, so that file is read too."""
    found = None
    # The later file wins, as in git. git reads config.worktree only with extensions.worktreeConfig;
    # reading it always can only make `add` refuse more.
    for name in ("config", "config.worktree"):
        try:
            found = ConfigFile.from_path(str(common_dir / name)).get((b"core",), b"worktree")
        except (FileNotFoundError, KeyError):
            pass
    return (common_dir / os.fsdecode(found)).resolve() if found else None


def require_plain_repo(info: RepoInfo, verb: str = "add") -> None:
    """Refuse repositories whose working tree is set by core.worktree (submodules above all).

    git 2.39's own `git worktree add` does work inside a submodule (the admin dir goes under
    .git/modules/<name>/worktrees/), but `git worktree list` there shows the git dir as the
    main worktree, and git documents submodule support of worktrees as incomplete; rather
    than half-follow it, git-gpuspace refuses before it writes anything. `bind` needs this
    too: the main worktree's `.git` is a file there, and a container mounting the git dir
    over it cannot start.
    """
    if info.core_worktree is not None:
        raise UsageError(
            f"this repository sets core.worktree (a submodule?): git-gpuspace cannot {verb} worktrees here",
            hint="run it in the superproject",
        )


def _is_git_dir(path: Path) -> bool:
    """What git itself takes for a repository: HEAD, objects/ and refs/."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def require_outside_git_dirs(info: RepoInfo, path: Path) -> None:
    """Refuse a worktree path in any git dir (ours, a superproject's, a submodule's): files
    checked out there could become hooks or config that git runs. Symlinks are followed too."""
    for spelling in {path, Path(os.path.realpath(path))}:
        for candidate in [spelling, *spelling.parents]:
            if candidate == info.common_dir or (candidate.is_dir() and _is_git_dir(candidate)):
                raise UsageError(
                    f"'{path}' is inside a git directory ({candidate})",
                    hint="put worktrees outside .git, e.g. ../worktrees/<name>",
                )


def list_worktrees(info: RepoInfo) -> list[Worktree]:
    with contextlib.closing(info.open()) as repo:
        try:
            entries = _dulwich_list_worktrees(repo)
        except KeyError:  # dulwich needs a HEAD commit; a new repository has none, and no linked worktree
            if info.main_path is None:
                return []
            target = repo.refs.read_ref(b"HEAD") or b""
            branch = _short(target[len(b"ref: "):]) if target.startswith(b"ref: ") else None
            return [Worktree(path=info.main_path, branch=branch, head=None, is_main=True)]
        found = []
        for entry in entries:
            is_main = Path(entry.path).resolve() == info.anchor
            if is_main and info.main_path is None:
                continue  # a bare repository's own directory is not a worktree
            found.append(
                Worktree(
                    path=Path(os.path.abspath(entry.path)),
                    branch=_short(entry.branch),
                    head=entry.head.decode() if entry.head else None,
                    is_main=is_main,
                    prunable=entry.prunable,
                    locked=entry.locked,
                    admin_id=None if is_main or entry.prunable else _admin_id(Path(entry.path)),
                )
            )
        return found


def _admin_id(path: Path) -> str | None:
    """A linked worktree's `.git` file says `gitdir: <common dir>/worktrees/<id>`."""
    try:
        text = (path / ".git").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return Path(text.removeprefix("gitdir:").strip()).name if text.startswith("gitdir:") else None


def find_worktree(info: RepoInfo, path: Path) -> Worktree | None:
    """The registered worktree at `path`, matched as written or with symlinks resolved."""
    wanted = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}
    for worktree in list_worktrees(info):
        if {worktree.path, Path(os.path.realpath(worktree.path))} & wanted:
            return worktree
    return None


def _short(ref: bytes | None) -> str | None:
    if ref is None:
        return None
    return ref[len(HEADS):].decode() if ref.startswith(HEADS) else ref.decode()


def validate_branch_name(name: str) -> None:
    """Refuse what `git branch` refuses, before anything is created."""
    encoded = name.encode()
    if not name or name.startswith("-") or name == "HEAD" or not check_ref_format(HEADS + encoded):
        raise UsageError(
            f"'{name}' is not a valid branch name",
            hint="see `git help check-ref-format`: no spaces, '..', '~', '^', ':', '?', '*', '[', leading '-'",
        )


def branch_exists(info: RepoInfo, name: str) -> bool:
    with contextlib.closing(info.open()) as repo:
        return HEADS + name.encode() in repo.refs


def resolve_commit(info: RepoInfo, spec: str) -> str:
    with contextlib.closing(info.open()) as repo:
        try:
            return parse_commit(repo, spec.encode()).id.decode()
        except (KeyError, ValueError, NotImplementedError):
            raise UsageError(f"invalid reference: {spec}", hint="name a branch, tag or commit") from None


def head_commit(info: RepoInfo) -> str:
    with contextlib.closing(info.open()) as repo:
        try:
            return repo.head().decode()
        except KeyError:
            raise WorktreeError(
                "the repository has no commit yet", hint="make a first commit, then add worktrees"
            ) from None


@dataclass(frozen=True)
class Checkout:
    """What `add` puts in a new worktree: a branch (made here if `create_branch`) or a commit."""

    commit: str
    branch: str | None = None
    create_branch: bool = False


def add(info: RepoInfo, path: Path, checkout: Checkout) -> Worktree:
    """Create a linked worktree at `path`; on failure remove whatever it made."""
    path = Path(os.path.abspath(path))
    # Both checks before anything is made: never write a checkout into a git dir.
    require_plain_repo(info)
    require_outside_git_dirs(info, path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"'{path}' already exists")
    if checkout.branch:
        holder = next((w for w in list_worktrees(info) if w.branch == checkout.branch), None)
        if holder is not None:
            raise UsageError(
                f"branch '{checkout.branch}' is already checked out at '{holder.path}'",
                hint="use -b <new-branch>, or give a commit to get a detached HEAD",
            )
    made_dirs = missing_parents(path)
    created_branch = False
    admin_dir: Path | None = None
    with contextlib.closing(info.open()) as repo:
        try:
            if checkout.branch and checkout.create_branch:
                ref = HEADS + checkout.branch.encode()
                if not repo.refs.add_if_new(ref, checkout.commit.encode()):
                    raise UsageError(f"a branch named '{checkout.branch}' already exists")
                created_branch = True
            path.mkdir(parents=True, exist_ok=True)
            identifier = _unique_identifier(info.common_dir, path.name)
            admin_dir = info.common_dir / "worktrees" / identifier
            worktree_repo = init_linked_worktree(str(path), repo, identifier, checkout.commit.encode())
            with contextlib.closing(worktree_repo):
                # dulwich puts a worktree where core.worktree says (resolved from the admin dir:
                # in a submodule, that is the submodule's git dir); check out only into `path`.
                target = Path(worktree_repo.path).resolve()
                if target != path.resolve():
                    raise WorktreeError(f"the checkout for '{path}' would go to '{target}' (core.worktree)")
                if checkout.branch:
                    worktree_repo.refs.set_symbolic_ref(b"HEAD", HEADS + checkout.branch.encode())
                else:
                    (admin_dir / "HEAD").write_bytes(checkout.commit.encode() + b"\n")
                materialize(worktree_repo)
        except BaseException as error:
            if admin_dir is not None:
                shutil.rmtree(admin_dir, ignore_errors=True)
            _remove_tree(path, made_dirs)
            if created_branch:
                repo.refs.remove_if_equals(HEADS + checkout.branch.encode(), checkout.commit.encode())
            if isinstance(error, OSError):
                raise WorktreeError(f"cannot create the worktree at '{path}': {error.strerror or error}") from None
            raise
    return Worktree(path=path, branch=checkout.branch, head=checkout.commit, admin_id=identifier)


def missing_parents(path: Path) -> list[Path]:
    """The directories `mkdir -p path` would create, deepest first."""
    missing = []
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_tree(path: Path, made_dirs: list[Path]) -> None:
    """Undo a failed add: empty a directory we filled, remove the ones we made."""
    if path.is_dir():
        if path in made_dirs:
            shutil.rmtree(path, ignore_errors=True)
        else:  # it was an empty directory the user made: leave it empty, as found
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    for directory in made_dirs[1:] if made_dirs and made_dirs[0] == path else made_dirs:
        with contextlib.suppress(OSError):
            directory.rmdir()


def _unique_identifier(common_dir: Path, basename: str) -> str:
    """git's rule: the basename, with a number appended while that admin dir is taken."""
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in basename).lstrip(".") or "worktree"
    candidate, number = base, 0
    while (common_dir / "worktrees" / candidate).exists():
        number += 1
        candidate = f"{base}{number}"
    return candidate


def is_dirty(path: Path) -> bool | None:
    """Modified, staged or untracked (not ignored) files: what makes `git worktree remove` refuse.

    None when the worktree is gone by the time we look (another command removed it).
    """
    from dulwich import porcelain  # heavy: only when asked

    try:
        with contextlib.closing(Repo(str(path))) as repo:
            status = porcelain.status(repo, untracked_files="normal")
    except (NotGitRepository, FileNotFoundError):
        return None
    return bool(any(status.staged.values()) or status.unstaged or status.untracked)


def remove(info: RepoInfo, worktree: Worktree, force: bool) -> None:
    """Remove a linked worktree as `git worktree remove` does (dulwich does not check dirt)."""
    if worktree.is_main:
        raise UsageError("the main worktree cannot be removed")
    if not force and not worktree.prunable and is_dirty(worktree.path):
        raise WorktreeError(
            f"'{worktree.path}' contains modified or untracked files",
            hint="commit or stash them, or use --force to delete them",
        )
    with contextlib.closing(info.open()) as repo:
        try:
            remove_worktree(repo, str(worktree.path), force=force)
        except ValueError as error:
            hint = "unlock it with `git worktree unlock`, or use --force" if "locked" in str(error) else None
            raise WorktreeError(str(error).replace("Worktree", "worktree"), hint=hint) from None


def delete_branch(info: RepoInfo, name: str, expected_commit: str) -> None:
    """Delete a branch only if it still points where we made it."""
    with contextlib.closing(info.open()) as repo:
        repo.refs.remove_if_equals(HEADS + name.encode(), expected_commit.encode())


def config_value(info: RepoInfo, section: str, name: str) -> str | None:
    """A git config value as git reads it: repo, then user (~/.gitconfig), then system."""
    with contextlib.closing(info.open()) as repo:
        try:
            return repo.get_config_stack().get((section.encode(),), name.encode()).decode()
        except KeyError:
            return None


@dataclass(frozen=True)
class Snapshot:
    commit: str  # HEAD, or a snapshot commit of the uncommitted changes to tracked files
    snapshot: bool
    untracked: list[str]  # left out, for a warning


def snapshot(worktree: Path) -> Snapshot:
    """What `git stash create` records, without touching the worktree, index or branch: a commit
    whose parent is HEAD and whose tree is the index with the worktree's changes to tracked files."""
    import stat
    import time

    from dulwich import porcelain
    from dulwich.index import commit_tree
    from dulwich.objects import Blob, Commit
    from dulwich.repo import get_user_identity

    with contextlib.closing(Repo(str(worktree))) as repo:
        try:
            head = repo.head()
        except KeyError:
            raise WorktreeError("the worktree has no commit yet", hint="make a first commit, then run") from None
        status = porcelain.status(repo, untracked_files="normal")
        untracked = [os.fsdecode(path) for path in status.untracked]
        changed = set(status.unstaged)
        if not changed and not any(status.staged.values()):
            return Snapshot(head.decode(), False, untracked)
        entries = []
        for path, entry in repo.open_index().items():
            sha, mode = getattr(entry, "sha", None), getattr(entry, "mode", None)
            if sha is None:  # a conflicted entry: take the worktree's file
                changed.add(path)
            if path in changed and mode != 0o160000:
                full = os.path.join(os.fsencode(worktree), path)
                try:
                    info = os.lstat(full)
                except FileNotFoundError:
                    continue  # deleted in the worktree
                if stat.S_ISLNK(info.st_mode):
                    data, mode = os.readlink(full), 0o120000
                else:
                    with open(full, "rb") as handle:
                        data = handle.read()
                    mode = 0o100755 if info.st_mode & 0o111 else 0o100644
                blob = Blob.from_string(data)
                repo.object_store.add_object(blob)
                sha = blob.id
            entries.append((path, sha, mode))
        commit = Commit()
        commit.tree = commit_tree(repo.object_store, entries)
        commit.parents = [head]
        identity = get_user_identity(repo.get_config_stack())
        commit.author = commit.committer = identity
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = b"git-gpuspace: snapshot of uncommitted changes\n"
        repo.object_store.add_object(commit)
        return Snapshot(commit.id.decode(), True, untracked)


def set_ref(info: RepoInfo, ref: str, commit: str) -> None:
    with contextlib.closing(info.open()) as repo:
        repo.refs[ref.encode()] = commit.encode()


def delete_ref(info: RepoInfo, ref: str) -> None:
    with contextlib.closing(info.open()) as repo:
        with contextlib.suppress(KeyError):
            del repo.refs[ref.encode()]
