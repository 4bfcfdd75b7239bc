"""Options the benchmarks share: bounded whole numbers, ``--env NAME=VALUE``, and ``--tree``
(before/after runs).

``git archive REV | tar -x -C DIR`` unpacks a revision; :func:`use_tree` then makes every
``python -m agent`` (and every script) the benchmark starts import DIR's ``agent`` package.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {high} (got {text!r})")
        return number

    return parse


def env_setting(text: str) -> tuple[str, str]:
    """An argparse ``type``: ``NAME=VALUE``, a variable for the processes a benchmark starts."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (got {text!r})")
    return key, value


def use_tree(tree: Path) -> Path:
    """Make ``tree`` the working directory and first path entry of every child process, check
    that the interpreter then loads its ``agent`` package, and return it resolved."""
    tree = tree.resolve()
    if not (tree / "agent" / "__init__.py").is_file():
        raise SystemExit(f"--tree {tree}: no agent/__init__.py there")
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)  # ``python -m`` puts the working directory first on the path
    loaded = subprocess.run(
        [sys.executable, "-c", "import agent; print(agent.__file__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(loaded).resolve().is_relative_to(tree):
        raise SystemExit(f"--tree {tree}: the interpreter loads {loaded} instead")
    return tree
