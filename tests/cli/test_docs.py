"""The documentation that ships with the package: the man page and the changelog.

The man page is generated from the parser; these tests fail when the checked-in copy is
stale, when roff warns about it, or when an installed package does not let git open it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from git_gpuspace import __version__, cliwalk, manpage
from git_gpuspace.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MAN_PAGE = ROOT / "man" / "git-gpuspace.1"
REQUIRED = os.environ.get("GPUSPACE_TEST_ENGINE") == "required"


def need(tool: str) -> str:
    """The tool's path; a missing tool fails the test where the suite runs for real."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (scripts/engine-up installs it)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_man_page_is_current():
    assert MAN_PAGE.read_text(encoding="utf-8") == manpage.render(), (
        "man/git-gpuspace.1 is stale; regenerate it with: python -m git_gpuspace.manpage -o man/git-gpuspace.1"
    )


def test_man_page_check_flag_reports_staleness(tmp_path):
    fresh = subprocess.run([sys.executable, "-m", "git_gpuspace.manpage", "--check", str(MAN_PAGE)], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    stale = tmp_path / "git-gpuspace.1"
    stale.write_text(MAN_PAGE.read_text().replace(".SH FILES", ".SH FILEZ"))
    result = subprocess.run([sys.executable, "-m", "git_gpuspace.manpage", "--check", str(stale)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "FILEZ" in result.stderr and "is stale" in result.stderr


def test_man_page_does_not_depend_on_the_terminal(monkeypatch):
    expected = manpage.render()
    monkeypatch.setenv("COLUMNS", "30")
    assert manpage.render() == expected


def test_man_page_covers_every_command_and_option():
    text = MAN_PAGE.read_text()
    commands = cliwalk.commands(build_parser())
    assert {c.name for c in commands} >= {"add", "bind", "remove", "status", "gpus", "prune", "init", "hooks", "completion"}
    for command in commands:
        assert f'.SS "{manpage._literal(command.name)}' in text
        for option in command.options:
            for flag in option.flags:
                assert manpage._bold(flag) in text, f"{command.name} {flag}"
    assert "_hook" not in text  # internal verbs stay out
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "FILES", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert f".SH {section}\n" in text
    for needle in ("gpuspace.toml", "gpuspace.lock", "config.toml", "crash.log", "named gpuspace-claim",
                   "DOCKER_HOST", "GPUSPACE_LOCK_TIMEOUT", "XDG_CONFIG_HOME", "\\fB130\\fR", "\\fB70\\fR",
                   "\\fBgit\\-worktree\\fR(1)", "\\fBdocker\\fR(1)", f"git\\-gpuspace {__version__}"):
        assert needle in text, needle


def test_man_page_renders_without_warnings():
    groff = need("groff")
    result = subprocess.run([groff, "-man", "-ww", "-z", str(MAN_PAGE)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_installed_package_opens_the_man_page_for_git_help(tmp_path):
    """A non-editable `pip install .` puts the page where man finds it from PATH."""
    need("man")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(source)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (venv / "share" / "man" / "man1" / "git-gpuspace.1").read_text() == MAN_PAGE.read_text()

    system_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not Path(p, "git-gpuspace").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env.update(MANPAGER="cat", PAGER="cat", MANWIDTH="80", PATH=f"{venv / 'bin'}{os.pathsep}{system_path}")
    for argv in (["git", "gpuspace", "--help"], ["git", "help", "gpuspace"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "GIT-GPUSPACE(1)" in result.stdout and "EXIT STATUS" in result.stdout, result.stdout[:500]

    # Without the package's bin on PATH, man has no page: the one above came from the install.
    env["PATH"] = system_path
    missing = subprocess.run(["git", "help", "gpuspace"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode != 0


# ---------------------------------------------------------------------------------------------
# CHANGELOG.md

CHANGELOG = ROOT / "CHANGELOG.md"
_RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\S+))?\s*$", re.MULTILINE)
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")


def changelog_releases() -> list[tuple[str, str | None]]:
    return [(m["version"], m["date"]) for m in _RELEASE.finditer(CHANGELOG.read_text(encoding="utf-8"))]


def test_changelog_top_release_is_the_package_version():
    released = [(version, date) for version, date in changelog_releases() if version != "Unreleased"]
    assert released, "CHANGELOG.md lists no release"
    assert released[0][0] == __version__, (
        f"CHANGELOG.md's newest release is {released[0][0]} but git_gpuspace.__version__ is {__version__}"
    )


def test_changelog_follows_keep_a_changelog_and_semver():
    releases = changelog_releases()
    assert releases[0] == ("Unreleased", None), "the first section is [Unreleased]"
    versions = []
    for version, date in releases[1:]:
        assert _SEMVER.match(version), f"{version} is not a SemVer version"
        assert date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), f"[{version}] needs a date as YYYY-MM-DD"
        versions.append(tuple(int(part) for part in version.split("-")[0].split(".")))
    assert versions == sorted(versions, reverse=True), "releases go newest first"
    assert len(set(versions)) == len(versions), "a version is listed twice"
    text = CHANGELOG.read_text(encoding="utf-8")
    for kind in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert kind in ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"), kind


def test_version_option_prints_the_package_version():
    result = subprocess.run([sys.executable, "-m", "git_gpuspace.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"git-gpuspace {__version__}"


def test_every_test_security_md_cites_exists():
    """docs/SECURITY.md proves each guarantee by naming a test: the names must stay true."""
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    cited = re.findall(r"`(?:tests/)?((?:\w+/)*test_\w+\.py)(?:::(test_\w+))?`", text)
    assert len(cited) >= 15
    for module, name in cited:
        source = (ROOT / "tests" / module).read_text()
        assert not name or f"def {name}(" in source, f"docs/SECURITY.md cites {module}::{name}, which does not exist"


def test_git_gpuspace_help_finds_the_man_page_from_the_test_install():
    """`git gpuspace --help` runs `man git-gpuspace`, which looks in ../share/man of each PATH
    entry: the editable install of scripts/engine-up puts the page there, as pip does for a
    regular install."""
    if shutil.which("man") is None:
        pytest.skip("no man here")
    bin_dir = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items() if key != "MANPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    found = subprocess.run(["man", "-w", "git-gpuspace"], capture_output=True, text=True, env=env)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).read_text() == MAN_PAGE.read_text()
    shown = subprocess.run(["git", "gpuspace", "--help"], capture_output=True, text=True,
                           env={**env, "MANPAGER": "cat", "PAGER": "cat"})
    assert shown.returncode == 0 and "gpuspace" in shown.stdout
