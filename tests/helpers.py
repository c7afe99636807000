"""Helpers the test files share: git on the command line, commits, a refusal's one error line,
devcontainer files and the state file of a test repository.

Fixtures live in conftest.py; these are plain functions, imported where used
(`from helpers import git`), as tests/ is on sys.path with conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

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

