"""A binding's data dir: what outlives its container (checkpoints, logs), mounted writable at
/data, with a private .gpuspace/ (mode 0700) for tokens, keys and service state.

Everything in a data dir is the container's to change: the host opens what it writes or reads
there without following symlinks, keeps files it mounts elsewhere, and deletes a data dir only
when it proves the dir is one it made.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import shutil
from pathlib import Path

import platformdirs

from .config import APP_NAME, default_data_root
from .errors import GpuspaceError, StateError


DATA_MOUNT = "/data"


PRIVATE = ".gpuspace"  # in the data dir, mode 0700: tokens, keys, service state


OWNER = "owner"  # in PRIVATE: a keyed hash of the data dir's path, proof that we made it


ORIGIN = "origin"  # in PRIVATE: the repository (common dir) and worktree it was made for, for `data list`


def create_data_dir(root: Path, name: str, origin: tuple[Path, Path] | None = None) -> tuple[Path, bool]:
    """The binding's data dir (checkpoints/, logs/, a private .gpuspace/); True if made now.
    `origin`: (common dir, worktree) it is made for.

    A dir made now gets its owner mark first, so one left half-made (its undo failed too) is
    still provably ours. When the file system says no (full, over quota, read-only...), what was
    made now is undone and the error names the path and the cause."""
    path = root / name
    made = False
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)  # the user's alone, like their home
            made = True
        except FileExistsError:
            pass
        if made:
            _put_private(path, OWNER, _owner_mark(path))
        for sub in ("checkpoints", "logs"):
            (path / sub).mkdir(exist_ok=True)
        os.close(_private_dir(path))
        if origin is not None and read_private(path, ORIGIN) is None:
            _put_private(path, ORIGIN, f"{origin[0]}\n{origin[1]}\n")
    except BaseException as error:
        if made:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(error, OSError):
            verb = "make" if made or not path.is_dir() else "use"
            raise GpuspaceError(f"cannot {verb} the data dir {path}: {_cause(error)}", hint=_hint(error)) from None
        raise
    return path, made


# Less than this left counts as none: what failed to write may have freed a little since.
FULL_BYTES, FULL_INODES = 1 << 20, 16


def disk_trouble(data_dir: Path) -> str | None:
    """Why the data dir's file system takes no more, as `df` would show it: full, out of
    inodes or read-only; None when it has room (or cannot be asked)."""
    try:
        found = os.statvfs(data_dir)
    except OSError:
        return None
    if found.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if found.f_bavail * found.f_frsize < FULL_BYTES:
        return "no space left on device"
    if found.f_files and found.f_favail < FULL_INODES:  # f_files 0: the file system counts none
        return "no inodes left on device"
    return None


def _cause(error: OSError) -> str:
    """'No space left on device' -> 'no space left on device'."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def _hint(error: OSError) -> str:
    change = "or choose another data root: `git gpuspace config set data_root DIR`"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space on that disk, {change}"
    return f"check that you can write there, {change}"


def data_dirs() -> list[Path]:
    """Every data dir of ours in the user's data roots (made by us: our owner mark)."""
    found = []
    for root in trusted_roots():
        with contextlib.suppress(OSError):
            found += [entry for entry in sorted(root.iterdir()) if entry.is_dir() and not entry.is_symlink() and _marked(entry)]
    return found


def origin_of(data_dir: Path) -> tuple[Path, Path] | None:
    """(common dir, worktree) a data dir was made for; None for one made before this was kept.
    Written by us, in the private dir: still only shown and compared, never acted on."""
    lines = (read_private(data_dir, ORIGIN) or "").splitlines()
    return (Path(lines[0]), Path(lines[1])) if len(lines) >= 2 else None


def trusted_roots() -> list[Path]:
    """Data roots that come from the user, never from a repository: the default and the user
    config's `data_root`."""
    from .config import load_user

    roots = [default_data_root()]
    configured = load_user().get("data_root")
    if configured:
        roots.append(Path(os.path.expanduser(str(configured))))
    return [Path(os.path.realpath(root)) for root in roots]


def checked_data_dir(text: str, container: str, where: str) -> Path:
    """A data dir named by the state file, which is data: an absolute, symlink-free path that we
    made (its owner mark is ours), or that is still to be made in one of the user's data roots
    under the container's name. Anything else is refused, naming the key."""
    problem = data_dir_problem(text, container)
    if problem:
        raise StateError(f"{where}.data_dir {text!r} {problem}; nothing was done",
                         hint="the state file asks for more than git-gpuspace made: fix the entry by hand")
    return Path(text)


def data_dir_problem(text: str, container: str) -> str | None:
    """Why `text` is not provably a data dir of ours (see checked_data_dir), or None."""
    path = Path(text)
    if not path.is_absolute() or os.path.normpath(text) != text or ".." in path.parts:
        return "is not a plain absolute path"
    if os.path.realpath(text) != text:
        return f"leads through a symlink to {os.path.realpath(text)}"
    if path.exists():
        if not _marked(path) and not (path.name == container and path.parent in trusted_roots()):
            return "is not a data dir git-gpuspace made (it lacks our owner mark)"
    elif not (path.name == container and path.parent in trusted_roots()):
        return "is outside your data roots"
    return None


def _owner_mark(path: Path) -> str:
    return user_mac(str(path)) + "\n"


def user_mac(text: str) -> str:
    """A keyed hash of `text` with the user's secret: proof that this user's git-gpuspace wrote it."""
    return hmac.new(_mark_key(), text.encode(), hashlib.sha256).hexdigest()


def _marked(path: Path) -> bool:
    text = read_private(path, OWNER)
    return text is not None and hmac.compare_digest(text, _owner_mark(path))


def _mark_key() -> bytes:
    """A secret of the user's, outside every data dir: a container cannot forge a mark."""
    key_file = platformdirs.user_state_path(APP_NAME) / "owner.key"
    try:
        return key_file.read_bytes()
    except FileNotFoundError:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another command made it first
            return key_file.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        return key_file.read_bytes()


def _private_dir(data_dir: Path) -> int:
    """An fd on `<data dir>/.gpuspace`, made 0700 if missing, refusing a symlink put there."""
    top = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir(PRIVATE, 0o700, dir_fd=top)
        except FileExistsError:
            pass
        try:
            fd = os.open(PRIVATE, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
        except OSError:
            raise GpuspaceError(f"{data_dir / PRIVATE} is not a directory (a symlink?); refusing to use it",
                                hint="something in the container replaced it: remove it by hand") from None
    finally:
        os.close(top)
    os.fchmod(fd, 0o700)
    return fd


def write_private(data_dir: Path, name: str, text: str) -> None:
    """Write `.gpuspace/<name>` (0600) by rename inside the directory: a symlink the container
    put at that name is replaced, never followed. A full disk and the like are one line."""
    try:
        _put_private(data_dir, name, text)
    except OSError as error:
        raise GpuspaceError(f"cannot write {data_dir / PRIVATE / name}: {_cause(error)}", hint=_hint(error)) from None


def _put_private(data_dir: Path, name: str, text: str) -> None:
    directory = _private_dir(data_dir)
    temporary = f".{name}.{secrets.token_hex(4)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=directory)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)
        os.close(directory)


def remove_private(data_dir: Path, name: str) -> None:
    """Remove `.gpuspace/<name>` if it is there, following no symlink on the way."""
    try:
        directory = _private_dir(data_dir)
        try:
            os.unlink(name, dir_fd=directory)
        except FileNotFoundError:
            pass
        finally:
            os.close(directory)
    except OSError as error:
        raise GpuspaceError(f"cannot remove {data_dir / PRIVATE / name}: {_cause(error)}", hint=_hint(error)) from None


def read_private(data_dir: Path, name: str) -> str | None:
    """`.gpuspace/<name>` if it is a regular file (not a symlink, FIFO or device), else None."""
    from .untrusted_files import read_under

    found = read_under(data_dir, f"{PRIVATE}/{name}", 1 << 16)
    return None if found is None else found.decode(errors="replace")
