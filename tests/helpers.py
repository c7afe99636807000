"""Helpers the test files share: git on the command line, commits, a refusal's one error line,
devcontainer files and the state file of a test repository.

Fixtures live in conftest.py; these are plain functions, imported where used
(`from helpers import git`), as tests/ is on sys.path with conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tomli_w

from git_gpuspace.devcontainer import parser as devcontainer, features
from git_gpuspace.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ERROR = "git-gpuspace: error: "


# ---------------------------------------------------------------- git on the command line

def git(*args: str, cwd: Path, check: bool = True, input: str | bytes | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    """Run git in `cwd`, its output captured (as bytes with text=False)."""
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, text=text, check=check)


def git_out(*args: str, cwd: Path, check: bool = True, input: str | None = None) -> str:
    """git's standard output; with check, a failure fails the test with git's own words."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, input=input)
    if check:
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def commit(repo: Path, files: dict[str, bytes | str], message: str = "commit") -> None:
    """Write `files` (name: content) into the worktree `repo` and commit everything."""
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    git_out("add", "-A", cwd=repo)
    git_out("commit", "-q", "-m", message, cwd=repo)


def commit_all(repo: Path, message: str = "commit") -> str:
    """Commit all of the worktree `repo` (an empty commit too); its commit id."""
    git_out("add", "-A", cwd=repo)
    git_out("commit", "-q", "--allow-empty", "-m", message, cwd=repo)
    return git_out("rev-parse", "HEAD", cwd=repo).strip()


# ---------------------------------------------------------------- what a refused command prints

def assert_refused(result, code: int | None, *words: str) -> str:
    """Exit `code` (None: any but 0), exactly one `git-gpuspace: error:` line naming each of
    `words`, no traceback. Returns that line."""
    if code is None:
        assert result.returncode != 0, result.stdout + result.stderr
    else:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], result.stderr
    return errors[0]


# ---------------------------------------------------------------- a test repository (conftest's Repo)

def commit_devcontainer(repo, text, name=None, extra=None):
    """Commit `text` as .devcontainer/[name/]devcontainer.json, with `extra` files (path: text)."""
    folder = repo.path / ".devcontainer" / (name or "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devcontainer.json").write_text(text)
    for path, content in (extra or {}).items():
        (repo.path / path).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / path).write_text(content)
    repo.git("add", ".")
    repo.git("commit", "-q", "-m", "devcontainer")


def container_of(repo, branch):
    """The container of the worktree on `branch`."""
    return next(c for c in repo.containers() if c.labels["gpuspace.branch"] == branch)


def plant(repo, **changes):
    """Rewrite the first binding's keys in the state file; None deletes one."""
    document = tomllib.loads(repo.state_text())
    binding = document["bindings"][0]
    for key, value in changes.items():
        if value is None:
            binding.pop(key, None)
        else:
            binding[key] = value
    (repo.common_dir / "gpuspace.toml").write_text(tomli_w.dumps(document))


# ---------------------------------------------------------------- a refusal's UsageError

def usage_error(call, *args) -> UsageError:
    with pytest.raises(UsageError) as refused:
        call(*args)
    return refused.value


# ---------------------------------------------------------------- devcontainer.json and features, parsed without the engine

def where(tmp_path: Path) -> Path:
    """The devcontainer.json that `parse` writes."""
    return tmp_path / "wt" / ".devcontainer" / "devcontainer.json"


def parse(tmp_path: Path, document: dict | str | bytes, trust: bool = True, files: dict[str, str] | None = None,
          fetch=None, repo_root: Path | None = None) -> devcontainer.Devcontainer:
    """devcontainer.load, with no engine, of `document` written at `where(tmp_path)` with `files`
    (path in the worktree: text) beside it."""
    worktree = tmp_path / "wt"
    (worktree / ".devcontainer").mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (worktree / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree / name).write_text(text)
    path = where(tmp_path)
    if isinstance(document, bytes):
        content = document
    else:
        content = (document if isinstance(document, str) else json.dumps(document)).encode()
    path.write_bytes(content)
    return devcontainer.load(path, content, worktree, repo_root or worktree, trust, fetch)


def refusal(tmp_path: Path, document, **kwargs) -> UsageError:
    """The UsageError `parse` raises."""
    with pytest.raises(UsageError) as refused:
        parse(tmp_path, document, **kwargs)
    return refused.value


def says(tmp_path: Path, document, message: str, **kwargs) -> UsageError:
    """The refusal's one line is exactly `{path}: message`."""
    error = refusal(tmp_path, document, **kwargs)
    assert str(error) == f"{where(tmp_path)}: {message}"
    return error


DOCKERFILE = {".devcontainer/Dockerfile": "FROM base\n"}


def list_in_reverse(monkeypatch) -> None:
    """os.walk lists every folder's entries in the reverse order from now on."""
    walk = os.walk

    def reversed_walk(top):
        for root, dirs, files in walk(top):
            dirs.reverse()
            files.reverse()
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", reversed_walk)


def feature_folder(root: Path, name: str, metadata: dict | str = "{}", install: str = "echo hi\n") -> Path:
    """A Dev Container Feature in the folder `root / name`."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "devcontainer-feature.json").write_text(metadata if isinstance(metadata, str) else json.dumps(metadata))
    (folder / "install.sh").write_text(install)
    return folder


def tar_of(entries: dict[str, str | None]) -> bytes:
    """A tar of files (text) and symlinks (None: a link to /etc/passwd)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in entries.items():
            info = tarfile.TarInfo(name)
            if text is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                data = text.encode()
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


FEATURE_TAR = {"./devcontainer-feature.json": '{"id": "hello"}', "./install.sh": "#!/bin/sh\necho hello\n"}


def cache_of(target: str) -> Path:
    """Where a feature fetched from a registry is cached."""
    return Path(os.environ["XDG_CACHE_HOME"]) / "git-gpuspace" / "features" / hashlib.sha256(target.encode()).hexdigest()[:16]


def fetch_refusal(reference: str, clean: bool = True) -> UsageError:
    """The UsageError of fetching `reference`, with its hint; with clean, nothing left in the cache."""
    with pytest.raises(UsageError) as refused:
        features.fetch_oci(reference)
    assert refused.value.hint == ("check the reference and that the registry is reachable; a feature in a folder of the "
                                  "repository (\"./my-feature\") needs no registry")
    if clean:
        assert [p.name for p in cache_of("x").parent.iterdir()] == []  # nothing left behind
    return refused.value


DEPENDSON = "ghcr.io/codspace/dependson"
# The reference's published ghcr.io/codspace/dependson features, stood in for by metadata that
# gives its expected orders: a needs e; b needs a (other options) and c; c needs d.
DEPENDSON_REGISTRY = {
    f"{DEPENDSON}/a": {"id": "a", "dependsOn": {f"{DEPENDSON}/e": {"magicNumber": "50"}}},
    f"{DEPENDSON}/b": {"id": "b", "dependsOn": {f"{DEPENDSON}/a": {"magicNumber": "40"},
                                                f"{DEPENDSON}/c": {"magicNumber": "20"}}},
    f"{DEPENDSON}/c": {"id": "c", "dependsOn": {f"{DEPENDSON}/d": {"magicNumber": "30"}}},
    f"{DEPENDSON}/d": {"id": "d"},
    f"{DEPENDSON}/e": {"id": "e"},
}
