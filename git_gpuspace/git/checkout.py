"""Materialize a commit's tree into a new, empty linked worktree, fast.

dulwich's `reset_index` reads, filters and writes one file at a time (and dulwich's linked
worktree setup checks out the main worktree's HEAD first, so `add` checked out twice). Here
dulwich still reads every object and writes the index, but:

- the tree is walked once and every path is checked up front (the same element validator
  dulwich uses; no leading component may be a file, symlink or submodule of the same tree),
  so no per-file `lstat` of leading directories is needed;
- directories are made once, parents first;
- blobs are read by the process's main thread (dulwich's pack reader is not thread-safe) and
  written by a few threads in batches, so file creation overlaps; a bounded number of bytes
  waits in memory;
- a big tree is split between forked processes, one per CPU: reading and writing a file is
  mostly Python work, which threads cannot spread over cores;
- each file is created as git creates it (`O_CREAT|O_EXCL`, 0666 or 0777 less the umask), and
  its index entry takes the stat data from `fstat` on the open descriptor;
- the checkout filters (`.gitattributes`, `core.autocrlf`, `core.eol`) are skipped only when
  they provably do nothing for this tree; otherwise every blob goes through dulwich's
  normalizer (in one process);
- the index is built once and written once.

The worktree directory must be empty: files are created exclusively, never overwritten.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from dulwich.errors import GitProtocolError
from dulwich.file import GitFile, adjust_shared_perm
from dulwich.filters import (
    CompositeFilterDriver,
    FilterContext,
    FilterDriver,
    FilterError,
    FilterRegistry,
    ProcessFilterDriver,
    get_filter_for_path,
)
from dulwich.index import (
    IndexEntry,
    IndexExtension,
    InvalidPathError,
    cleanup_mode,
    get_path_element_validator,
    get_symlink_fn,
    index_entry_from_stat,
    validate_path,
    write_index_dict,
)
from dulwich.line_ending import LineEndingFilter
from dulwich.object_store import DiskObjectStore, iter_tree_contents
from dulwich.objects import S_ISGITLINK, Blob, Commit, Tag, hex_to_sha
from dulwich.repo import Repo

from .git_cli import git, own_env
from .pack_order import in_pack_order

ATTRIBUTES_FILE = b".gitattributes"
BATCH_FILES = 128  # files per task handed to a writer thread
BATCH_BYTES = 1 << 20  # ... or fewer, once they hold this much
MAX_WORKERS = 8  # writer threads per process
MIN_FILES_PER_PROCESS = 2000  # below this a second process costs more than it saves
MAX_PROCESSES = 8
FETCH_TIMEOUT_S = 3600.0  # a partial clone's missing blobs, from its remote: as long as a big fetch takes
# dulwich keeps every object it resolves from a delta, up to core.deltaBaseCacheLimit (96 MiB
# unless set): for one pass over a tree, a sixth of that reads as fast and keeps `add` small.
DELTA_CACHE_BYTES = 16 << 20

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def init_linked_worktree(path: str, main_repo: Repo, identifier: str, head: bytes) -> Repo:
    """Register `path` as a linked worktree of `main_repo`, as `git worktree add` does, with
    HEAD at `head` (a commit id) and nothing checked out yet.

    dulwich's `Repo._init_new_working_directory` writes the same files but then checks out
    the main worktree's HEAD: a second full checkout, whose files the caller's tree may not
    even have (they would be left behind as untracked files).
    """
    path = os.path.abspath(path)
    admin_root = os.path.join(os.path.abspath(main_repo.controldir()), "worktrees")
    admin_dir = os.path.join(admin_root, identifier)
    shared = main_repo._get_shared_repository_permissions()
    for directory in (admin_root, admin_dir):
        try:
            os.mkdir(directory)
            adjust_shared_perm(directory, shared)
        except FileExistsError:
            pass
    dot_git = os.path.join(path, ".git")
    # the `.git` file first: a gitdir file naming a `.git` that is not there is prunable
    for file_path, content in (
        (dot_git, "gitdir: " + admin_dir),
        (os.path.join(admin_dir, "commondir"), "../.."),
        (os.path.join(admin_dir, "HEAD"), head.decode("ascii")),
        (os.path.join(admin_dir, "gitdir"), dot_git),
    ):
        # whole or not at all: git reads every admin dir's files while it adds a worktree of its
        # own, and dies on an empty commondir
        partial = file_path + ".partial"
        with open(partial, "wb") as file:
            file.write(os.fsencode(content) + b"\n")
        os.replace(partial, file_path)
    return Repo(path)


def materialize(repo: Repo, tree_id: bytes | None = None, processes: int | None = None, threads: int | None = None,
                included: Callable[[str], bool] | None = None) -> int:
    """Write every entry of `tree_id` (default: HEAD's tree) into `repo`'s empty working tree
    and write its index. Returns the number of entries. With `included` (a sparse checkout's
    patterns), only the paths it takes are written; the others are in the index marked
    skip-worktree, as git leaves them.

    Big trees are split between `processes` (forked; default: one per CPU, at least
    MIN_FILES_PER_PROCESS files each), since reading and writing a file is mostly Python work
    that threads cannot spread over cores. Each process reads its own blobs and writes them
    with `threads` writer threads; the index entries come back to this process, which writes
    the index.
    """
    replacements = _replacements(repo)
    objects = _Replaced(repo.object_store, replacements) if replacements else repo.object_store
    if tree_id is None:
        tree_id = _head_tree(repo, objects)
    config = repo.get_config()
    root = os.fsencode(repo.path) + b"/"
    every_entry, subtrees = [], []
    for entry in iter_tree_contents(objects, tree_id, include_trees=True):
        (subtrees if stat.S_ISDIR(entry.mode) else every_entry).append(entry)
    validator, ignore_case = get_path_element_validator(config), config.get_boolean(b"core", b"ignorecase", False)
    directories = _check_paths(every_entry, validator, ignore_case)
    entries = every_entry
    if included is not None:
        entries = [entry for entry in every_entry if included(os.fsdecode(entry.path))]
        directories = _check_paths(entries, validator, ignore_case)
    _fetch_missing_blobs(repo, config, entries)
    normalize = _checkout_filter(repo, tree_id, entries)
    symlink_fn = get_symlink_fn(config)
    for directory in directories:  # parents sort before their children
        os.mkdir(root + directory)

    if processes is None:
        processes = _process_count(len(entries)) if normalize is None else 1
    if processes > 1 and not _can_fork():
        processes = 1
    cpus = _cpu_count()
    threads = threads or max(2, min(MAX_WORKERS, 2 * cpus // processes))
    share = -(-len(entries) // processes) if entries else 0
    parts = [entries[i:i + share] for i in range(0, len(entries), share)] if share else [[]]
    children = []
    try:
        # Fork first: no thread of ours is running yet.
        children = [_fork_writer(repo.path, part, root, symlink_fn, threads, replacements) for part in parts[1:]]
        with _reading_store(repo) as (store, cache_bytes):
            blobs = (_in_tree_order(store, parts[0], replacements) if normalize is not None
                     else _in_pack_order(store, parts[0], cache_bytes, replacements))
            written = _write_entries(blobs, root, normalize, symlink_fn, threads)
        for child in children:
            written.update(child.collect())
    finally:
        for child in children:
            child.kill()
        if normalize is not None:
            normalize.close()

    index: dict[bytes, IndexEntry] = {}
    for entry in every_entry:
        found = written.get(entry.path)
        if found is None:  # left out by the sparse patterns
            found = IndexEntry(0, 0, 0, 0, cleanup_mode(entry.mode), 0, 0, 0, entry.sha)
            found.set_skip_worktree()
        index[entry.path] = found
    _write_index(repo, config, index, _cache_tree(tree_id, subtrees, every_entry))
    return len(every_entry)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _process_count(files: int) -> int:
    return max(1, min(_cpu_count(), MAX_PROCESSES, files // MIN_FILES_PER_PROCESS))


def _can_fork() -> bool:
    """Only where fork exists, and only from a single-threaded process (a fork copies one
    thread: a lock another thread held would stay locked in the child forever)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _write_entries(blobs, root: bytes, normalize, symlink_fn, threads: int) -> dict[bytes, IndexEntry]:
    """Read each blob here (`blobs`: each entry with its object), hand batches to writer
    threads; each path's index entry. A tree that fits in one batch (a sweep's small
    worktrees) is written here: starting the threads would cost more than its writes."""
    written: dict[bytes, IndexEntry] = {}
    with contextlib.ExitStack() as stack:
        pool: ThreadPoolExecutor | None = None  # made with the first full batch
        in_flight: deque[Future] = deque()
        batch: list[tuple[bytes, bytes, int, bytes, bytes]] = []
        batch_bytes = 0

        def flush() -> None:
            nonlocal batch, batch_bytes, pool
            if pool is None:
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="checkout"))
            in_flight.append(pool.submit(_write_batch, batch, symlink_fn))
            batch, batch_bytes = [], 0
            while len(in_flight) > 2 * threads:  # bounded memory: wait for the oldest
                written.update(in_flight.popleft().result())

        try:
            for entry, type_num, data in blobs:
                full_path = root + entry.path
                if S_ISGITLINK(entry.mode):  # a submodule: an empty directory, as git leaves it
                    os.mkdir(full_path)
                    written[entry.path] = index_entry_from_stat(os.lstat(full_path), entry.sha, mode=entry.mode)
                    continue
                if type_num != Blob.type_num:
                    raise InvalidPathError(entry.path)  # a tree entry with a file mode must name a blob
                if normalize is not None and not stat.S_ISLNK(entry.mode):
                    data = normalize(data, entry.path, entry.sha)
                batch.append((entry.path, full_path, entry.mode, entry.sha, data))
                batch_bytes += len(data)
                if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                    flush()
            if batch and pool is None:
                written.update(_write_batch(batch, symlink_fn))
            elif batch:
                flush()
            while in_flight:
                written.update(in_flight.popleft().result())
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    return written


class _Child:
    """A forked writer: its pid and the pipe its index entries (or its error) come back on."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid: int | None = pid
        self.pipe: int | None = pipe

    def collect(self) -> dict[bytes, IndexEntry]:
        assert self.pipe is not None and self.pid is not None
        with os.fdopen(self.pipe, "rb") as pipe:
            self.pipe = None
            payload = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        try:
            kind, value = pickle.loads(payload)
        except Exception:
            raise RuntimeError(f"a checkout process ended without a result (wait status {status})") from None
        if kind != "ok":
            raise value
        return value

    def kill(self) -> None:
        """Stop and reap it (after a failure elsewhere); nothing once it was collected."""
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = None


def _fork_writer(worktree: str, entries, root: bytes, symlink_fn, threads: int, replacements: dict) -> _Child:
    """Fork a process that writes `entries` with its own object store (a pack file's read
    position must not be shared) and sends back their index entries, or its exception."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return _Child(pid, read_end)
    status = 1
    try:  # the child: whatever happens, it ends in os._exit, never back in the caller's code
        os.close(read_end)
        try:
            with contextlib.closing(Repo(worktree)) as own, _reading_store(own) as (store, cache_bytes):
                blobs = _in_pack_order(store, entries, cache_bytes, replacements)
                result = ("ok", _write_entries(blobs, root, None, symlink_fn, threads))
            status = 0
        except BaseException as error:
            result = ("error", error)
        try:
            payload = pickle.dumps(result)
            pickle.loads(payload)  # an exception that cannot come back whole comes back as its text
        except Exception:
            payload = pickle.dumps(("error", RuntimeError(f"checkout process: {result[1]!r}")))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
    finally:
        os._exit(status)


def _head_tree(repo: Repo, objects) -> bytes:
    head = objects[repo.refs[b"HEAD"]]
    while isinstance(head, Tag):
        head = objects[head.object[1]]
    if not isinstance(head, Commit):
        raise ValueError(f"HEAD names a {type(head).__name__}, not a commit")
    return head.tree


@contextlib.contextmanager
def _reading_store(repo: Repo):
    """The repo's objects, opened again with a delta cache sized for one pass over a tree
    (unless the store is not on disk), and that size: core.deltaBaseCacheLimit, or
    DELTA_CACHE_BYTES."""
    store = repo.object_store
    try:
        limit = int(repo.get_config().get((b"core",), b"deltaBaseCacheLimit"))
    except (KeyError, ValueError):
        limit = DELTA_CACHE_BYTES
    if not isinstance(store, DiskObjectStore):
        yield store, limit
        return
    own = DiskObjectStore(store.path, delta_base_cache_limit=limit, object_format=store.object_format)
    try:
        yield own, limit
    finally:
        own.close()


def _in_tree_order(store, entries, replacements: dict):
    """Each entry with its object (type number, contents), one at a time in the tree's order
    (as git runs the checkout filters); a submodule's with none."""
    read = _blob_reader(store, replacements)
    for entry in entries:
        yield (entry, None, None) if S_ISGITLINK(entry.mode) else (entry, *read(entry.sha))


def _in_pack_order(store, entries, cache_bytes: int, replacements: dict):
    """Each entry with its object, in the order the objects lie in the packs (each read once,
    whatever number of paths share it); submodules first, with none."""
    paths_of: dict[bytes, list] = {}
    for entry in entries:
        if S_ISGITLINK(entry.mode):
            yield entry, None, None
        else:
            paths_of.setdefault(entry.sha, []).append(entry)
    for sha, type_num, data in in_pack_order(store, paths_of, cache_bytes, replacements):
        for entry in paths_of[sha]:
            yield entry, type_num, data


def _blob_reader(store, replacements: dict | None = None) -> Callable[[bytes], tuple[int, bytes]]:
    """`store.get_raw`, asking the packs first: the store's own lookup also checks for a
    multi-pack index (a `stat`) on every call. Loose objects and alternates come last. An
    object with a replacement (`git replace`) reads as its replacement, as git reads it."""
    packs = list(getattr(store, "packs", []))

    def read(hex_sha: bytes) -> tuple[int, bytes]:
        if replacements:
            hex_sha = replacements.get(hex_sha, hex_sha)
        binary = hex_to_sha(hex_sha)
        for position, pack in enumerate(packs):
            try:
                found = pack.get_raw(binary)
            except KeyError:
                continue
            if position:  # the pack that answered is asked first next time
                packs.insert(0, packs.pop(position))
            return found
        return store.get_raw(hex_sha)

    return read


def _check_paths(entries, validate_element: Callable[[bytes], bool], ignore_case: bool) -> list[bytes]:
    """Refuse what git refuses to check out; return the directories to make, parents first.

    Every element must pass the validator (no `.git`, `..`, NTFS/HFS aliases of them); no
    path may appear twice; and no leading directory may also be a file, symlink or submodule
    of this tree, so nothing is ever written through a symlink the checkout itself made (with
    core.ignorecase, nor through a symlink whose name differs only in case). Names that differ
    only in case are otherwise both written, as git writes them.
    """
    fold = (lambda path: path.lower()) if ignore_case else (lambda path: path)
    verdicts: dict[bytes, bool] = {}  # names repeat across directories: judge each once

    def valid(element: bytes) -> bool:
        verdict = verdicts.get(element)
        if verdict is None:
            verdict = verdicts[element] = validate_element(element)
        return verdict

    leaves: set[bytes] = set()
    links: set[bytes] = set()  # folded
    directories: set[bytes] = set()
    for entry in entries:
        path = entry.path
        if not path or path.startswith(b"/") or not validate_path(path, valid):
            raise InvalidPathError(path)
        if stat.S_ISLNK(entry.mode) and path.rsplit(b"/", 1)[-1].lower() == b".gitmodules":
            raise InvalidPathError(path)  # .gitmodules is read from the worktree: never a symlink
        if path in leaves:
            raise InvalidPathError(path)
        leaves.add(path)
        if stat.S_ISLNK(entry.mode):
            links.add(fold(path))
        cut = path.rfind(b"/")
        while cut > 0 and path[:cut] not in directories:
            directories.add(path[:cut])
            cut = path.rfind(b"/", 0, cut)
    clashes = (leaves & directories) | (links & {fold(directory) for directory in directories})
    if clashes:
        raise InvalidPathError(sorted(clashes)[0])
    return sorted(directories)


def _checkout_filter(repo: Repo, tree_id: bytes, entries) -> Callable[[bytes, bytes, bytes], bytes] | None:
    """What git does to a blob on its way to the worktree (`ident`, then end of lines, then the
    smudge filter), or None where it provably changes nothing.

    `info/attributes` is the common dir's, as git reads it (dulwich would look in the linked
    worktree's admin dir). Without it and without any `.gitattributes` in the tree, every path
    has the same (empty) attributes, so one probe tells whether the configuration
    (`core.autocrlf`, `core.eol`) converts anything.
    """
    info_attributes = os.path.exists(os.path.join(repo.commondir(), "info", "attributes"))
    linked = os.path.abspath(repo.commondir()) != os.path.abspath(repo.controldir())
    source = Repo(repo.commondir()) if info_attributes and linked else repo  # a second store only then
    config = repo.get_config_stack()
    source.filter_context = FilterContext(_GitFilters(config, repo))
    normalizer = source.get_blob_normalizer(config=config, tree=tree_id)
    has_attributes = any(entry.path.rsplit(b"/", 1)[-1] == ATTRIBUTES_FILE for entry in entries)
    if not has_attributes and not info_attributes:
        if get_filter_for_path(b"probe", normalizer.gitattributes, filter_context=normalizer.filter_context) is None:
            return None

    def normalize(data: bytes, path: bytes, sha: bytes) -> bytes:
        attributes = normalizer.gitattributes.match_path(path)
        if attributes.get(b"ident") is True:
            data = _IDENT.sub(b"$Id: " + sha + b" $", data)
        encoding = _worktree_encoding(attributes)
        if encoding is None:
            return normalizer.checkout_normalize(Blob.from_string(data), path).as_raw_string()
        # git's order: end of lines, then the working-tree-encoding, then the smudge filter
        found = get_filter_for_path(path, normalizer.gitattributes, filter_context=normalizer.filter_context)
        steps = found.filters if isinstance(found, CompositeFilterDriver) else [found] if found else []
        for step in steps:
            if isinstance(step, LineEndingFilter):
                data = step.smudge(data, path)
        data = _encode_for_worktree(data, encoding, path)
        for step in steps:
            if not isinstance(step, LineEndingFilter):
                data = step.smudge(data, path)
        return data

    normalize.close = normalizer.filter_context.close  # type: ignore[attr-defined]
    return normalize


def _worktree_encoding(attributes) -> str | None:
    """The `working-tree-encoding` attribute as git takes it: a name, and none for UTF-8."""
    value = attributes.get(b"working-tree-encoding")
    if not isinstance(value, bytes):
        return None
    name = value.decode("ascii", "replace")
    return None if name.upper() in ("UTF-8", "UTF8") else name


def _encode_for_worktree(data: bytes, encoding: str, path: bytes) -> bytes:
    """The blob (UTF-8) in the worktree's encoding. What cannot be converted is written as it
    is, with git's error line. git's "UTF-16" and "UTF-32" come with a byte order mark, in the
    machine's order: so do Python's."""
    try:
        return data.decode("utf-8").encode(encoding)
    except (LookupError, UnicodeError):
        print(f"error: failed to encode '{os.fsdecode(path)}' from UTF-8 to {encoding}", file=sys.stderr)
        return data


class _GitFilters(FilterRegistry):
    """The filter drivers git runs: only those the configuration names (dulwich would stand in
    its own LFS store, made in the new worktree's admin dir, for a `filter=lfs` git has no
    driver for: git then checks out the pointer as it is)."""

    def __init__(self, config, repo: Repo) -> None:
        super().__init__(config, repo)
        self._configured: dict[str, FilterDriver | None] = {}

    def get_driver(self, name: str) -> FilterDriver | None:
        if name not in self._configured:
            self._configured[name] = self._from_config(name)
        return self._configured[name]

    def _from_config(self, name: str) -> FilterDriver | None:
        def value(key: str) -> str | None:
            try:
                found = self.config.get(("filter", name), key)
            except KeyError:
                return None
            return found.decode("utf-8", "surrogateescape") if isinstance(found, bytes) else found

        process, clean, smudge = value("process"), value("clean"), value("smudge")
        if not (process or clean or smudge):
            return None
        required = self.config.get_boolean(("filter", name), "required", False)
        return _GitProcessFilter(name, clean, smudge, required, self.repo.path, process)

    def close(self) -> None:
        for driver in self._configured.values():
            if driver is not None:
                driver.cleanup()
        self._configured.clear()
        super().close()


class _GitProcessFilter(ProcessFilterDriver):
    """dulwich's filter driver, failing as git fails: a required filter that fails is git's
    "<path>: smudge filter <name> failed" (not a protocol error where the process hung up),
    and what the filter process says on stderr reaches the user (git-lfs's download errors;
    a pipe nobody reads would also block a filter that says much)."""

    def __init__(self, name: str, *args) -> None:
        super().__init__(*args)
        self.name = name
        self._drain: threading.Thread | None = None

    def _get_or_start_process(self):
        protocol = super()._get_or_start_process()
        process = self._process
        if process is not None and process.stderr is not None and self._drain is None:
            self._drain = threading.Thread(target=_copy_to_stderr, args=(process.stderr,), daemon=True)
            self._drain.start()
        return protocol

    def _use_process_filter(self, data: bytes, operation: str, path: str = "") -> bytes:
        try:
            return super()._use_process_filter(data, operation, path)
        except GitProtocolError as error:  # HangupException too: the process died mid-answer
            self.cleanup()
            raise FilterError(f"external filter '{self.process_cmd}' failed: {error}") from None

    def smudge(self, data: bytes, path: bytes = b"") -> bytes:
        try:
            return super().smudge(data, path)
        except FilterError:
            self.cleanup()  # its last words reach stderr before ours
            raise FilterError(f"{os.fsdecode(path)}: smudge filter {self.name} failed") from None

    def cleanup(self) -> None:
        process, drain = self._process, self._drain
        self._drain = None
        if process is not None and drain is not None:
            with contextlib.suppress(OSError, ValueError):
                process.stdin.close()  # the filter's cue to finish
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            drain.join(timeout=5)
        super().cleanup()


def _copy_to_stderr(stream) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: stream.read1(65536), b""):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()


# git's ident: `$Id$`, or `$Id: anything on one line $`, becomes `$Id: <blob id> $`
_IDENT = re.compile(rb"\$Id(?::[^$\n]*)?\$")

MAX_REPLACE_DEPTH = 5  # git's bound on a chain of replacements


def _replacements(repo: Repo) -> dict[bytes, bytes]:
    """Each replaced object's id -> its replacement's, as git reads objects (`git replace`),
    unless GIT_NO_REPLACE_OBJECTS or core.useReplaceRefs says not to. Two checks decide the
    common case: no refs/replace/ folder, and no such name in packed-refs."""
    if "GIT_NO_REPLACE_OBJECTS" in os.environ:
        return {}
    base = os.environ.get("GIT_REPLACE_REF_BASE", "refs/replace/").encode()
    base = base if base.endswith(b"/") else base + b"/"
    common = os.fsencode(repo.commondir())
    if not os.path.isdir(os.path.join(common, base)):
        try:
            with open(os.path.join(common, b"packed-refs"), "rb") as packed:
                if b" " + base not in packed.read():
                    return {}
        except FileNotFoundError:
            return {}
    if not repo.get_config_stack().get_boolean(b"core", b"useReplaceRefs", True):
        return {}
    direct = {name: target for name, target in repo.refs.as_dict(base).items() if len(name) == len(target)}
    found = {}
    for original, target in direct.items():
        for _ in range(MAX_REPLACE_DEPTH):
            if target not in direct:
                break
            target = direct[target]
        found[original] = target
    return found


class _Replaced:
    """An object store whose replaced objects read as their replacements."""

    def __init__(self, store, replacements: dict[bytes, bytes]) -> None:
        self._store, self._replacements = store, replacements

    def __getitem__(self, sha: bytes):
        return self._store[self._replacements.get(sha, sha)]

    def get_raw(self, sha: bytes):
        return self._store.get_raw(self._replacements.get(sha, sha))

    def __contains__(self, sha: bytes) -> bool:
        return self._replacements.get(sha, sha) in self._store


def _promisor_remotes(config) -> list[str]:
    """The remotes a partial clone may fetch missing objects from, as git orders them: those
    marked promisor, then extensions.partialClone's."""
    remotes = [section[1].decode() for section in config.sections()
               if len(section) == 2 and section[0] == b"remote" and config.get_boolean(section, b"promisor", False)]
    with contextlib.suppress(KeyError):
        named = config.get(b"extensions", b"partialclone").decode()
        remotes = [remote for remote in remotes if remote != named] + [named]
    return remotes


def _fetch_missing_blobs(repo: Repo, config, entries) -> None:
    """In a partial clone (`clone --filter=blob:none`), the blobs this checkout needs that are
    not here yet, fetched in one go as git's own checkout fetches them: dulwich has no
    promisor remotes, so git's fetch does it (with the arguments git gives it)."""
    remotes = _promisor_remotes(config)
    if not remotes:
        return
    store = repo.object_store
    missing = sorted({entry.sha for entry in entries if not S_ISGITLINK(entry.mode) and entry.sha not in store})
    for remote in remotes:
        if not missing:
            return
        fetched = git("-c", "fetch.negotiationAlgorithm=noop", "fetch", remote, "--no-tags", "--no-write-fetch-head",
                      "--recurse-submodules=no", "--filter=blob:none", "--stdin", cwd=repo.path, env=own_env(),
                      input="".join(sha.decode() + "\n" for sha in missing), timeout=FETCH_TIMEOUT_S)
        sys.stderr.write(fetched.stderr)
        if fetched.returncode == 0:
            missing = [sha for sha in missing if sha not in store]  # a miss rescans the packs
    if missing:
        raise FilterError(f"could not fetch {missing[0].decode()} from promisor remote")


def _cache_tree(tree_id: bytes, subtrees, entries) -> bytes:
    """The index's cache-tree (TREE) extension as git's checkout writes it (dulwich reads and
    writes no TREE data): each directory's tree id, how many index entries it holds and how
    many subdirectories it has, depth first, subdirectories by name length then name."""
    count: dict[bytes, int] = {b"": 0}
    children: dict[bytes, list[bytes]] = {b"": []}
    tree_of = {b"": tree_id}
    for tree in subtrees:
        parent, _, name = tree.path.rpartition(b"/")
        children[parent].append(name)
        children[tree.path], count[tree.path], tree_of[tree.path] = [], 0, tree.sha
    for entry in entries:
        count[entry.path.rpartition(b"/")[0]] += 1
    for directory in sorted(count, key=lambda path: path.count(b"/") if path else -1, reverse=True):
        if directory:
            count[directory.rpartition(b"/")[0]] += count[directory]
    out = []
    todo = [(b"", b"")]
    while todo:
        path, name = todo.pop()
        below = sorted(children[path], key=lambda child: (len(child), child))
        out.append(b"%s\0%d %d\n%s" % (name, count[path], len(below), hex_to_sha(tree_of[path])))
        todo.extend((path + b"/" + child if path else child, child) for child in reversed(below))
    return b"".join(out)


def _git_version() -> tuple[int, ...]:
    found = git("version").stdout
    match = re.search(r"(\d+)\.(\d+)", found)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _write_index(repo: Repo, config, entries: dict[bytes, IndexEntry], cache_tree: bytes) -> None:
    """The index as git's checkout writes it: the version index.version or feature.manyFiles
    asks for, the cache-tree, and a split index under core.splitIndex."""
    stack = repo.get_config_stack()
    many_files = stack.get_boolean(b"feature", b"manyFiles", False)
    try:
        version = int(stack.get(b"index", b"version"))
    except (KeyError, ValueError):
        version = 4 if many_files else None
    skip_hash = False
    if many_files or stack.get_boolean(b"index", b"skipHash", False):  # git reads it from 2.40 on
        skip_hash = stack.get_boolean(b"index", b"skipHash", many_files) and _git_version() >= (2, 40)
    # built in memory (dulwich's writer makes several small writes per entry), hashed once
    content = io.BytesIO()
    write_index_dict(content, entries, version=version, extensions=[IndexExtension(b"TREE", cache_tree)],
                     object_format=repo.object_format)
    data = content.getbuffer()
    trailer = b"\0" * repo.object_format.oid_length if skip_hash else repo.object_format.hash_func(data).digest()
    file = GitFile(repo.index_path(), "wb", shared_perm=repo._get_shared_repository_permissions())
    try:
        file.write(data)
        file.write(trailer)
        file.close()
    except BaseException:
        file.abort()
        raise
    finally:
        data.release()
    if stack.get_boolean(b"core", b"splitIndex", False):
        # dulwich writes no split index (a shared index and a `link` extension): git splits ours
        # (its first write keeps the entries in the index itself; this one moves them to the shared one)
        split = git("update-index", "--refresh", "--force-write-index", cwd=repo.path, env=own_env())
        if split.returncode != 0:
            raise FilterError(f"git could not split the index: {split.stderr.strip()}")


def _write_batch(batch, symlink_fn) -> list[tuple[bytes, IndexEntry]]:
    """Create each file or symlink (never over an existing one); its index entry, with the
    stat data of the file as written."""
    done = []
    for tree_path, full_path, mode, sha, data in batch:
        if stat.S_ISLNK(mode):
            symlink_fn(data, full_path)
            info = os.lstat(full_path)
        else:
            descriptor = os.open(full_path, _CREATE_FLAGS, 0o777 if mode & 0o100 else 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view):]
                info = os.fstat(descriptor)
            finally:
                os.close(descriptor)
        done.append((tree_path, index_entry_from_stat(info, sha, mode=cleanup_mode(mode))))
    return done
