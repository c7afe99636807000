"""Sweep parameters: `-p key=v1,v2` axes, their cross product, and `{key}` in the command."""

from __future__ import annotations

import itertools
import re
import shlex
import sys

from ..errors import UsageError
from ..output import printable

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_axes(specs: list[str]) -> dict[str, list[str]]:
    """['lr=1e-3,3e-4', 'batch=32,64'] -> {'lr': [...], 'batch': [...]}, in the order given."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not KEY.fullmatch(key):
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
    """Every placeholder has an axis: a typo in `{key}` is caught before any run. An axis the
    command does not name is fine: it reaches the command as GPUSPACE_PARAM_<KEY> (a script
    reading its environment), and a one-line note says so unless the command names that variable."""
    used = {name for part in command for name in PLACEHOLDER.findall(part)}
    missing = sorted(used - set(axes))
    if missing:
        raise UsageError(f"the command uses {{{missing[0]}}}, but no -p {missing[0]}=... is given")
    text = " ".join(command)
    unnamed = [key for key in axes if key not in used and env_name(key) not in text]
    if unnamed:  # a key from a grid file's [[sets]] may hold anything: printed escaped
        print(printable(f"git-gpuspace: note: the command does not name {', '.join('{' + key + '}' for key in unnamed)}: "
              f"{'its value reaches' if len(unnamed) == 1 else 'their values reach'} it only as "
              f"{', '.join('$' + env_name(key) for key in unnamed)}"), file=sys.stderr)


def env_name(key: str) -> str:
    """The environment variable a run's parameter is in (as runs.model sets it)."""
    return "GPUSPACE_PARAM_" + re.sub(r"[^A-Za-z0-9_]", "_", key).upper()


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


def load_grid_file(path: str) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """A TOML grid: `[axes]` (each a list of values: their cross product) and/or `[[sets]]`
    (explicit parameter sets). Values are text as the command gets them: write a string to keep
    a number's spelling (`"1e-3"`; TOML reads 1e-3 as the float 0.001)."""
    from ..installation import tomllib
    from ..untrusted_files import read_bytes

    try:  # a file in the worktree, which a container can swap for a FIFO: refused, not waited on
        document = tomllib.loads(read_bytes(path, follow_symlinks=True).decode("utf-8", errors="replace"))
    except OSError as error:
        raise UsageError(f"cannot read the grid file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"the grid file {path} does not parse: {error}") from None
    unknown = sorted(set(document) - {"axes", "sets"})
    if unknown or not document:
        raise UsageError(f"the grid file {path} needs [axes] and/or [[sets]]"
                         + (f", not {', '.join(unknown)}" if unknown else ""))
    axes = {}
    for key, values in (document.get("axes") or {}).items():
        if not KEY.fullmatch(key):
            raise UsageError(f"{path}: axes.{key!r} is not a parameter name",
                             hint="letters, digits and '_', not starting with a digit: it names GPUSPACE_PARAM_<NAME>")
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path}: axes.{key} must be a non-empty list of values")
        axes[key] = [_text(path, f"axes.{key}", value) for value in values]
    sets = []
    for index, entry in enumerate(document.get("sets") or []):
        if not isinstance(entry, dict) or not entry:
            raise UsageError(f"{path}: sets[{index}] must be a table of values")
        sets.append({key: _text(path, f"sets[{index}].{key}", value) for key, value in entry.items()})
    return axes, sets


def _text(path: str, where: str, value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    raise UsageError(f"{path}: {where} must be a string or a number")


def parameter_sets(command: list[str], axes: dict[str, list[str]], sets: list[dict[str, str]],
                   sample: int | None, seed: int | None) -> list[dict[str, str]]:
    """The axes' cross product, then the explicit sets; with `sample`, that many of them drawn
    at random (reproducibly with `seed`). Checked against the command's placeholders."""
    import random

    grid = (expand(axes) if axes else []) + sets
    if not grid:
        raise UsageError("a sweep needs at least one axis or parameter set", hint="add -p NAME=V1,V2,... or --grid-file")
    keys = {key for params in grid for key in params}
    check(command, {key: [] for key in keys})
    used = {name for part in command for name in PLACEHOLDER.findall(part)}
    for params in grid:
        missing = sorted(used - set(params))
        if missing:
            raise UsageError(f"the parameter set {params} has no value for {{{missing[0]}}}")
    if sample is not None:
        if not 1 <= sample <= len(grid):
            raise UsageError(f"--random {sample} is not between 1 and the grid's {len(grid)} parameter sets")
        grid = random.Random(seed).sample(grid, sample)
    return grid
