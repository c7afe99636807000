"""Sweep parameters: `-p key=v1,v2` axes, their cross product, and `{key}` in the command."""

from __future__ import annotations

import itertools
import re
import shlex

from ..errors import UsageError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_axes(specs: list[str]) -> dict[str, list[str]]:
    """['lr=1e-3,3e-4', 'batch=32,64'] -> {'lr': [...], 'batch': [...]}, in the order given."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not KEY.match(key):
            raise UsageError(f"invalid -p '{spec}'", hint="write -p NAME=V1,V2,... e.g. -p lr=1e-3,3e-4")
        if key in axes:
            raise UsageError(f"axis '{key}' is given twice")
        items = [value.strip() for value in values.split(",")]
        if not values.strip() or any(not item for item in items):
            raise UsageError(f"axis '{key}' has an empty value in '{spec}'")
        axes[key] = items
    return axes


def expand(axes: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the last axis varying fastest (as nested loops would)."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[key] for key in keys))]


def check(command: list[str], axes: dict[str, list[str]]) -> None:
    """Every placeholder has an axis and every axis is used: a typo is caught before any run."""
    used = {name for part in command for name in PLACEHOLDER.findall(part)}
    missing = sorted(used - set(axes))
    if missing:
        raise UsageError(f"the command uses {{{missing[0]}}}, but no -p {missing[0]}=... is given")
    unused = [key for key in axes if key not in used]
    if unused:
        raise UsageError(f"axis '{unused[0]}' is never used in the command",
                         hint=f"put {{{unused[0]}}} where its value goes")


def fill(command: list[str], params: dict[str, str]) -> list[str]:
    """An argument that is exactly `{key}` becomes the value; inside a longer argument (a shell
    string such as `sh -c 'train --lr {lr}'`) the value is shell-quoted."""
    filled = []
    for part in command:
        whole = PLACEHOLDER.fullmatch(part)
        if whole:
            filled.append(params[whole.group(1)])
        else:
            filled.append(PLACEHOLDER.sub(lambda m: shlex.quote(params[m.group(1)]), part))
    return filled
