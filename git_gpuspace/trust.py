"""Which devcontainer.json files the user trusts: by content, per repository, recorded outside
the repository (in the user's config dir), as VS Code's workspace trust and direnv's `allow` do.

A trusted file may run lifecycle commands, read the host's environment (`${localEnv:...}`) and
widen the container's access (runArgs, mounts outside the repository). What it runs is as much
the trusted content as the file itself, so the hash covers the file's folder
(`.devcontainer/`: the file, its Dockerfile, the scripts and local features beside it) and the
Dockerfile and local features it names outside that folder; a `.devcontainer.json` at the top of
the worktree is covered with those it names. A change to any of them is a new hash, so the file
is untrusted again until the user says otherwise. What it uses that no hash covers (a build
context outside the folder, a file outside it that a command runs) is named to the user.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import json5
import platformdirs
import tomli_w

from .devcontainer import parser as devcontainer
from . import folders
from .atomic import replace_file
from .config import APP_NAME
from .errors import StateError

from .installation import WORKSPACE, tomllib


@dataclass(frozen=True)
class Record:
    repo: str  # the repository's common git dir
    sha256: str  # of what the file's Coverage covers
    path: str  # where it was when trusted (shown by --list)
    trusted: _dt.datetime
    covers: str = ""  # what the hash covers, in words; empty: a record of the file's bytes alone (older)


@dataclass(frozen=True)
class Coverage:
    """What trusting one devcontainer.json covers, and what it uses that trust does not cover."""

    path: Path  # the devcontainer.json
    sha256: str
    folder: str | None  # its folder, relative to the worktree; None: a `.devcontainer.json` alone
    files: int  # entries of the folder the hash covers (1: the file alone)
    named: tuple[str, ...] = ()  # outside the folder, covered too: the Dockerfile, local features, as written
    uncovered: tuple[str, ...] = ()  # used but not covered: a build context, files its commands run

    def describe(self) -> str:
        """`.devcontainer/ (4 files)`, and what it names outside that folder."""
        what = f"{self.folder}/ ({self.files} file{'s' if self.files != 1 else ''})" if self.folder is not None \
            else f"{self.path.name} alone"
        return what + "".join(f" and {name}" for name in self.named)

    def not_covered(self) -> str | None:
        """The line that names what trusting the file does not cover, or None."""
        if not self.uncovered:
            return None
        return (f"trusting {self.path.name} covers {self.describe()}, not what it also uses: "
                f"{', '.join(self.uncovered)}; review those too (a change to them does not make it untrusted again)")


def store_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "trust.toml"


def coverage(path: Path, content: bytes, worktree: Path, repo_root: Path) -> Coverage:
    """The hash of what trusting `path` (whose bytes are `content`, as read and parsed) covers:
    its folder walked whole (folders.hash_tree: no symlink followed, no FIFO or device
    read) unless it is a `.devcontainer.json` at the top of the worktree, then the Dockerfile,
    local features and Compose files the file names outside that folder."""
    document = _document(content)
    base = path.parent
    folder = None if base.resolve() == worktree.resolve() else base
    digest = hashlib.sha256(b"git-gpuspace trust 2\0")
    digest.update(content)
    files = folders.hash_tree(digest, folder) if folder is not None else 1
    named, uncovered = [], []
    build = _build_of(document, worktree)
    for text in [*([build[0]] if build else []), *_local_features(document), *_compose_files(document, worktree)]:
        where = _resolved(base / text)
        if where is None or (folder is not None and folders.inside(where, folder)) or \
                not folders.inside(where, repo_root, worktree) or not where.exists():
            continue  # inside the folder: hashed with it; outside the repository or missing: load refuses it
        digest.update(b"\0named\0")  # which one: the file's own bytes say, in this order
        if where.is_dir():  # a local feature's folder
            folders.hash_tree(digest, where)
        else:
            digest.update(folders.content_of(where))
        named.append(text)
    context = _resolved(base / build[1]) if build else None
    if build and (folder is None or context is None or not folders.inside(context, folder)):
        uncovered.append(f"the build context {build[1]} (what the Dockerfile copies from it)")
    if _compose_files(document, worktree):
        uncovered.append("what its Compose files build, mount and read (build contexts, env files, volumes)")
    uncovered += _files_run(document, worktree, folder)
    relative = os.path.relpath(folder, worktree) if folder is not None else None
    return Coverage(path, digest.hexdigest(), relative, files, tuple(named), tuple(uncovered))


def _document(content: bytes) -> dict:
    """The file as far as coverage needs it; one that does not parse covers its bytes (load
    refuses it with the reason)."""
    try:
        document = json5.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _text(value: object, worktree: Path) -> str | None:
    """A path the file writes, with the worktree's variables filled in as load fills them."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.replace("${localWorkspaceFolderBasename}", worktree.name).replace("${localWorkspaceFolder}",
                                                                                   str(worktree))


def _build_of(document: dict, worktree: Path) -> tuple[str, str] | None:
    """(dockerfile, context) as the file writes them, or None without a build."""
    if "build" not in document and "dockerFile" not in document:
        return None
    build = document.get("build") if isinstance(document.get("build"), dict) else {}
    dockerfile = _text(build.get("dockerfile"), worktree) or _text(document.get("dockerFile"), worktree)
    context = _text(build.get("context"), worktree) or (
        _text(document.get("context"), worktree) if "dockerFile" in document else None)
    return dockerfile or "Dockerfile", context or "."


def _compose_files(document: dict, worktree: Path) -> list[str]:
    """dockerComposeFile as the file writes it: the Compose files its services come from."""
    files = document.get("dockerComposeFile")
    return [text for item in (files if isinstance(files, list) else [files]) if (text := _text(item, worktree))]


def _local_features(document: dict) -> list[str]:
    features = document.get("features")
    return [key for key in features if key.startswith(("./", "../"))] if isinstance(features, dict) else []


def _files_run(document: dict, worktree: Path, folder: Path | None) -> list[str]:
    """The files of the worktree outside `folder` that a lifecycle command names (`bash
    scripts/setup.sh`, `./tools/x.sh`, `/workspace/x.py`): trusting the file does not cover them."""
    prefixes = {WORKSPACE, f"/workspaces/{worktree.name}"}
    if isinstance(document.get("workspaceFolder"), str):
        prefixes.add(document["workspaceFolder"].rstrip("/"))
    found: list[str] = []
    for key in devcontainer.LIFECYCLE:
        command = document.get(key)
        for step in command.values() if isinstance(command, dict) else [command]:
            for word in _words(step):
                word = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
                for prefix in prefixes:
                    if word.startswith(prefix + "/"):
                        word = word[len(prefix) + 1:]
                if not word or word.startswith("/") or "${" in word:
                    continue
                where = _resolved(worktree / word)
                if where is None or not folders.inside(where, worktree) or \
                        (folder is not None and folders.inside(where, folder)) or not where.is_file():
                    continue
                if (shown := f"{os.path.relpath(where, worktree.resolve())} (named by {key})") not in found:
                    found.append(shown)
    return found


def _resolved(path: Path) -> Path | None:
    """`path` resolved, or None when it cannot be (a NUL in the name, a loop of links)."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def _words(step: object) -> list[str]:
    if isinstance(step, list):
        return [word for word in step if isinstance(word, str)]
    if not isinstance(step, str):
        return []
    words = shlex.shlex(step, posix=True, punctuation_chars=True)  # `a.sh;` is `a.sh` and `;`
    words.whitespace_split = True
    try:
        return list(words)
    except ValueError:  # an unbalanced quote: the shell would refuse it too; its words still name files
        return step.split()


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
            found.append(Record(str(entry["repo"]), str(entry["sha256"]), str(entry["path"]), entry["trusted"],
                                str(entry.get("covers", ""))))
        except (KeyError, TypeError, AttributeError):
            raise StateError(f"{path}: a [[trusted]] entry lacks repo, sha256, path or trusted",
                             hint="fix or remove the file") from None
    return found


def is_trusted(common_dir: Path, covered: Coverage) -> bool:
    return any(r.repo == str(common_dir) and r.sha256 == covered.sha256 for r in records())


def grant(common_dir: Path, covered: Coverage) -> bool:
    """Trust what `covered` covers, as it is now, in this repository; False when it already was."""
    if is_trusted(common_dir, covered):
        return False
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    _save([*records(), Record(str(common_dir), covered.sha256, str(covered.path), now, covered.describe())])
    return True


def revoke(common_dir: Path, path: Path, covered: Coverage | None) -> int:
    """Forget trust in this file: what it covers now, and whatever was trusted at its path."""
    wanted = covered.sha256 if covered is not None else None
    kept = [r for r in records() if not (r.repo == str(common_dir) and (r.sha256 == wanted or r.path == str(path)))]
    removed = len(records()) - len(kept)
    if removed:
        _save(kept)
    return removed


def _save(entries: list[Record]) -> None:
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"trusted": [{"repo": r.repo, "sha256": r.sha256, "path": r.path, "trusted": r.trusted,
                             **({"covers": r.covers} if r.covers else {})} for r in entries]}
    replace_file(path, tomli_w.dumps(document).encode())
