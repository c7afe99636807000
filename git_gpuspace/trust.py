"""Which devcontainer.json files the user trusts: by content, per repository, recorded outside
the repository (in the user's config dir), as VS Code's workspace trust and direnv's `allow` do.

A trusted file may run lifecycle commands, read the host's environment (`${localEnv:...}`) and
widen the container's access (runArgs, mounts outside the repository). A changed file is a new
hash, so it is untrusted again until the user says otherwise.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import tomli_w

from .config import APP_NAME
from .errors import StateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Record:
    repo: str  # the repository's common git dir
    sha256: str  # of the file's bytes
    path: str  # where it was when trusted (shown by --list)
    trusted: _dt.datetime


def store_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "trust.toml"


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def records() -> list[Record]:
    path = store_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StateError(f"cannot read {path}: {error}", hint="fix or remove the file") from None
    found = []
    for entry in document.get("trusted", []):
        try:
            found.append(Record(str(entry["repo"]), str(entry["sha256"]), str(entry["path"]), entry["trusted"]))
        except (KeyError, TypeError):
            raise StateError(f"{path}: a [[trusted]] entry lacks repo, sha256, path or trusted",
                             hint="fix or remove the file") from None
    return found


def is_trusted(common_dir: Path, content: bytes) -> bool:
    wanted = digest(content)
    return any(r.repo == str(common_dir) and r.sha256 == wanted for r in records())


def grant(common_dir: Path, path: Path, content: bytes) -> bool:
    """Trust this content in this repository; False when it already was."""
    if is_trusted(common_dir, content):
        return False
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    _save([*records(), Record(str(common_dir), digest(content), str(path), now)])
    return True


def revoke(common_dir: Path, path: Path, content: bytes | None) -> int:
    """Forget trust in this file: its current content, and whatever was trusted at its path."""
    wanted = digest(content) if content is not None else None
    kept = [r for r in records() if not (r.repo == str(common_dir) and (r.sha256 == wanted or r.path == str(path)))]
    removed = len(records()) - len(kept)
    if removed:
        _save(kept)
    return removed


def _save(entries: list[Record]) -> None:
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"trusted": [{"repo": r.repo, "sha256": r.sha256, "path": r.path, "trusted": r.trusted} for r in entries]}
    fd, temporary = tempfile.mkstemp(prefix=".trust.toml.", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(tomli_w.dumps(document).encode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
