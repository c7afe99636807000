"""Read the argparse definition of `git gpuspace` as plain data.

The man page and the shell completions are both generated from `cli.build_parser()`
through this module, so neither can list a command or an option that the parser lacks.
It reads argparse's internals (`_actions`, `_action_groups`, `_choices_actions`), which
have been stable across Python 3.8 to 3.13.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

# argparse's own group titles; any other title is one the CLI chose ("container").
_DEFAULT_GROUPS = {"positional arguments", "options", "optional arguments"}


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # ('-f', '--force')
    dest: str
    metavar: str | None  # None: a flag that takes no value
    help: str
    choices: tuple[str, ...] | None = None
    group: str | None = None

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None


@dataclass(frozen=True)
class Positional:
    dest: str
    metavar: str
    help: str
    optional: bool
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    summary: str  # the one-line help shown in the command list
    description: str  # the longer description, or the summary
    options: tuple[Option, ...] = field(default_factory=tuple)
    positionals: tuple[Positional, ...] = field(default_factory=tuple)


def _group_titles(parser: argparse.ArgumentParser) -> dict[int, str]:
    titles = {}
    for group in parser._action_groups:
        if group.title and group.title not in _DEFAULT_GROUPS:
            for action in group._group_actions:
                titles[id(action)] = group.title
    return titles


def options(parser: argparse.ArgumentParser) -> list[Option]:
    """The optional arguments of one parser, in definition order, hidden ones left out."""
    titles = _group_titles(parser)
    found = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        metavar = None
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
        found.append(
            Option(
                flags=tuple(action.option_strings),
                dest=action.dest,
                metavar=metavar,
                help=action.help or "",
                choices=tuple(action.choices) if action.choices else None,
                group=titles.get(id(action)),
            )
        )
    return found


def positionals(parser: argparse.ArgumentParser) -> list[Positional]:
    found = []
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        found.append(
            Positional(
                dest=action.dest,
                metavar=action.metavar or action.dest,
                help=action.help or "",
                optional=action.nargs in ("?", "*"),
                choices=tuple(action.choices) if action.choices else None,
            )
        )
    return found


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError("the parser has no subcommands")


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command people may type, in definition order; verbs named `_...` are internal."""
    action = _subparsers(parser)
    summaries = {pseudo.dest: pseudo.help or "" for pseudo in action._choices_actions}
    found: list[Command] = []
    seen: set[int] = set()
    for name, sub in action.choices.items():
        if id(sub) in seen or name.startswith("_"):
            continue
        seen.add(id(sub))
        aliases = tuple(other for other, p in action.choices.items() if p is sub and other != name)
        summary = summaries.get(name, "")
        found.append(
            Command(
                name=name,
                aliases=aliases,
                summary=summary,
                description=sub.description or summary,
                options=tuple(options(sub)),
                positionals=tuple(positionals(sub)),
            )
        )
    return found
