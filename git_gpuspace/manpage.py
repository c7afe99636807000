"""The man page git-gpuspace(1), generated from the argparse definition in `cli.py`.

    python -m git_gpuspace.manpage > man/git-gpuspace.1        # regenerate
    python -m git_gpuspace.manpage --check man/git-gpuspace.1  # exit 1 when stale

NAME, SYNOPSIS and COMMANDS come from the parser, so they cannot drift from the CLI; the
prose sections (FILES, ENVIRONMENT, EXIT STATUS, EXAMPLES, SEE ALSO) are data below. The
output depends on nothing but the parser and this module: no date, no terminal width.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import __version__, cliwalk

# ---------------------------------------------------------------------------------------------
# Prose. `code` is set in bold, <placeholder> in italics; one string per paragraph.

DESCRIPTION = [
    "Each worktree made by `git gpuspace add`, or bound with `git gpuspace bind`, is an ordinary "
    "git worktree: `git worktree list`, `git status`, commits and `git worktree remove` all work on it. "
    "Next to it runs one Docker container, named `gpuspace-<repo>-<worktree>-<hash>`, with the worktree "
    "mounted read-write at /workspace, the repository's git directory mounted at its own path, and "
    "exactly the GPUs bound to the worktree, numbered from 0 inside the container. It runs as your "
    "uid:gid, idle until you `docker exec` into it, and restarts with the engine unless stopped.",
    "A GPU held by one binding is never given to another, in any repository of any user on the host, "
    "unless both passed `--share`. GPUs are identified by UUID; indices are for display. The inventory "
    "comes from NVML, else from `nvidia-smi`, else there are no GPUs.",
    "A <worktree> argument is the worktree's path, its directory name or its branch.",
    "Settings come in layers, later ones winning: built-in defaults, the user configuration file, the "
    "repository defaults recorded by `git gpuspace init`, and the command-line options.",
    "`git gpuspace --help` opens this page; `git gpuspace <command> -h` prints a short usage.",
]

FILES = [
    (
        "<git-common-dir>/gpuspace.toml",
        "The repository's bindings and its [defaults] table, in the common git directory "
        "(`.git/gpuspace.toml` of the main worktree), shared by all worktrees. Written atomically "
        "with mode 0600; a file that cannot be parsed is reported and never overwritten.",
    ),
    ("<git-common-dir>/gpuspace.lock", "Held while `gpuspace.toml` is read and rewritten, so that concurrent commands never lose an update."),
    (
        "~/.config/git-gpuspace/config.toml",
        "User configuration (the platformdirs user config directory, `$XDG_CONFIG_HOME/git-gpuspace` on Linux): "
        "a [defaults] table with image, gpus, memory, cpus and shm_size.",
    ),
    (
        "~/.local/state/git-gpuspace/log/crash.log",
        "Where an internal error (exit status 70) writes its traceback: the platformdirs user log "
        "directory (`$XDG_STATE_HOME/git-gpuspace/log` on Linux).",
    ),
    (
        "<hooks-dir>/post-checkout, post-commit, post-merge",
        "Hooks installed by `git gpuspace init` and `git gpuspace hooks install`, in `core.hooksPath` "
        "or the common git directory's hooks/. An existing hook is kept and chained.",
    ),
]

ENVIRONMENT = [
    ("DOCKER_HOST", "The Docker engine to use (default unix:///var/run/docker.sock); DOCKER_TLS_VERIFY and DOCKER_CERT_PATH are honoured too."),
    (
        "GPUSPACE_LOCK_TIMEOUT",
        "Seconds to wait for the GPU claim (default 30) or the repository's lock (60) before giving up "
        "with an error that names the holder. The GPU claim is no file: it is a never-started container "
        "named gpuspace-claim on the engine, created by whoever claims GPUs and removed right after; one "
        "whose holder is provably dead, or that names the asking process itself, is taken over. Queued runs "
        "do not give up: the dispatcher tries again on its next turn and says once who holds the claim.",
    ),
    ("XDG_CONFIG_HOME", "Where the user configuration is looked up (default ~/.config)."),
    ("XDG_STATE_HOME", "Where the crash log is written (default ~/.local/state)."),
    ("PATH", "Searched for `git`, and for `nvidia-smi` when NVML cannot be loaded."),
]

EXIT_STATUS = [
    ("0", "Success."),
    ("1", "The command failed: engine unreachable, GPUs busy, image unavailable, bad state file, ..."),
    ("2", "Bad usage: unknown option, invalid branch name, malformed size or GPU spec."),
    ("70", "Internal error (a bug); the message names the log file that holds the details."),
    ("130", "Interrupted."),
]

EXAMPLES = [
    ("A new branch in a new worktree, with one free GPU:", "git gpuspace add -b feature/vit ../worktrees/vit --gpus 1"),
    ("An existing branch, GPUs 0 and 2, limits and an image:",
     "git gpuspace add ../worktrees/resnet feature/resnet50 --gpus 0,2 \\\n    --memory 64g --cpus 16 --image pytorch/pytorch:2.7.0-cuda12.6-cudnn9-runtime"),
    ("Give a worktree made by plain git its container:", "git worktree add ../worktrees/ablation\ngit gpuspace bind ../worktrees/ablation"),
    ("Every worktree with its container and GPUs, and who holds each GPU:", "git gpuspace status\ngit gpuspace gpus --json"),
    ("Remove the container and the worktree, freeing its GPUs; the branch stays:", "git gpuspace remove vit"),
    ("Let plain `git worktree add` bind new worktrees from now on:", "git gpuspace init --gpus 1 --memory 32g"),
    ("Shell completion, in ~/.bashrc:", 'eval "$(git gpuspace completion bash)"'),
]

SEE_ALSO = ["git(1)", "git-worktree(1)", "docker(1)", "nvidia-smi(1)"]

# ---------------------------------------------------------------------------------------------
# roff


def _escape(text: str) -> str:
    """Plain text to roff: backslashes and the hyphen-minus of options."""
    return text.replace("\\", "\\e")


def _literal(text: str) -> str:
    return _escape(text).replace("-", "\\-")


def _bold(text: str) -> str:
    return f"\\fB{_literal(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{_literal(text)}\\fR"


_INLINE = re.compile(r"`([^`]+)`|(<[\w-]+>)|((?<![\w/.-])--?[A-Za-z][\w-]*)")


def _inline(text: str) -> str:
    """Prose to roff: `code` and --options in bold, <placeholders> in italics."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(_escape(text[last:match.start()]))
        code, placeholder, option = match.groups()
        if code is not None:
            out.append(_bold_code(code))
        elif placeholder is not None:
            out.append(_italic(placeholder))
        else:
            out.append(_bold(option))
        last = match.end()
    out.append(_escape(text[last:]))
    return "".join(out)


def _bold_code(code: str) -> str:
    """`git gpuspace <command> -h`: bold, with its placeholders in italics."""
    parts = re.split(r"(<[\w-]+>)", code)
    return "".join(_italic(p) if p.startswith("<") and p.endswith(">") else _bold(p) for p in parts if p)


def _sentence(text: str) -> str:
    """argparse help ('create this branch') as a sentence ('Create this branch.')."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _lines(*lines: str) -> str:
    """Join roff lines; a text line that starts with . or ' is protected with \\&."""
    safe = []
    for line in lines:
        for part in line.split("\n"):
            if part[:1] in (".", "'") and not re.match(r'^\.([A-Za-z]{1,2}(\s|$)|\\")', part):
                part = "\\&" + part
            safe.append(part)
    return "\n".join(safe)


def _option_term(option: cliwalk.Option) -> str:
    flags = ", ".join(_bold(flag) for flag in option.flags)
    if option.choices:
        return f"{flags} {_italic('{' + ','.join(option.choices) + '}')}"
    if option.takes_value:
        return f"{flags} {_italic(option.metavar)}"
    return flags


def _positional_term(positional: cliwalk.Positional) -> str:
    if positional.choices:
        return "|".join(_bold(choice) for choice in positional.choices)
    return _italic(f"<{positional.metavar}>")


def _usage(command: cliwalk.Command, width: int = 78) -> str:
    """`remove [-f] [--keep-worktree] <worktree>`, or `[<options>]` when that is too long."""

    def plain_option(option: cliwalk.Option) -> str:
        value = f" <{option.metavar.strip('<>').lower()}>" if option.takes_value and not option.choices else ""
        return f"[{option.flags[0]}{value}]"

    def plain_positional(positional: cliwalk.Positional) -> str:
        text = "(" + "|".join(positional.choices) + ")" if positional.choices else f"<{positional.metavar}>"
        return f"[{text}]" if positional.optional else text

    options = [o for o in command.options if o.dest != "help"]
    words = [plain_option(o) for o in options]
    args = [plain_positional(p) for p in command.positionals]
    line = " ".join(["git gpuspace", command.name, *words, *args])
    if len(line) > width:
        line = " ".join(["git gpuspace", command.name, "[<options>]", *args])
    return line


def _roff_usage(usage: str) -> str:
    """A plain usage line in roff: literal words bold, <placeholders> italic, the rest roman."""
    out = []
    for token in re.split(r"(<[\w-]+>|[\[\]()| ])", usage):
        if token.startswith("<"):
            out.append(_italic(token))
        elif token in "[]()| ":
            out.append(token)
        else:
            out.append(_bold(token))
    return "".join(out)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    if parser is None:
        from .cli import build_parser

        parser = build_parser()
    commands = cliwalk.commands(parser)
    out: list[str] = [
        '.\\" Generated by `python -m git_gpuspace.manpage` from the argparse definition in cli.py.',
        '.\\" Do not edit: change the parser or git_gpuspace/manpage.py and regenerate.',
        f'.TH GIT\\-GPUSPACE 1 "" "git\\-gpuspace {_literal(__version__)}" "Git Manual"',
        ".SH NAME",
        f"git\\-gpuspace \\- {_inline(parser.description.rstrip('.').lower()[:1] + parser.description.rstrip('.')[1:])}",
        ".SH SYNOPSIS",
        ".nf",
        f"{_bold('git gpuspace')} [{_bold('--version')}] [{_bold('-h')}|{_bold('--help')}]",
    ]
    out += [_roff_usage(_usage(command)) for command in commands]
    out += [".fi", ".SH DESCRIPTION", _inline(parser.description)]
    for paragraph in DESCRIPTION:
        out += [".PP", _inline(paragraph)]

    out += [".SH OPTIONS"]
    for option in cliwalk.options(parser):
        out += [".TP", _option_term(option), _inline(_sentence(option.help))]

    out += [".SH COMMANDS"]
    for command in commands:
        title = command.name + "".join(f", {alias}" for alias in command.aliases)
        out += [f'.SS "{_literal(title)}"', _inline(_sentence(command.description))]
        for positional in command.positionals:
            out += [".TP", _positional_term(positional)] + ([_inline(_sentence(positional.help))] if positional.help else [])
        groups: dict[str | None, list[cliwalk.Option]] = {}
        for option in command.options:
            if option.dest != "help":
                groups.setdefault(option.group, []).append(option)
        for group, members in groups.items():
            if group:
                out += [".PP", f"{_sentence(group.capitalize()).rstrip('.')} options:"]
            for option in members:
                out += [".TP", _option_term(option), _inline(_sentence(option.help))]

    out += [".SH FILES"]
    for path, text in FILES:
        out += [".TP", _italic(path) if path.startswith("<") else _bold(path), _inline(text)]
    out += [".SH ENVIRONMENT"]
    for name, text in ENVIRONMENT:
        out += [".TP", _bold(name), _inline(text)]
    out += [".SH EXIT STATUS"]
    for code, text in EXIT_STATUS:
        out += [".TP", _bold(code), _inline(text)]
    out += [".SH EXAMPLES"]
    for text, example in EXAMPLES:
        out += [".PP", _inline(text), ".PP", ".RS 4", ".nf", _literal(example), ".fi", ".RE"]
    out += [".SH SEE ALSO", ",\n".join(_bold_ref(ref) for ref in SEE_ALSO)]
    return _lines(*out) + "\n"


def _bold_ref(ref: str) -> str:
    name, section = ref[:-1].split("(")
    return f"\\fB{_literal(name)}\\fR({section})"


# ---------------------------------------------------------------------------------------------
# Finding the page. A regular install puts it in <prefix>/share/man/man1, where man looks for the
# commands of <prefix>/bin on PATH; an editable install puts no data files anywhere, and git
# answers `git gpuspace --help` by running `man git-gpuspace` without asking us.

PAGE = "git-gpuspace"


def beside_source() -> Path | None:
    """The page of a source checkout (an editable install runs from one); None in an installed package."""
    page = Path(__file__).resolve().parent.parent / "man" / f"{PAGE}.1"
    return page if page.is_file() else None


def link_for_man(script: Path) -> None:
    """An editable install's page linked where man looks for the commands beside `script`
    (<prefix>/bin/git-gpuspace: <prefix>/share/man/man1), as a regular install puts it; so
    `git gpuspace --help` finds it from then on. Nothing when it cannot be written."""
    source = beside_source()
    target = script.parent.parent / "share" / "man" / "man1" / f"{PAGE}.1"
    if source is None or os.path.lexists(target):
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, target)  # a link: the page regenerated in the checkout is the one shown
    except OSError:
        pass  # a prefix that is not ours to write: `git-gpuspace --help` still shows the page


def show(parser: argparse.ArgumentParser) -> int:
    """`git-gpuspace --help`: this page, as `git gpuspace --help` shows it (installed, or the
    checkout's), else the parser's help where there is no man or no page; never an error."""
    man = shutil.which("man")
    if man is not None:
        if subprocess.run([man, "-w", PAGE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            shown = subprocess.run([man, PAGE])
        else:
            source = beside_source()
            shown = subprocess.run([man, "-l", str(source)]) if source is not None else None
        if shown is not None and shown.returncode == 0:
            return 0
    parser.print_help()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m git_gpuspace.manpage", description="Print the git-gpuspace(1) man page, generated from the CLI.")
    ap.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from what would be generated")
    ap.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        path = Path(args.check)
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            return 0
        sys.stderr.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path), "generated", n=1))
        print(f"{path} is stale; regenerate it with: python -m git_gpuspace.manpage -o {path}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
