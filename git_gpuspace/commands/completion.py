"""`git gpuspace completion bash|zsh`: print a completion script for that shell."""

from __future__ import annotations

import argparse
import sys

from .. import completion
from ..cli import build_parser


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(completion.script(args.shell, build_parser()))
    return 0
