"""A declared cluster: which lab nodes run, on which containerd, with which faults.

A scenario file (TOML)::

    [nodes.node-1]                 # healthy, containerd 1.6 (the default)
    [nodes.node-2]
    runtime = "2"                  # "1.6", "1.7" or "2"
    faults = ["dns-nxdomain"]      # lab.nodefaults.KINDS
    [nodes.node-3]
    faults = ["registry-refused", "ca-missing"]

``apply(lab_dir, parse(text))`` (``python -m lab scenario FILE``) starts node-1..node-N (N = the
highest node named) with their agents, gives each declared node its runtime and exactly its
faults (faults it had and the file does not list are switched off). Nodes the file does not
name are left as they are.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lab import nodefaults, nodes, runtimes
from lab.errors import LabError

__all__ = ["MAX_BYTES", "NodePlan", "apply", "load", "parse"]

MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class NodePlan:
    name: str
    runtime: str = "1.6"
    faults: tuple[str, ...] = field(default_factory=tuple)


def parse(text: str) -> list[NodePlan]:
    """The node plans of a scenario file; LabError naming the first thing wrong."""
    if len(text.encode()) > MAX_BYTES:
        raise LabError(f"scenario file larger than {MAX_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"scenario file: {e}") from e
    unknown = set(data) - {"nodes"}
    if unknown:
        raise LabError(f"scenario file: unknown key(s) {', '.join(sorted(unknown))}")
    table = data.get("nodes", {})
    if not isinstance(table, dict) or not table:
        raise LabError("scenario file: no [nodes.<name>] table")
    plans = [_plan(name, spec) for name, spec in table.items()]
    return sorted(plans, key=lambda p: nodes.node_index(p.name))


def load(path: Path) -> list[NodePlan]:
    """``parse`` the file at ``path`` (read at most ``MAX_BYTES`` + 1 bytes)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise LabError(f"scenario file {path}: {e.strerror}") from e
    try:
        return parse(raw.decode())
    except UnicodeDecodeError as e:
        raise LabError(f"scenario file {path}: not UTF-8 ({e.reason})") from e


def _plan(name: str, spec: object) -> NodePlan:
    where = f"nodes.{name}"
    nodes.node_index(name)
    if not isinstance(spec, dict):
        raise LabError(f"scenario file: {where} must be a table")
    unknown = set(spec) - {"runtime", "faults"}
    if unknown:
        raise LabError(f"scenario file: {where}: unknown key(s) {', '.join(sorted(unknown))}")
    runtime = spec.get("runtime", "1.6")
    if not isinstance(runtime, str):
        raise LabError(f"scenario file: {where}.runtime must be a string")
    runtimes.check(runtime)
    faults = spec.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise LabError(f"scenario file: {where}.faults must be a list of strings")
    for kind in faults:
        if kind not in nodefaults.KINDS:
            raise LabError(
                f"scenario file: {where}.faults: unknown fault {kind!r}; "
                f"one of: {', '.join(nodefaults.KINDS)}"
            )
    return NodePlan(name, runtime, tuple(dict.fromkeys(faults)))


def apply(lab_dir: Path | str, plans: list[NodePlan]) -> None:
    """Make the lab's nodes what ``plans`` say (see the module docstring)."""
    count = max(nodes.node_index(p.name) for p in plans)
    nodes.ensure_nodes(lab_dir, count, agents=True)
    for plan in plans:
        nodes.set_runtime(lab_dir, [plan.name], plan.runtime)
        for kind in nodefaults.active(nodes.lab_paths(lab_dir), plan.name):
            if kind not in plan.faults:
                nodefaults.set_fault(lab_dir, plan.name, kind, False)
        for kind in plan.faults:
            nodefaults.set_fault(lab_dir, plan.name, kind, True)
