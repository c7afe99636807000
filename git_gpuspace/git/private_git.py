"""The container's own git: a private git dir per binding, and how commits cross the boundary.

Code in a container must never write what the host's git reads (a staged gitlink runs a nested
repo's `core.fsmonitor` on the host's next `git status`, a symlink in `logs/` makes the host's git
write through it, `refs/replace` changes what the host checks out). So a bound container gets:

- the repository's git dir read-only, at its own absolute path: its objects are the private
  dir's alternate object store, its branches what the container's git fetches;
- a private git dir of its own (HEAD, index, refs, logs, config, new objects), made by the host
  from the worktree's state when the binding is made, in the user's state dir: outside the
  worktree and the repository, and never read by the host's git;
- `<workspace>/.git` masked by a file pointing at it (the main worktree: the dir itself there).

Commits cross as data. Container to host: git in the container writes a bundle of the
worktree's branch to its output; the host checks it (`git bundle verify`, fetch with fsck),
and moves that one branch forward only (compare-and-swap), then its index with a two-tree
`read-tree -m` (what the host staged is kept). Host to container: git in the container
fetches from the read-only repository. Nothing of the container's runs on the host.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GpuspaceError, WorktreeError
from ..faults import checkpoint
from ..installation import WORKSPACE
from .private_git_dirs import PrivateGit, for_container

if TYPE_CHECKING:
    from . import worktrees

HEX = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
# what a fresh private git dir takes from the repository's own config (the rest is the host's)
INHERITED = (("core", "repositoryformatversion"), ("core", "filemode"), ("core", "ignorecase"), ("core", "symlinks"),
             ("core", "autocrlf"), ("core", "eol"), ("core", "safecrlf"), ("core", "precomposeunicode"),
             ("core", "sparsecheckout"), ("core", "sparsecheckoutcone"), ("extensions", "objectformat"),
             ("user", "name"), ("user", "email"))
IMPORT_LIMIT_ENV = "GPUSPACE_IMPORT_LIMIT_MB"


def in_container(private: PrivateGit, main: bool, workspace: str) -> str:
    """Where the container's git finds the private git dir."""
    return f"{workspace}/.git" if main else str(private.repo)


def create(info: worktrees.RepoInfo, worktree: worktrees.Worktree, private: PrivateGit) -> None:
    """A fresh private git dir that is the worktree's as the host has it now: the same HEAD,
    index, branches and tags; the repository's objects through an alternate. Anything left
    under that name (a binding removed with --force) is dropped first."""
    remove(private)
    private.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(private.home.parent, 0o700)
    repo = private.repo
    for sub in ("objects/info", "refs", "info"):  # what git needs to know a git dir; it makes the rest
        (repo / sub).mkdir(parents=True)
    host_git_dir = _worktree_git_dir(info, worktree)
    head = f"ref: refs/heads/{worktree.branch}\n" if worktree.branch else f"{worktree.head}\n"
    (repo / "HEAD").write_text(head)
    (repo / "objects" / "info" / "alternates").write_text(f"{info.common_dir / 'objects'}\n")
    with contextlib.closing(info.open()) as host:  # in-process: a binding costs no git process more
        (repo / "config").write_text(_config(host.get_config()))
        listed = sorted((prefix + name, sha) for prefix in (b"refs/heads/", b"refs/tags/")
                        for name, sha in host.refs.as_dict(prefix).items())
    (repo / "packed-refs").write_bytes(b"# pack-refs with: sorted \n" + b"".join(sha + b" " + name + b"\n"
                                                                             for name, sha in listed))
    for source, target in ((host_git_dir / "index", repo / "index"),
                           (info.common_dir / "info" / "exclude", repo / "info" / "exclude"),
                           (host_git_dir / "info" / "sparse-checkout", repo / "info" / "sparse-checkout")):
        with contextlib.suppress(FileNotFoundError):
            target.write_bytes(source.read_bytes())
    private.dot_git.write_text(f"gitdir: {repo}\n")
    private.host_head.write_text(_host_head(worktree.branch, worktree.head or ""))
    private.synced.touch()


def _config(config) -> str:
    """The private git dir's config: a plain non-bare repository with the INHERITED settings of
    the repository's own config (a dulwich ConfigFile)."""
    values = {"core.repositoryformatversion": "0"}
    for section, name in INHERITED:
        with contextlib.suppress(KeyError):
            values[f"{section}.{name}"] = config.get((section.encode(),), name.encode()).decode(errors="replace")
    values.update({"core.bare": "false", "core.logallrefupdates": "true"})
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.rsplit(".", 1)
        sections.setdefault(section, []).append(f"\t{name} = {_quoted(value)}\n")
    return "".join(f"[{section}]\n" + "".join(lines) for section, lines in sections.items())


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def remove(private: PrivateGit) -> None:
    import shutil

    if private.home.is_dir() and not private.home.is_symlink():
        shutil.rmtree(private.home, ignore_errors=True)


def discard(info: worktrees.RepoInfo, private: PrivateGit) -> str | None:
    """A binding whose worktree is gone: its private git dir goes too, unless the container
    committed there what no branch of the repository holds. Then it is kept, and said where."""
    if not private.exists():
        return None
    head = _read_plain(private.home, private.host_head.name, 4096) or ""
    branch = head[len("ref: refs/heads/"):].strip() if head.startswith("ref: refs/heads/") else None
    theirs = private_tip(private, branch) if branch else None
    if theirs is None or _git(info, "for-each-ref", "--count=1", "--contains", theirs, "refs/heads",
                              check=False).strip():
        remove(private)
        return None
    return (f"kept {private.repo}: its container committed {theirs[:8]} on {branch}, which no branch here "
            f"holds (what a container wrote: look before you use it)")


def move(old: PrivateGit, new: PrivateGit) -> None:
    """A binding whose container is made under another name (its worktree moved) keeps its
    private git dir, and what the container committed there. The dot-git file names the new place."""
    if old == new or not old.exists():
        return
    remove(new)
    os.rename(old.home, new.home)
    new.dot_git.write_text(f"gitdir: {new.repo}\n")


def repoint_objects(private: PrivateGit, objects: Path) -> None:
    """The private git dir's alternate names where the repository's objects are now (it moved).
    The dir is the container's to write: no link on the way is followed, none written through."""
    fd = -1
    try:
        fd = os.open(private.repo, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for part in ("objects", "info"):
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        with contextlib.suppress(FileNotFoundError):
            os.unlink("alternates", dir_fd=fd)
        out = os.open("alternates", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        with os.fdopen(out, "w") as handle:
            handle.write(f"{objects}\n")
    except OSError as error:
        raise GpuspaceError(f"cannot point {private.repo} at the moved repository's objects: "
                            f"{error.strerror or error}", hint="something in the container changed its git dir: "
                                                              "`git gpuspace remove --force` and add it again") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _worktree_git_dir(info: worktrees.RepoInfo, worktree: worktrees.Worktree) -> Path:
    """The host's per-worktree git dir: HEAD and index live there."""
    if worktree.is_main:
        return info.common_dir
    from ..boundary import admin_dir

    return admin_dir(info.common_dir, worktree.admin_id)


def _git(info: worktrees.RepoInfo, *args: str, git_dir: Path | None = None, check: bool = True) -> str:
    """The host's git on its own repository (never on the private git dir), without a worktree."""
    from . import worktrees

    done = worktrees.git(f"--git-dir={git_dir or info.common_dir}", *args, cwd=info.common_dir, in_worktree=True)
    if check and done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise WorktreeError(f"git {args[0]} failed: {detail}")
    return done.stdout


def _succeeds(info: worktrees.RepoInfo, *args: str) -> bool:
    from . import worktrees

    return worktrees.git(f"--git-dir={info.common_dir}", *args, cwd=info.common_dir, in_worktree=True).returncode == 0


# ---- reading the private git dir as data -------------------------------------------------------

def private_tip(private: PrivateGit, branch: str) -> str | None:
    """The commit the container's branch names, read as data: a loose ref, else packed-refs.
    Nothing is followed (no symlink, FIFO or device is opened); anything odd reads as None."""
    loose = _read_plain(private.repo, f"refs/heads/{branch}", 4096)
    if loose is not None:
        text = loose.strip()
        return text if HEX.fullmatch(text) else None
    packed = _read_plain(private.repo, "packed-refs", 64 << 20)
    wanted = f" refs/heads/{branch}"
    for line in (packed or "").splitlines():
        if line.endswith(wanted) and HEX.fullmatch(line[:-len(wanted)]):
            return line[:-len(wanted)]
    return None


def _read_plain(top: Path, relative: str, limit: int) -> str | None:
    from ..untrusted_files import read_under

    found = read_under(top, relative, limit)
    return None if found is None else found.decode("ascii", errors="replace")


# ---- both directions ----------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one look at a binding found; `said` is the line for the user, if any."""

    said: str | None = None
    waiting: bool = False  # the container has commits the host has not imported
    moved: bool = False  # the host's branch moved (an import)
    problem: bool = False  # diverged, refused, or could not be read: the user must act


def sync(info: worktrees.RepoInfo, engine, binding, worktree: worktrees.Worktree, running: bool) -> Outcome:
    """Bring one binding's two sides together: the container's new commits on the worktree's
    branch into the host (fast-forward only), the host's into the container, and the branch or
    commit the host checked out in the worktree. `running`: the container is up (only then can
    its git be asked)."""
    private = for_container(binding.container)
    if not private.exists() or worktree.head is None:
        return Outcome()
    branch, host = worktree.branch, worktree.head
    if _finish_import(info, worktree, private):  # the branch may have moved since the worktree was listed
        host = _git(info, "rev-parse", f"refs/heads/{branch}").strip()
    with contextlib.suppress(OSError):
        os.utime(private.synced)
    if _host_head(branch, host) != _read_plain(private.home, private.host_head.name, 4096):
        # the host checked out another branch or commit here: the container's git follows it
        return _push_in(info, engine, binding, worktree, host, switch=True) if running else Outcome()
    theirs = private_tip(private, branch) if branch else None
    if theirs is None or theirs == host:
        return Outcome()
    if not _has_commit(info, theirs):
        if not running:
            return Outcome(f"{worktree.path}: the container has commits on {branch} the host has not seen; they "
                           f"come in when it runs (`git gpuspace start {worktree.path}`)", waiting=True)
        theirs = _fetch_bundle(info, engine, binding, worktree, private, branch, host)
        if theirs is None or theirs == host:
            return Outcome()
    if _succeeds(info, "merge-base", "--is-ancestor", host, theirs):
        return _import(info, worktree, private, branch, host, theirs)
    if _succeeds(info, "merge-base", "--is-ancestor", theirs, host):
        return _push_in(info, engine, binding, worktree, host) if running else Outcome()
    return Outcome(f"{worktree.path}: {branch} has commits on both sides (the container's {theirs[:8]}, the host's "
                   f"{host[:8]}); nothing was moved. Merge in the container: `git gpuspace exec {worktree.path} -- "
                   f"git merge {host[:12]}`, then `git gpuspace sync {worktree.path}`", waiting=True, problem=True)


def _host_head(branch: str | None, commit: str) -> str:
    """What the host's worktree has checked out, as the private dir's notes keep it."""
    return f"ref: refs/heads/{branch}\n" if branch else f"{commit}\n"


def _has_commit(info: worktrees.RepoInfo, commit: str) -> bool:
    return _succeeds(info, "cat-file", "-e", f"{commit}^{{commit}}")


def _fetch_bundle(info, engine, binding, worktree, private, branch: str, host: str) -> str | None:
    """The container's git writes a bundle of its branch (what the host lacks) to its output;
    the host keeps it in a file of its own, checks it and fetches from it. Returns the tip."""
    from ..lifecycle_commands import exec_user

    git_dir = in_container(private, worktree.is_main, binding.workspace or WORKSPACE)
    with tempfile.TemporaryDirectory(prefix="gpuspace-import-") as scratch:
        bundle = Path(scratch) / "branch.bundle"
        errors = io.BytesIO()
        with open(bundle, "wb") as sink:
            code, _ = engine.exec(binding.container, ["git", f"--git-dir={git_dir}", "bundle", "create", "-",
                                                      f"refs/heads/{branch}", f"^{host}"], {},
                                  output=(_Limited(sink, _import_limit()), errors), user=exec_user(binding),
                                  timeout=_exec_timeout())
        if code != 0:
            detail = (errors.getvalue().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise WorktreeError(f"{worktree.path}: the container's git could not hand over its commits on {branch}: "
                                f"{_printable(detail)}", hint="is git in the image? `git gpuspace exec "
                                f"{worktree.path} -- git status` shows what it says")
        _git(info, "bundle", "verify", "--quiet", str(bundle))
        heads = _git(info, "bundle", "list-heads", str(bundle), f"refs/heads/{branch}").split()
        tip = heads[0] if heads and HEX.fullmatch(heads[0]) else None
        if tip is None:
            return None
        _git(info, "-c", "transfer.fsckObjects=true", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
             "--no-recurse-submodules", "--no-auto-gc", str(bundle), f"refs/heads/{branch}")
    return tip


def _import_limit() -> int:
    """A bundle weighs what the container's own commits weigh: more than this (MiB, default 2048)
    is refused, not stored."""
    try:
        return max(1, int(os.environ.get(IMPORT_LIMIT_ENV, "2048"))) << 20
    except ValueError:
        return 2048 << 20


class _Limited(io.RawIOBase):
    """A sink that refuses more than `limit` bytes: the container chooses how much it sends."""

    def __init__(self, sink, limit: int) -> None:
        self.sink, self.left, self.limit = sink, limit, limit

    def write(self, data) -> int:
        self.left -= len(data)
        if self.left < 0:
            raise WorktreeError(f"the container's commits are larger than {self.limit >> 20} MiB; nothing was "
                                f"imported", hint=f"{IMPORT_LIMIT_ENV} raises the limit")
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _import(info, worktree, private: PrivateGit, branch: str, old: str, new: str) -> Outcome:
    """Move the host's branch from `old` to `new` (compare-and-swap), then its index the same way."""
    refused = _gitlinks_over_git_dirs(info, worktree, old, new)
    if refused:
        return Outcome(f"{worktree.path}: not imported: the container's commits on {branch} add {refused} as a "
                       f"submodule while that folder holds a git dir made in the container (its config would run "
                       f"on the host's next `git status`)", waiting=True, problem=True)
    from . import worktrees

    git_dir = _worktree_git_dir(info, worktree)
    trial = git_dir / "index.gpuspace-import"
    try:  # the index first, on the side: what the host staged must merge, or nothing moves
        done = worktrees.git(f"--git-dir={git_dir}", "read-tree", "-m", f"--index-output={trial}", old, new,
                             cwd=info.common_dir, in_worktree=True)
    finally:
        trial.unlink(missing_ok=True)
    if done.returncode != 0:
        return Outcome(f"{worktree.path}: not imported: what is staged on the host conflicts with the container's "
                       f"commits on {branch} ({_printable(done.stderr.strip().splitlines()[-1]) if done.stderr else 'read-tree failed'})",
                       waiting=True, problem=True)
    _write_journal(private, old, new)
    checkpoint("after-import-journal")
    _git(info, "update-ref", "-m", "gpuspace sync: commits made in the container", f"refs/heads/{branch}", new, old)
    checkpoint("after-import-ref")
    _finish_import(info, worktree, private)
    count = _git(info, "rev-list", "--count", f"{old}..{new}").strip()
    return Outcome(f"{worktree.path}: imported {count} commit(s) from the container into {branch} "
                   f"({old[:8]}..{new[:8]})", moved=True)


def _write_journal(private: PrivateGit, old: str, new: str) -> None:
    from ..atomic import replace_file

    replace_file(private.journal, f"{old} {new}\n".encode())  # on disk before the branch moves


def _finish_import(info, worktree, private: PrivateGit) -> bool:
    """An import cut short after its branch moved: its index follows now (read-tree -m of the same
    two trees again changes nothing it did already). True when there was one."""
    try:
        old, new = private.journal.read_text().split()
    except FileNotFoundError:
        return False
    except ValueError:
        private.journal.unlink(missing_ok=True)
        return True
    current = _git(info, "rev-parse", "--verify", "--quiet", f"refs/heads/{worktree.branch}", check=False).strip()
    if current == new:
        git_dir = _worktree_git_dir(info, worktree)
        _git(info, "read-tree", "-m", old, new, git_dir=git_dir)
    private.journal.unlink(missing_ok=True)
    return True


def _gitlinks_over_git_dirs(info, worktree, old: str, new: str) -> str | None:
    """A submodule the commits add or move whose folder holds a git dir that is not one of the
    repository's own (`.git/modules/...`): the first such path."""
    raw = _git(info, "diff-tree", "-r", "-z", "--no-renames", old, new)
    fields = raw.split("\0")
    for header, path in zip(fields[0::2], fields[1::2]):
        modes = header.lstrip(":").split(" ")
        if len(modes) >= 2 and modes[1] == "160000" and _foreign_git_dir(info, worktree.path / path / ".git"):
            return path
    return None


def _foreign_git_dir(info, dot_git: Path) -> bool:
    try:
        mode = os.lstat(dot_git).st_mode
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not stat.S_ISREG(mode):
        return True
    text = _read_plain(dot_git.parent, ".git", 4096) or ""
    if not text.startswith("gitdir:"):
        return True
    target = Path(os.path.normpath(dot_git.parent / text[len("gitdir:"):].strip()))
    return not any(parent.name == "modules" and info.common_dir in (parent, *parent.parents) for parent in target.parents)


# ---- host to container --------------------------------------------------------------------------

# Run by the container's git in the container: the worktree's branch follows the host's
# (fast-forward only; the index with a two-tree read-tree, as `git checkout` moves it); with
# `switch`, HEAD goes where the host's worktree went (a branch, or a detached commit). Then the
# other branches and tags are fetched from the read-only repository.
SYNC_IN = r"""
set -u
command -v git >/dev/null 2>&1 || exit 0  # no git in the image: nothing to keep in step
git_dir=$1 host=$2 branch=$3 new=$4 switch=$5
export GIT_DIR="$git_dir"
current=$(git rev-parse -q --verify "HEAD^{commit}") || current=
old=
if [ -n "$branch" ]; then
  old=$(git rev-parse -q --verify "refs/heads/$branch^{commit}") || old=
  if [ "$old" != "$new" ]; then
    if [ -n "$old" ] && ! git merge-base --is-ancestor "$old" "$new"; then
      echo "the container's $branch has commits of its own" >&2; exit 3
    fi
    git update-ref -m "gpuspace sync: from the host" "refs/heads/$branch" "$new" "$old" || exit 4
  fi
fi
if [ "$switch" = 1 ]; then
  if [ -n "$current" ]; then git read-tree -m "$current" "$new"; else git read-tree "$new"; fi || exit 5
  if [ -n "$branch" ]; then git symbolic-ref HEAD "refs/heads/$branch"; else git update-ref --no-deref HEAD "$new"; fi
elif [ -n "$branch" ] && [ "$old" != "$new" ] && [ "$(git symbolic-ref -q HEAD)" = "refs/heads/$branch" ]; then
  if [ -n "$old" ]; then git read-tree -m "$old" "$new"; else git read-tree "$new"; fi || exit 5
fi
git -c "safe.directory=$host" fetch -q --no-tags --update-head-ok --upload-pack="git upload-pack" "$host" \
  "refs/heads/*:refs/heads/*" "refs/tags/*:refs/tags/*" 2>/dev/null
exit 0
"""


def _push_in(info, engine, binding, worktree, host: str, switch: bool = False) -> Outcome:
    """The host's commits on the worktree's branch (and, with `switch`, what the host checked
    out there), made the container's git's too."""
    from ..lifecycle_commands import exec_user

    private = for_container(binding.container)
    git_dir = in_container(private, worktree.is_main, binding.workspace or WORKSPACE)
    code, out = engine.exec(binding.container, ["sh", "-c", SYNC_IN, "sync-in", git_dir, str(info.common_dir),
                                                worktree.branch or "", host, "1" if switch else "0"],
                            {}, user=exec_user(binding), timeout=_exec_timeout())
    if code != 0:
        detail = (out.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return Outcome(f"{worktree.path}: the container's git did not take the host's "
                       f"{worktree.branch or 'commit'}: {_printable(detail)}", problem=True)
    private.host_head.write_text(_host_head(worktree.branch, host))
    return Outcome()


def _exec_timeout() -> float:
    """The container's git decides when its output ends: bounded as the host's git commands are."""
    from .git_cli import git_timeout

    return git_timeout()


def _printable(text: str) -> str:
    from ..output import printable

    return printable(text)[:300]


# ---- every binding at once ----------------------------------------------------------------------

def sync_bindings(info: worktrees.RepoInfo, engine, bindings: list, known: list[worktrees.Worktree],
                  running: set[str]) -> dict[str, Outcome]:
    """`sync` for each binding with a private git dir whose worktree git has (by path); what each
    found is said on stderr. A binding another command is syncing is skipped.
    `running`: the names of the containers that run (only their git can be asked)."""
    from ..locking import file_lock

    live = {str(worktree.path): worktree for worktree in known if not worktree.prunable}
    found: dict[str, Outcome] = {}
    for binding in bindings:
        worktree = live.get(binding.path)
        private = for_container(binding.container)
        if binding.pending or worktree is None or not private.exists():
            continue
        try:
            with file_lock(private.home / "lock", wait=False) as held:
                if not held:
                    continue
                outcome = sync(info, engine, binding, worktree, binding.container in running)
        except GpuspaceError as error:
            outcome = Outcome(f"{binding.path}: {error}", waiting=True, problem=True)
        found[binding.path] = outcome
        if outcome.said:
            print(f"git-gpuspace: {outcome.said}", file=sys.stderr)
    return found


def sync_here(info: worktrees.RepoInfo, engine=None) -> Outcome | None:
    """Sync the binding of the worktree the command runs in, if it has one (before a command
    reads its HEAD: `run` pins it, `verify` checks it). An engine that cannot be reached skips it."""
    from . import worktrees
    from ..errors import EngineUnavailable
    from ..state import load

    try:
        here = Path.cwd().resolve()
    except OSError:
        return None
    known = worktrees.list_worktrees(info)
    inside = [w for w in known if not w.prunable and (here == w.path or w.path in here.parents)]
    worktree = max(inside, key=lambda w: len(str(w.path)), default=None)
    binding = load(info.common_dir).find(worktree.path) if worktree is not None else None
    if binding is None or not for_container(binding.container).exists():
        return None
    try:
        if engine is None:
            from ..engine.containers import Engine

            engine = Engine()
        return sync_bindings(info, engine, [binding], [worktree], running_names(engine.list_managed())).get(binding.path)
    except EngineUnavailable:
        return None


def running_names(containers: list | None) -> set[str]:
    return {container.name for container in containers or [] if container.state == "running"}
