"""Git worktrees, read and written through dulwich. The only module that imports dulwich,
with checkout.py, which fills a new worktree.

What this writes is what `git worktree add` writes (a `.git` file in the worktree, an admin
dir under `<common dir>/worktrees/<id>`), so the git CLI treats our worktrees as its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator
from pathlib import Path

from dulwich.config import ConfigFile
from dulwich.errors import NotGitRepository
from dulwich.refs import check_ref_format
from dulwich.reflog import format_reflog_line
from dulwich.repo import Repo
from dulwich.worktree import list_worktrees as _dulwich_list_worktrees
from dulwich.worktree import remove_worktree

from .. import untrusted_files
from ..errors import GitRefusal, NotARepository, UsageError, WorktreeError
from ..faults import checkpoint
from .git_cli import git, own_env

HEADS = b"refs/heads/"
ZERO = b"0" * 40


@dataclass(frozen=True)
class RepoInfo:
    common_dir: Path  # the shared .git directory (absolute, resolved)
    main_path: Path | None  # the main worktree; None for a bare repository
    # core.worktree, absolute: git sets it in submodules' git dirs (.git/modules/<name>), users
    # by hand. When set it is also main_path; `add` refuses such repositories (require_plain_repo).
    core_worktree: Path | None = None
    cwd: Path | None = None  # where the command was asked: HEAD and @{-1} are this worktree's

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return git(*args, cwd=self.cwd)

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
        if self.core_worktree is not None or not os.path.lexists(self.anchor / ".git"):
            # The working tree may have no .git of its own (a hand-set core.worktree, or
            # GIT_DIR and GIT_WORK_TREE apart): open the git dir, where dulwich, like git, reads
            # core.worktree.
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
    # GIT_DIR (and GIT_WORK_TREE) name the repository as they do for git itself
    git_dir = os.environ.get("GIT_DIR") if start == Path.cwd().resolve() else None
    try:
        repo = Repo(os.path.abspath(git_dir)) if git_dir else Repo.discover(str(start))
    except NotGitRepository:
        raise NotARepository(
            f"not a git repository: {git_dir or start}",
            hint="run this inside a git repository (or a worktree of one)",
        ) from None
    with contextlib.closing(repo):
        common_dir = Path(repo.commondir()).resolve()
    bare = _is_bare(common_dir)
    if not bare and not git_dir and (start == common_dir or common_dir in start.parents):
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
    if git_dir and os.environ.get("GIT_WORK_TREE") and core_worktree is None:
        main_path = Path(os.path.abspath(os.environ["GIT_WORK_TREE"])).resolve()
    return RepoInfo(common_dir=common_dir, main_path=main_path, core_worktree=core_worktree, cwd=start)


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
        untrusted_files.require_regular(common_dir / name)  # dulwich opens it with a plain open()
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
    _require_regular_admin_files(info.common_dir)
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
                    # git's rule: prunable when the `.git` its gitdir file names is gone (a
                    # removal cut short leaves the directory without it)
                    prunable=not is_main and not entry.locked
                    and (entry.prunable or not (Path(entry.path) / ".git").exists()),
                    locked=entry.locked,
                    admin_id=None if is_main or entry.prunable else _admin_id(Path(entry.path)),
                )
            )
        return found


def _require_regular_admin_files(common_dir: Path) -> None:
    """dulwich lists worktrees by opening HEAD and each admin dir's HEAD, gitdir and locked
    with a plain open(): a FIFO there would hang it. A few stats; no container writes these."""
    root = common_dir / "worktrees"
    admin_dirs = sorted(root.iterdir()) if root.is_dir() else []
    untrusted_files.require_regular(common_dir / "HEAD", *(admin_dir / name for admin_dir in admin_dirs
                                                            for name in ("HEAD", "gitdir", "locked")))


def prune_admin_dirs(info: RepoInfo, dry_run: bool = False) -> list[str]:
    """`git worktree prune`: remove the admin dirs of unlocked worktrees whose `.git` (or
    gitdir file) is gone. One being made is locked meanwhile, by git and by us."""
    pruned = []
    root = info.common_dir / "worktrees"
    for admin_dir in sorted(root.iterdir()) if root.is_dir() else []:
        if not admin_dir.is_dir() or (admin_dir / "locked").exists():
            continue
        try:
            dot_git = Path(untrusted_files.read_text(admin_dir / "gitdir", limit=1 << 16).strip())
        except FileNotFoundError:
            reason = "gitdir file does not exist"
        except OSError:
            continue  # unreadable is not gone
        else:
            if (admin_dir / dot_git if not dot_git.is_absolute() else dot_git).exists():
                continue
            reason = "gitdir file points to non-existent location"
        if not dry_run:
            shutil.rmtree(admin_dir, ignore_errors=True)
        pruned.append(f"Removing worktrees/{admin_dir.name}: {reason}")  # git's words, -n or not
    return pruned


def _admin_id(path: Path) -> str | None:
    """A linked worktree's `.git` file says `gitdir: <common dir>/worktrees/<id>`."""
    try:
        text = untrusted_files.read_text(path / ".git", limit=1 << 16)
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
    """`spec` as git reads a commit-ish here: HEAD~1, main^, @{-1}, v2^{commit}, HEAD@{1}, @."""
    if spec.startswith("-") or "\n" in spec or not spec:
        raise UsageError(f"invalid reference: {spec}", hint="name a branch, tag or commit")
    found = info.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{spec}^{{commit}}")
    if found.returncode != 0:
        raise UsageError(f"invalid reference: {spec}", hint="name a branch, tag or commit")
    return found.stdout.strip()


def head_commit(info: RepoInfo) -> str:
    """HEAD of the worktree the command runs in."""
    found = info.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if found.returncode != 0:
        raise WorktreeError("the repository has no commit yet", hint="make a first commit, then add worktrees")
    return found.stdout.strip()


def remote_tracking(info: RepoInfo, name: str) -> tuple[str, str] | None:
    """(remote, commit) when `name` is no commit here but exactly one remote has a branch of
    that name (checkout.defaultRemote picks among several): git's `worktree add <path> <name>`
    then makes the branch, tracking it."""
    with contextlib.closing(info.open()) as repo:
        remotes = sorted(ref.split(b"/", 3)[2].decode() for ref in repo.refs.allkeys()
                         if ref.startswith(b"refs/remotes/") and ref.split(b"/", 3)[3:] == [name.encode()])
        if len(remotes) > 1:
            preferred = config_value(info, "checkout", "defaultRemote")
            remotes = [preferred] if preferred in remotes else []
        if len(remotes) != 1:
            return None
        return remotes[0], repo.refs[f"refs/remotes/{remotes[0]}/{name}".encode()].decode()


def _batched_ident(info: RepoInfo) -> tuple[bytes, int, int]:
    """committer_ident, asked of git once per batch: who and the zone stay, the time is now's
    (git's own, to the second), or GIT_COMMITTER_DATE's when set."""
    import time

    who, when, zone = _batched(info, "ident", committer_ident)
    return who, (when if _batch is None or os.environ.get("GIT_COMMITTER_DATE") else int(time.time())), zone


def committer_ident() -> tuple[bytes, int, int]:
    """Who git says makes the change now, and when: (name <email>, time, timezone offset s)."""
    found = git("var", "GIT_COMMITTER_IDENT")
    if found.returncode != 0:
        found = _auto_detected_ident(found.stderr)
    if found.returncode != 0:
        raise WorktreeError(found.stderr.strip().splitlines()[-1] if found.stderr.strip() else "git knows no committer",
                            hint="set user.name and user.email (git config --global)")
    who, when, zone = found.stdout.strip().rsplit(" ", 2)
    offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[0] == "-" else 1)
    return who.encode(), int(when), offset


def read_notes(info: RepoInfo, ref: str, commits: list[str],
               with_trees: bool = False) -> dict[str, list[tuple[str, bytes | None]]] | None:
    """The note under `ref` (refs/notes/...) on each commit, and with_trees on its tree too:
    {commit: [(commit, note), (tree, note)]}, a note None where there is none; None when the
    ref does not exist."""
    from dulwich.notes import NotesTree
    from dulwich.objects import Commit, Tree

    with contextlib.closing(info.open()) as repo:
        try:
            top = repo.object_store[repo.refs[ref.encode()]]
        except KeyError:
            return None
        tree = repo.object_store[top.tree] if isinstance(top, Commit) else top
        # the notes tree read once (its fanout too), not once per note as Notes.get_note does
        notes = NotesTree(tree, repo.object_store) if isinstance(tree, Tree) else None
        found = {}
        for commit in commits:
            targets = [commit] + ([_tree_id(repo, commit)] if with_trees else [])
            found[commit] = [(target, notes.get_note(target.encode()) if notes else None) for target in targets]
        return found


def write_notes(info: RepoInfo, ref: str, notes: dict[str, str | bytes], message: str) -> None:
    """Each target's note under `ref`, replacing any other, as the committer git names now."""
    from dulwich.notes import Notes

    who = committer_ident()[0]
    with contextlib.closing(info.open()) as repo:
        store = Notes(repo.object_store, repo.refs)
        for target, text in notes.items():
            store.set_note(target.encode(), text, ref.encode(), author=who, committer=who, message=message.encode())


def tree_of(info: RepoInfo, commit: str) -> str:
    with contextlib.closing(info.open()) as repo:
        return _tree_id(repo, commit)


def _tree_id(repo: Repo, commit: str) -> str:
    from dulwich.objects import Commit

    found = repo[commit.encode()]
    if not isinstance(found, Commit):
        raise UsageError(f"{commit} is not a commit")
    return found.tree.decode()


def _auto_detected_ident(refusal: str) -> subprocess.CompletedProcess:
    """`git var` insists on a configured identity; a reflog does not: git writes the one it
    made up (the login name, `user@host.(none)`). That email is in git's refusal; with it (and
    the login name where git found no name) `git var` gives the rest as git makes it."""
    import pwd
    import re

    env = dict(os.environ)
    for _ in range(2):  # the email, then (if git says so) the name
        guessed = re.search(r"\(got '([^']*)'\)", refusal)
        if guessed and "GIT_COMMITTER_EMAIL" not in env:
            env["GIT_COMMITTER_EMAIL"] = guessed.group(1)
        if "empty ident name" in refusal and "GIT_COMMITTER_NAME" not in env:
            with contextlib.suppress(KeyError):
                env["GIT_COMMITTER_NAME"] = pwd.getpwuid(os.getuid()).pw_name
        found = git("var", "GIT_COMMITTER_IDENT", env=env)
        if found.returncode == 0:
            break
        refusal = found.stderr
    return found


@dataclass(frozen=True)
class Checkout:
    """What `add` puts in a new worktree: a branch (made here if `create_branch`) or a commit."""

    commit: str
    branch: str | None = None
    create_branch: bool = False
    start_point: str = "HEAD"  # as the user named the commit: the new branch's reflog says it
    track: tuple[str, str] | None = None  # (remote, its branch) the new branch tracks; remote "." is local
    reset_from: str | None = None  # -B on a branch that exists: the commit it is reset from
    force: int = 0  # -f: a branch checked out elsewhere is fine; a missing registered path is taken
    populate: bool = True  # --no-checkout: HEAD only, no files, no index (and no post-checkout hook)
    lock_reason: str | None = None  # --lock: the admin dir stays locked with this reason


def admin_dir_of(info: RepoInfo, path: Path) -> Path | None:
    """The admin dir whose gitdir file names `path`'s `.git`: the common dir's word, never the
    worktree's own `.git` file."""
    root = info.common_dir / "worktrees"
    wanted = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}
    for admin_dir in sorted(root.iterdir()) if root.is_dir() else []:
        with contextlib.suppress(OSError):
            named = Path(untrusted_files.read_text(admin_dir / "gitdir", limit=1 << 16).strip())
            if Path(os.path.abspath(admin_dir / named)).parent in wanted:
                return admin_dir
    return None


# While `batch` is open: what each `add` of it would read anew and none of them changes.
_batch: dict | None = None


@contextlib.contextmanager
def batch(info: RepoInfo) -> Iterator[None]:
    """Many worktrees added by one command (a sweep's runs, each at a path reserved for it): the
    registered worktrees, the committer and the current worktree's config are read once for all
    of them, not once each (the listing alone grows with every worktree the repository has)."""
    global _batch
    _batch = {"common_dir": info.common_dir}
    try:
        yield
    finally:
        _batch = None


def _batched(info: RepoInfo, key: str, read: Callable):
    """`read()`, or within a batch of `info`'s repository what it gave the first time."""
    if _batch is None or _batch["common_dir"] != info.common_dir:
        return read()
    if key not in _batch:
        _batch[key] = read()
    return _batch[key]


def check_candidate_path(info: RepoInfo, path: Path, force: int = 0, shown: str | None = None) -> None:
    """git's check of where `add` goes: a path git still has registered (its directory gone or
    empty) is refused unless forced, twice when locked; forced, its admin dir goes, as git's."""
    wanted = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}
    registered = next((w for w in _batched(info, "listed", lambda: list_worktrees(info))
                       if {w.path, Path(os.path.realpath(w.path))} & wanted), None)
    if registered is None or registered.is_main:
        return
    if (force and not registered.locked) or force > 1:
        admin_dir = admin_dir_of(info, registered.path)
        if admin_dir is not None:
            shutil.rmtree(admin_dir)
        return
    shown = shown or str(path)
    if registered.locked:
        raise GitRefusal(f"'{shown}' is a missing but locked worktree;",
                         hint="use 'add -f -f' to override, or 'unlock' and 'prune' or 'remove' to clear")
    raise GitRefusal(f"'{shown}' is a missing but already registered worktree;",
                     hint="use 'add -f' to override, or 'prune' or 'remove' to clear")


def checked_out_refusal(branch: str, holder: Path) -> GitRefusal:
    return GitRefusal(f"'{branch}' is already checked out at '{holder}'",
                      hint="use -b <new-branch>, a commit for a detached HEAD, or -f, as git's")


def add(info: RepoInfo, path: Path, checkout: Checkout) -> Worktree:
    """Create a linked worktree at `path`; on failure remove whatever it made."""
    # here, not at the top: filling a worktree needs dulwich's index and filters, which the
    # commands that only read (status, verify's cache) do without
    from dulwich.filters import FilterError
    from dulwich.index import InvalidPathError

    from .checkout import init_linked_worktree, materialize

    path = Path(os.path.abspath(path))
    # Both checks before anything is made: never write a checkout into a git dir.
    require_plain_repo(info)
    require_outside_git_dirs(info, path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise GitRefusal(f"'{path}' already exists")
    check_candidate_path(info, path, checkout.force)
    if checkout.branch and not checkout.force:
        holder = next((w for w in list_worktrees(info) if w.branch == checkout.branch), None)
        if holder is not None:
            raise checked_out_refusal(checkout.branch, holder.path)
    made_dirs = missing_parents(path)
    created_branch = False
    admin_dir: Path | None = None
    with contextlib.closing(info.open()) as repo:
        try:
            logging = _logs_ref_updates(repo)
            who, when, zone = _batched_ident(info) if logging else (b"", 0, 0)
            if checkout.branch and checkout.create_branch:
                ref = HEADS + checkout.branch.encode()
                verb = "Reset to" if checkout.reset_from else "Created from"
                message = f"branch: {verb} {checkout.start_point}".encode() if logging else None
                try:
                    if checkout.reset_from == checkout.commit:
                        added = repo.refs[ref] == checkout.commit.encode()  # as git: no reflog line for no move
                    elif checkout.reset_from:
                        added = repo.refs.set_if_equals(ref, checkout.reset_from.encode(), checkout.commit.encode(),
                                                        committer=who, timestamp=when, timezone=zone, message=message)
                    else:
                        added = repo.refs.add_if_new(ref, checkout.commit.encode(), message=None)
                        if added and message:  # ours: dulwich's line has a SHA-1 null id in any repository
                            _log_created_ref(info.common_dir, ref, checkout.commit.encode(), (who, when, zone), message)
                except OSError:  # a full disk: dulwich leaves its lock when the flush fails; it was ours
                    Path(os.fsdecode(repo.refs.refpath(ref)) + ".lock").unlink(missing_ok=True)
                    raise
                if not added:
                    moved = "moved meanwhile" if checkout.reset_from else "already exists"
                    raise GitRefusal(f"a branch named '{checkout.branch}' {moved}")
                created_branch = True
                checkpoint("after-branch-create")
                if checkout.track:
                    _set_upstream(repo, checkout.branch, *checkout.track)
            path.mkdir(parents=True, exist_ok=True)
            identifier = _claim_identifier(info.common_dir, path.name)
            admin_dir = info.common_dir / "worktrees" / identifier
            # as git: no prune while it is made; with --lock, locked from the start with its reason
            reason = checkout.lock_reason if checkout.lock_reason is not None else "initializing"
            (admin_dir / "locked").write_text(f"{reason}\n")
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
                if logging:
                    _log_new_head(admin_dir, checkout, (who, when, zone))
                included = _inherit_worktree_config(info, admin_dir)
                if checkout.populate:
                    materialize(worktree_repo, included=included)
            checkpoint("after-checkout")  # files written, the admin dir still locked "initializing"
            if checkout.lock_reason is None:
                (admin_dir / "locked").unlink()
        except BaseException as error:
            if admin_dir is not None:
                shutil.rmtree(admin_dir, ignore_errors=True)
            _remove_tree(path, made_dirs)
            if created_branch and checkout.reset_from:  # -B: back where it was
                repo.refs.set_if_equals(HEADS + checkout.branch.encode(), checkout.commit.encode(),
                                        checkout.reset_from.encode())
            elif created_branch:
                repo.refs.remove_if_equals(HEADS + checkout.branch.encode(), checkout.commit.encode())
                forget_branch(info, checkout.branch)
            if isinstance(error, OSError):
                raise WorktreeError(f"cannot create the worktree at '{path}': {error.strerror or error}") from None
            if isinstance(error, InvalidPathError):  # git's words and exit code; nothing is left
                named = os.fsdecode(error.args[0]) if error.args else ""
                raise GitRefusal(named if named.startswith("invalid path") else f"invalid path '{named}'") from None
            if isinstance(error, FilterError):  # git dies (128) on a failing required filter; nothing is left
                raise GitRefusal(str(error)) from None
            raise
    return Worktree(path=path, branch=checkout.branch, head=checkout.commit, admin_id=identifier)


ADDING = "GPUSPACE_ADDING"  # set for the hooks `add` runs: our own post-checkout hook then binds nothing


def run_post_checkout(info: RepoInfo, worktree: Worktree) -> int:
    """The repository's post-checkout hook, as `git worktree add` runs it: in the new worktree,
    with `<null id> <new HEAD> 1`, GIT_DIR and GIT_WORK_TREE unset, its output on stderr.
    Returns its exit status (0 when there is none)."""
    configured = config_value(info, "core", "hooksPath")
    hooks = (worktree.path / os.path.expanduser(configured)) if configured else info.common_dir / "hooks"
    hook = hooks / "post-checkout"
    if not (hook.is_file() and os.access(hook, os.X_OK)):
        return 0
    env = {**own_env(), ADDING: str(worktree.path)}
    try:
        null = "0" * len(worktree.head or ZERO)  # 64 zeros in a SHA-256 repository
        return subprocess.run([str(hook), null, worktree.head or null, "1"], cwd=worktree.path,
                              env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, check=False).returncode
    except OSError as error:  # not runnable after all (a bad #! line): git says so and goes on
        print(f"git-gpuspace: warning: cannot run {hook}: {error.strerror}", file=sys.stderr)
        return 0


def _inherit_worktree_config(info: RepoInfo, admin_dir: Path) -> Callable[[str], bool] | None:
    """What `git worktree add` takes from the worktree it runs in: its config.worktree (with
    extensions.worktreeConfig; less core.bare and core.worktree) and, when it is a sparse
    checkout, its sparse-checkout patterns. Returns which paths the new one checks out (None:
    all)."""
    from dulwich.sparse_patterns import sparse_path_matcher

    def read() -> tuple[dict[str, str], Path]:
        found = info.git("config", "--get-regexp",
                         r"^(core\.sparsecheckout|core\.ignorecase|extensions\.worktreeconfig)$")
        values = dict(line.lower().split(" ", 1) for line in found.stdout.splitlines() if " " in line)
        return values, Path(info.git("rev-parse", "--absolute-git-dir").stdout.strip() or info.common_dir)

    values, current = _batched(info, "config", read)
    if values.get("extensions.worktreeconfig") == "true" and (current / "config.worktree").is_file():
        # as git: the file as it is, less core.bare where true and core.worktree, unset by git's
        # own editor (dulwich would rewrite every line, and leave an emptied [core] behind)
        copied = admin_dir / "config.worktree"
        shutil.copyfile(current / "config.worktree", copied)
        config = ConfigFile.from_path(str(copied))
        unset = [key for key, present in (("core.bare", config.get_boolean((b"core",), b"bare", False)),
                                          ("core.worktree", config.has_section((b"core",))
                                           and b"worktree" in config[(b"core",)])) if present]
        for key in unset:
            git("config", "--file", str(copied), "--unset-all", key)
    patterns = current / "info" / "sparse-checkout"
    if values.get("core.sparsecheckout") not in ("true", "yes", "on", "1") or not patterns.is_file():
        return None
    (admin_dir / "info").mkdir(exist_ok=True)
    shutil.copyfile(patterns, admin_dir / "info" / "sparse-checkout")
    lines = [line.strip() for line in patterns.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith("#")]
    return sparse_path_matcher(lines, cone=False, ignorecase=values.get("core.ignorecase") == "true")


def _logs_ref_updates(repo: Repo) -> bool:
    try:
        return repo.get_config_stack().get_boolean((b"core",), b"logAllRefUpdates", True)
    except ValueError:  # "always" and the like
        return True


def _log_new_head(admin_dir: Path, checkout: Checkout, ident: tuple[bytes, int, int]) -> None:
    """The worktree's HEAD reflog as `git worktree add` starts it: HEAD made (no message), and
    on a branch the reset git does onto it (with ORIG_HEAD)."""
    commit = checkout.commit.encode()
    null = b"0" * len(commit)  # the repository's null id: 64 zeros in a SHA-256 one
    lines = [format_reflog_line(null, commit, *ident, b"").rstrip(b"\t")]
    if checkout.populate:  # --no-checkout runs no reset; git's reset leaves ORIG_HEAD, detached too
        (admin_dir / "ORIG_HEAD").write_bytes(commit + b"\n")
        if checkout.branch:  # a detached HEAD that does not move logs nothing
            lines.append(format_reflog_line(commit, commit, *ident, b"reset: moving to HEAD"))
    (admin_dir / "logs").mkdir(exist_ok=True)
    (admin_dir / "logs" / "HEAD").write_bytes(b"".join(line + b"\n" for line in lines))


def _log_created_ref(common_dir: Path, ref: bytes, commit: bytes, ident: tuple[bytes, int, int],
                     message: bytes) -> None:
    """A ref's first reflog line, from the repository's null id (as long as its ids)."""
    log = common_dir / "logs" / os.fsdecode(ref)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as file:
        file.write(format_reflog_line(b"0" * len(commit), commit, *ident, message) + b"\n")


def _set_upstream(repo: Repo, branch: str, remote: str, remote_branch: str) -> None:
    """branch.<name>.remote and .merge, as `--track` sets them."""
    config = repo.get_config()
    config.set((b"branch", branch.encode()), b"remote", remote.encode())
    config.set((b"branch", branch.encode()), b"merge", HEADS + remote_branch.encode())
    config.write_to_path()


def upstream_of(info: RepoInfo, spec: str) -> tuple[str, str] | None:
    """(remote, branch) when `spec` names a remote-tracking branch: a new branch made from it
    tracks it (git's branch.autoSetupMerge, true unless set otherwise)."""
    if (config_value(info, "branch", "autoSetupMerge") or "true").lower() in ("false", "no", "off", "0"):
        return None
    if spec.startswith("-"):
        return None
    full = info.git("rev-parse", "--symbolic-full-name", spec).stdout.strip()
    parts = full.split("/", 3)
    return (parts[2], parts[3]) if len(parts) == 4 and full.startswith("refs/remotes/") else None


def forget_branch(info: RepoInfo, name: str) -> None:
    """What a branch leaves besides its ref: its reflog and upstream config (git deletes both)."""
    (info.common_dir / "logs" / "refs" / "heads" / name).unlink(missing_ok=True)
    with contextlib.closing(info.open()) as repo:
        config = repo.get_config()
        section = (b"branch", name.encode())
        if config.has_section(section):
            del config[section]
            config.write_to_path()


def discard_unfinished(info: RepoInfo, path: Path) -> None:
    """Remove what an `add` at `path` cut short by kill -9 left: its admin dir (still locked
    "initializing") and the directory with its partial checkout. Only for a path the caller
    reserved for that add alone (nobody else's files can be there)."""
    path = Path(os.path.abspath(path))
    admin_root = info.common_dir / "worktrees"
    for admin_dir in sorted(admin_root.iterdir()) if admin_root.is_dir() else []:
        try:
            gitdir = untrusted_files.read_text(admin_dir / "gitdir", limit=1 << 16).strip()
        except FileNotFoundError:
            gitdir = ""
        except OSError:
            continue
        # one claimed but not yet written (no gitdir, still locked) is the add's when named for our path
        claimed = not gitdir and (admin_dir / "locked").is_file() and _named_for(admin_dir.name, path.name)
        if (gitdir and Path(gitdir).parent == path) or claimed:
            shutil.rmtree(admin_dir, ignore_errors=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)


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


def _identifier_base(basename: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in basename).lstrip(".") or "worktree"


def _named_for(identifier: str, basename: str) -> bool:
    """Could `_claim_identifier` have given `identifier` for a worktree named `basename`?"""
    base = _identifier_base(basename)
    return identifier == base or (identifier.startswith(base) and identifier[len(base):].isdigit())


def _claim_identifier(common_dir: Path, basename: str) -> str:
    """git's rule: the basename, with a number appended while that admin dir is taken; claimed
    by making it, as git does, so that two adds at once never share one."""
    base = _identifier_base(basename)
    (common_dir / "worktrees").mkdir(exist_ok=True)
    candidate, number = base, 0
    while True:
        try:
            (common_dir / "worktrees" / candidate).mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = f"{base}{number}"


def is_dirty(path: Path) -> bool | None:
    """What makes `git worktree remove` refuse: anything `git status --porcelain
    --ignore-submodules=none` lists there (modified, staged or untracked, not ignored). git
    answers, so a symlink to a directory, a submodule or a skip-worktree entry reads as it does.

    None when the worktree is gone by the time we look (another command removed it).
    """
    if not (path / ".git").exists():
        return None
    # tracked changes first: when the index already shows one, no walk for untracked files
    for untracked in ("no", "normal"):
        found = git("status", "--porcelain", "--ignore-submodules=none", f"--untracked-files={untracked}",
                    cwd=path, in_worktree=True)
        if found.returncode != 0:
            return None if not (path / ".git").exists() else True
        if found.stdout.strip():
            return True
    return False


def dirty_of(paths: list[Path]) -> dict[Path, bool | None]:
    """is_dirty for many worktrees at once: each is a git process of its own. One whose git
    does not answer in time is unknown (None), said in a warning: the others are still shown."""
    from concurrent.futures import ThreadPoolExecutor

    def answer(path: Path) -> bool | WorktreeError | None:
        try:
            return is_dirty(path)
        except WorktreeError as error:
            return error

    with ThreadPoolExecutor(max_workers=min(8, len(paths) or 1)) as pool:
        found = dict(zip(paths, pool.map(answer, paths)))
    for path, value in found.items():
        if isinstance(value, WorktreeError):
            print(f"git-gpuspace: warning: {value}" + (f"\nhint: {value.hint}" if value.hint else ""), file=sys.stderr)
            found[path] = None
    return found


def submodules_refused() -> GitRefusal:
    return GitRefusal("working trees containing submodules cannot be moved or removed",
                         hint="deinitialize them first (git submodule deinit --all), as git asks")


def dirty_refusal(shown: str) -> GitRefusal:
    return GitRefusal(f"'{shown}' contains modified or untracked files, use --force to delete it")


def locked_refusal(info: RepoInfo, worktree: Worktree) -> GitRefusal:
    """git's refusal to remove a locked worktree, with the lock's reason when it has one."""
    admin_dir = admin_dir_of(info, worktree.path)
    try:
        reason = untrusted_files.read_text(admin_dir / "locked", limit=1 << 16).strip() if admin_dir else ""
    except OSError:
        reason = ""
    return GitRefusal(f"cannot remove a locked working tree, lock reason: {reason}" if reason
                      else "cannot remove a locked working tree;",
                      hint="use 'remove -f -f' to override or unlock first")


def restore_branch(info: RepoInfo, name: str, made: str, was: str) -> None:
    """Undo `add -B`: the branch back where it was, if it is still where the add put it."""
    with contextlib.closing(info.open()) as repo:
        repo.refs.set_if_equals(HEADS + name.encode(), made.encode(), was.encode())


def has_initialized_submodules(path: Path) -> bool:
    """A submodule checked out in the worktree (its own .git inside): git refuses to remove it."""
    found = git("ls-files", "--stage", "-z", cwd=path, in_worktree=True)
    gitlinks = [entry.split("\t", 1)[1] for entry in found.stdout.split("\0") if entry.startswith("160000 ")]
    return any((path / link / ".git").exists() for link in gitlinks)


def remove(info: RepoInfo, worktree: Worktree, force: bool) -> None:
    """Remove a linked worktree as `git worktree remove` does (dulwich does not check dirt)."""
    if worktree.is_main:
        raise UsageError("the main worktree cannot be removed")
    if not force and not worktree.prunable and has_initialized_submodules(worktree.path):
        raise submodules_refused()
    if not force and not worktree.prunable and is_dirty(worktree.path):
        raise dirty_refusal(str(worktree.path))
    # the `.git` file first: cut short after this, the worktree is prunable (`prune` ends the job)
    dot_git = worktree.path / ".git"
    if dot_git.is_file() and not dot_git.is_symlink():
        dot_git.unlink()
        checkpoint("after-dot-git-removed")
    with contextlib.closing(info.open()) as repo:
        try:
            remove_worktree(repo, str(worktree.path), force=force)
        except ValueError as error:
            hint = "unlock it with `git worktree unlock`, or use --force" if "locked" in str(error) else None
            raise WorktreeError(str(error).replace("Worktree", "worktree"), hint=hint) from None


DELETING = ".gpuspace-deleting-"  # where removed worktrees' files wait for their deletion


def remove_many(info: RepoInfo, paths: list[Path]) -> None:
    """Remove these linked worktrees at once, as `remove(force=True)` does each, from one
    listing (dulwich's removal looks through every worktree for each one: a clean of hundreds
    would take the square). Each worktree's folder, then its admin dir, is moved aside in one
    rename (cut short between the two, the worktree is prunable, as git leaves it) into a folder
    next to it, which a process of its own deletes: the caller does not wait for thousands of
    files. Folders left by a call that was cut short go with the next call's."""
    by_path = {}
    for worktree in list_worktrees(info):
        by_path[worktree.path] = by_path[Path(os.path.realpath(worktree.path))] = worktree
    aside: dict[Path, Path] = {}  # a folder -> where what is moved from it waits for deletion

    def move_aside(path: Path) -> None:
        try:
            if path.parent not in aside:
                aside[path.parent] = Path(tempfile.mkdtemp(prefix=DELETING, dir=path.parent))
            os.rename(path, aside[path.parent] / path.name)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)  # not movable (a mount point): here and now

    admin_root = info.common_dir / "worktrees"
    # a worktree's path -> its admin dir, by the admin dir's gitdir file: the common dir's word,
    # never the worktree's own `.git` file (its container could point that at another's)
    admin_ids = {}
    for admin in admin_root.iterdir() if admin_root.is_dir() else []:
        with contextlib.suppress(OSError):
            named = Path(untrusted_files.read_text(admin / "gitdir", limit=1 << 16).strip())
            admin_ids[Path(os.path.abspath(admin / named)).parent] = admin.name
    for path in paths:
        worktree = by_path.get(Path(os.path.abspath(path))) or by_path.get(Path(os.path.realpath(path)))
        if worktree is None or worktree.is_main:
            continue
        if os.path.lexists(worktree.path):
            move_aside(worktree.path)
            checkpoint("after-worktree-moved-aside")
        admin_id = admin_ids.get(worktree.path)
        if admin_id:
            # aside in the common dir itself: a folder in worktrees/ would be a worktree to git
            aside.setdefault(admin_root, Path(tempfile.mkdtemp(prefix=DELETING, dir=info.common_dir)))
            try:
                os.rename(admin_root / admin_id, aside[admin_root] / admin_id)
            except OSError:
                shutil.rmtree(admin_root / admin_id, ignore_errors=True)
    doomed = []
    for folder in {Path(os.path.abspath(path)).parent for path in paths} | {info.common_dir} | set(aside):
        doomed += [entry for entry in folder.glob(DELETING + "*") if entry.is_dir() and not entry.is_symlink()]
    if doomed:
        subprocess.Popen(["rm", "-rf", "--", *map(str, doomed)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)


def delete_branch(info: RepoInfo, name: str, expected_commit: str) -> None:
    """Delete a branch only if it still points where we made it."""
    with contextlib.closing(info.open()) as repo:
        removed = repo.refs.remove_if_equals(HEADS + name.encode(), expected_commit.encode())
    if removed:
        forget_branch(info, name)


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
    import time

    from dulwich.index import commit_tree
    from dulwich.objects import Blob, Commit
    from dulwich.repo import get_user_identity

    # The worktree is the container's to write. git finds what changed, under git()'s time-out
    # (dulwich's status opens every .gitignore with no bound: a FIFO there would hang us); we
    # read only the changed files, and only regular files or symlinks.
    untracked, changed, staged = _changes(worktree)
    _require_git_file(worktree)
    with contextlib.closing(Repo(str(worktree))) as repo:
        try:
            head = repo.head()
        except KeyError:
            raise WorktreeError("the worktree has no commit yet", hint="make a first commit, then run") from None
        if not changed and not staged:
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
                elif stat.S_ISDIR(info.st_mode):
                    continue  # a directory where the file was: the file is gone, as git sees it
                else:
                    data = untrusted_files.read_bytes(os.fsdecode(full))
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


def _changes(worktree: Path) -> tuple[list[str], set[bytes], bool]:
    """(untracked paths, tracked paths changed in the worktree, whether the index differs from
    HEAD), as `git status` sees them; --no-optional-locks: the index is not rewritten."""
    found = git("--no-optional-locks", "status", "--porcelain=v1", "-z", "--no-renames",
                "--untracked-files=normal", "--ignore-submodules=all", cwd=worktree, in_worktree=True)
    if found.returncode != 0:
        reason = found.stderr.strip().splitlines()[-1] if found.stderr.strip() else f"git exited with {found.returncode}"
        raise WorktreeError(f"cannot read the status of '{worktree}': {reason}")
    untracked, changed, staged = [], set(), False
    for record in found.stdout.split("\0"):
        if len(record) < 4:
            continue
        index_side, worktree_side, path = record[0], record[1], record[3:]
        if index_side == "?":
            untracked.append(path)
            continue
        staged = staged or index_side not in " !"
        if worktree_side not in " !":
            changed.add(os.fsencode(path))
    return untracked, changed, staged


def _require_git_file(worktree: Path) -> None:
    """dulwich opens a linked worktree's `.git` file with a plain open(): never a FIFO."""
    dot_git = worktree / ".git"
    if not dot_git.is_dir():  # the main worktree's
        untrusted_files.require_regular(dot_git)


def set_ref(info: RepoInfo, ref: str, commit: str) -> None:
    with contextlib.closing(info.open()) as repo:
        repo.refs[ref.encode()] = commit.encode()


def remove_ref_lock(info: RepoInfo, ref: str) -> None:
    """Remove `<ref>.lock`, which a writer of `ref` killed mid-write leaves behind; only for a ref
    the caller alone writes, once it knows no such writer is alive."""
    lock = info.common_dir / f"{ref}.lock"
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISREG(os.lstat(lock).st_mode):
            lock.unlink()


def delete_ref(info: RepoInfo, ref: str) -> None:
    delete_refs(info, [ref])


def delete_refs(info: RepoInfo, refs: list[str]) -> None:
    with contextlib.closing(info.open()) as repo:
        for ref in refs:
            with contextlib.suppress(KeyError):
                del repo.refs[ref.encode()]
