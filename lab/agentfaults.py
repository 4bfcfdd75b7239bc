"""Faults of the lab nodes' agents themselves: one killed (SIGKILL), one frozen (SIGSTOP).

An agent of a lab node (``lab.nodes``) is the process recorded as ``agent-<node>``. A frozen
agent's socket still accepts connections (the kernel completes the handshake into its listen
backlog) but nothing answers: the aggregator sees a node that does not answer within its
per-node deadline. A killed one refuses connections (or breaks the one it was answering).

``heal(lab, names)`` thaws every frozen agent of ``names`` and restarts dead ones
(``nodes.ensure_nodes(..., agents=True)``), so the next user finds a healthy lab::

    try:
        agentfaults.kill(lab, "node-2")
        agentfaults.freeze(lab, "node-4")
        ...
    finally:
        agentfaults.heal(lab, ["node-2", "node-4"])
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from lab import nodes, services, state
from lab.errors import LabError
from lab.info import LabInfo

__all__ = ["agent_pid", "freeze", "heal", "kill"]


def agent_pid(lab: LabInfo | Path | str, name: str) -> int:
    """The pid of node ``name``'s running agent; LabError when it has none."""
    paths = nodes.lab_paths(lab)
    nodes.node_index(name)  # a lab node name, or LabError
    pid = state.recorded_pids(paths).get(f"agent-{name}")
    if pid is None or not services.owned(pid, paths.dir):
        raise LabError(f"{name} runs no agent (start it with ensure_nodes(..., agents=True))")
    return pid


def kill(lab: LabInfo | Path | str, name: str) -> int:
    """SIGKILL node ``name``'s agent (a crash); returns the pid it had."""
    pid = agent_pid(lab, name)
    os.kill(pid, signal.SIGKILL)
    return pid


def freeze(lab: LabInfo | Path | str, name: str) -> int:
    """SIGSTOP node ``name``'s agent; returns its pid (``heal`` sends SIGCONT)."""
    pid = agent_pid(lab, name)
    os.kill(pid, signal.SIGSTOP)
    return pid


def heal(lab: LabInfo | Path | str, names: list[str]) -> None:
    """Thaw the agents of ``names`` and restart those that died (and anything else broken of
    node-1..the highest of ``names``)."""
    paths = nodes.lab_paths(lab)
    pids = state.recorded_pids(paths)
    for name in names:
        nodes.node_index(name)
        pid = pids.get(f"agent-{name}")
        if pid is not None and services.owned(pid, paths.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    if names:
        nodes.ensure_nodes(lab, max(nodes.node_index(n) for n in names), agents=True)
