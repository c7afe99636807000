"""Shell completion: `git gpuspace completion bash|zsh`, run in the real shells.

Bash: git's own completion (/usr/share/bash-completion/completions/git) plus our script,
with COMP_WORDS split the way readline splits them (at = and :), then `__git_main` for
`git gpuspace ...` and our `complete -F` function for `git-gpuspace ...`; COMPREPLY is
what is checked. Zsh: the script is loaded after compinit in an interactive zsh on a
pseudo-terminal, a TAB is sent, and the matches handed to compadd are captured.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from git_gpuspace import cliwalk
from git_gpuspace.cli import build_parser

from conftest import gpuspace

GIT_COMPLETION = Path("/usr/share/bash-completion/completions/git")
REQUIRED = os.environ.get("GPUSPACE_TEST_ENGINE") == "required"


def need(what: str, present: bool) -> None:
    if not present:
        message = f"{what} is not installed (scripts/engine-up installs it)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def script(shell: str, cwd: Path) -> str:
    result = gpuspace("completion", shell, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def checkout(plain_repo, tmp_path, monkeypatch):
    """A repo with a linked worktree, a directory to complete, and an nvidia-smi that answers
    the index query exactly as the driver's does (indices 0, 1 and 3: GPU 2 is not there)."""
    plain_repo.git("worktree", "add", "-q", str(tmp_path / "worktrees" / "resnet"), "feature/resnet50")
    (plain_repo.path / "configs" / "vit").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        '#!/bin/sh\n[ "$*" = "--query-gpu=index --format=csv,noheader" ] || { echo "unexpected: $*" >&2; exit 2; }\n'
        "printf '0\\n1\\n3\\n'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return plain_repo


# ---------------------------------------------------------------------------------------------
# bash


def comp_words(line: str) -> list[str]:
    """COMP_WORDS as bash fills them: split at blanks, and = and : are words of their own."""
    words: list[str] = []
    current = ""
    for char in line:
        if char.isspace():
            if current:
                words.append(current)
            current = ""
        elif char in "=:":
            if current:
                words.append(current)
            words.append(char)
            current = ""
        else:
            current += char
    if current:
        words.append(current)
    if not line or line[-1].isspace():
        words.append("")
    return words


def _bash_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash_complete(repo, lines: list[str], load_git: bool = True) -> dict[str, list[str]]:
    """COMPREPLY for each command line, completed at its end."""
    assert shutil.which("bash")
    need(f"git's bash completion ({GIT_COMPLETION})", GIT_COMPLETION.exists())
    driver = [f"source {_bash_quote(str(GIT_COMPLETION))}" if load_git else "", 'eval "$(git-gpuspace completion bash)"']
    for line in lines:
        words = " ".join(_bash_quote(w) for w in comp_words(line))
        entry = "__git_func_wrap __git_main" if line.startswith("git ") else "__git_gpuspace_main"
        driver += [
            f"COMP_LINE={_bash_quote(line)}; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=()",
            entry,
            "printf '%s\\n' '@@@' \"${COMPREPLY[@]}\"",
        ]
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(driver)], cwd=repo.path, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr
    blocks = result.stdout.split("@@@\n")[1:]
    assert len(blocks) == len(lines), result.stdout
    return {line: [w for w in block.split("\n") if w] for line, block in zip(lines, blocks)}


def test_bash_completes_commands_and_options_from_the_parser(checkout):
    commands = cliwalk.commands(build_parser())
    names = [name for c in commands for name in (c.name, *c.aliases)]
    lines = ["git gpuspace ", "git gpuspace re", "git gpuspace -", "git-gpuspace st"]
    lines += [f"git gpuspace {c.name} -" for c in commands]
    got = bash_complete(checkout, lines)
    assert got["git gpuspace "] == [f"{name} " for name in names]
    assert "_hook " not in got["git gpuspace "]
    assert got["git gpuspace re"] == ["remove ", "restart "]
    assert got["git gpuspace -"] == ["-h ", "--help ", "--version "]
    assert got["git-gpuspace st"] == ["status ", "start ", "stop "]
    for command in commands:
        assert got[f"git gpuspace {command.name} -"] == [f"{flag} " for o in command.options for flag in o.flags]
    assert "--keep-worktree " in got["git gpuspace remove -"]
    assert "--no-start " in got["git gpuspace add -"]


def test_bash_completes_worktrees_by_path_name_and_branch(checkout):
    linked = str(checkout.path.parent / "worktrees" / "resnet")
    got = bash_complete(checkout, ["git gpuspace remove ", "git gpuspace rm res", "git gpuspace stop feature/", "git-gpuspace bind " + linked[:-3],
                                   "git gpuspace remove --keep-worktree ", "git gpuspace remove x "])
    assert set(got["git gpuspace remove "]) == {f"{checkout.path} ", "project ", "main ", f"{linked} ", "resnet ", "feature/resnet50 "}
    assert got["git gpuspace rm res"] == ["resnet "]
    assert got["git gpuspace stop feature/"] == ["feature/resnet50 "]
    assert f"{linked} " in got["git-gpuspace bind " + linked[:-3]]
    assert "resnet " in got["git gpuspace remove --keep-worktree "]
    # the one positional is taken: the options are what is left
    assert got["git gpuspace remove x "] == ["-h ", "--help ", "-f ", "--force ", "--keep-worktree ", "--purge "]


def test_bash_completes_gpu_indices_for_gpus(checkout):
    got = bash_complete(checkout, ["git gpuspace add --gpus ", "git gpuspace add --gpus 0,", "git gpuspace bind --gpus 3,0,",
                                   "git gpuspace add --gpus=", "git gpuspace add --gpus=1,", "git-gpuspace init --gpus a",
                                   "git-gpuspace add --gpus=0,"])
    assert got["git gpuspace add --gpus "] == ["0,", "1,", "3,", "all ", "none "]  # `1` alone would be a count
    assert got["git gpuspace add --gpus 0,"] == ["0,1,", "0,3,"]
    assert got["git gpuspace bind --gpus 3,0,"] == ["3,0,1,"]
    # after `=` bash replaces only what follows it
    assert got["git gpuspace add --gpus="] == ["0,", "1,", "3,", "all ", "none "]
    assert got["git gpuspace add --gpus=1,"] == ["1,0,", "1,3,"]
    assert got["git-gpuspace init --gpus a"] == ["all "]
    assert got["git-gpuspace add --gpus=0,"] == ["0,1,", "0,3,"]


def test_bash_completes_paths_branches_and_choices(checkout):
    got = bash_complete(checkout, ["git gpuspace add con", "git gpuspace add configs/", "git gpuspace add -b new ../x feat",
                                   "git gpuspace add --detach ../x ma", "git gpuspace hooks ", "git gpuspace completion z",
                                   "git gpuspace hooks install "])
    assert got["git gpuspace add con"] == ["configs/"]
    assert got["git gpuspace add configs/"] == ["configs/vit/"]
    assert got["git gpuspace add -b new ../x feat"] == ["feature/resnet50 "]  # -b took `new`
    assert got["git gpuspace add --detach ../x ma"] == ["main "]
    assert got["git gpuspace hooks "] == ["install ", "uninstall ", "status "]
    assert got["git gpuspace completion z"] == ["zsh "]
    assert got["git gpuspace hooks install "] == ["-h ", "--help ", "--pre-push "]


def test_bash_completes_git_gpuspace_without_gits_completion(checkout):
    """The git-gpuspace command alone, in a shell that never loaded git's completion."""
    got = bash_complete(checkout, ["git-gpuspace re", "git-gpuspace remove res", "git-gpuspace add --gpus=1,"], load_git=False)
    assert got == {"git-gpuspace re": ["remove ", "restart "], "git-gpuspace remove res": ["resnet "],
                   "git-gpuspace add --gpus=1,": ["1,0,", "1,3,"]}


def test_bash_script_registers_both_entry_points(checkout):
    driver = 'eval "$(git-gpuspace completion bash)"; complete -p git-gpuspace; declare -F _git_gpuspace'
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver], cwd=checkout.path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "-F __git_gpuspace_main git-gpuspace" in result.stdout
    assert "_git_gpuspace" in result.stdout


def test_completion_refuses_other_shells(plain_repo):
    result = gpuspace("completion", "fish", cwd=plain_repo.path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# ---------------------------------------------------------------------------------------------
# zsh

# Drives an interactive zsh on a pseudo-terminal: loads compinit and the script, replaces
# compadd with one that prints each match, types the line and a TAB, and exits after completing.
ZSH_CAPTURE = r"""
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PROMPT='' RPROMPT='' PS2=''"
zpty -w z "autoload -Uz compinit && compinit -u -D"
zpty -w z "source ${(q)1}"
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  local -a __hits apre hpre hsuf asuf
  builtin compadd -A __hits "$@"
  zparseopts -E P:=apre p:=hpre S:=asuf s:=hsuf
  local h
  for h in $__hits; do print -r -- "MA""TCH<$IPREFIX${apre[2]}${hpre[2]}$h${hsuf[2]}${asuf[2]}>"; done
}'
zpty -w z 'comppostfuncs=( exit )'
zpty -n -w z "$2"$'\t'
while zpty -r z chunk; do print -rn -- $chunk; done
"""


@pytest.fixture
def zsh_script(checkout, tmp_path):
    need("zsh", shutil.which("zsh") is not None)
    path = tmp_path / "_git-gpuspace"
    path.write_text(script("zsh", checkout.path))
    return path


def zsh_complete(repo, script_path: Path, line: str) -> list[str]:
    capture = script_path.parent / "capture.zsh"
    capture.write_text(ZSH_CAPTURE)
    result = subprocess.run(["zsh", "-f", str(capture), str(script_path), line], cwd=repo.path, capture_output=True, text=True, timeout=30)
    return re.findall(r"MATCH<([^>\r\n]*)>", result.stdout)


def test_zsh_script_parses_and_defines_the_completion_function(zsh_script, checkout):
    syntax = subprocess.run(["zsh", "-n", str(zsh_script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert zsh_script.read_text().startswith("#compdef git-gpuspace\n")
    probe = f"autoload -Uz compinit && compinit -u -D && source {zsh_script} && whence -w _git-gpuspace && print -r -- $_comps[git-gpuspace]"
    loaded = subprocess.run(["zsh", "-f", "-c", probe], cwd=checkout.path, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split("\n")[:2] == ["_git-gpuspace: function", "_git-gpuspace"]


def test_zsh_completes_commands_options_worktrees_and_gpus(zsh_script, checkout):
    def complete(line: str) -> list[str]:
        return sorted(zsh_complete(checkout, zsh_script, line))  # zsh sorts and groups as it likes

    commands = cliwalk.commands(build_parser())
    assert complete("git gpuspace ") == sorted(n for c in commands for n in (c.name, *c.aliases))
    assert complete("git-gpuspace re") == ["remove", "restart"]
    remove = next(c for c in commands if c.name == "remove")
    assert complete("git gpuspace remove -") == sorted(f for o in remove.options for f in o.flags)
    assert set(complete("git gpuspace stop ")) >= {"project", "main", "resnet", "feature/resnet50"}
    assert complete("git-gpuspace add --gpus ") == ["0,", "1,", "3,", "all", "none"]
    assert complete("git-gpuspace add --gpus=0,") == ["--gpus=0,1,", "--gpus=0,3,"]
    assert complete("git gpuspace add --detach ../x ma") == ["main"]
    assert complete("git gpuspace hooks ") == ["install", "status", "uninstall"]
