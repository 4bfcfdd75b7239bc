"""Recovery figures for faults of the system itself (issue 12), measured on the lab, whole-process.

Three figures, each over ``--rounds`` rounds (medians, with min and max):

* ``containerd``: on lab node ``--node`` (its own containerd and its own agent process), SIGKILL
  containerd, time until the agent's ``/readyz`` says 503; then restart containerd
  (``lab.nodes.restart_containerd``, which returns once CRI answers) and time from that moment
  until ``/readyz`` says 200 again — the agent is never restarted (its pid is checked);
* ``registry-kill``: ``pullcheck pull`` (the CLI, a process of its own, on the lab's main
  containerd) of the 64 MiB ``big`` image through ``lab.chaos.ChaosProxy``, killed after 1 MiB of
  a blob: time from the kill to the process's exit with a named cause;
* ``registry-stall``: the same with the proxy stalling every blob after 1 MiB: time from the stall
  to the exit with ``timeout``, against the test's ``--stall-deadline``.

The agent reuses a readiness answer for 5 s (``agent.node.state._READY_TTL``), so both readiness
figures are bounded by that, not by containerd. Run as root, with the lab up and nobody else
using it: ``flock /tmp/pullcheck-lab.lock .venv/bin/python bench/bench_recovery.py --rounds 3``.
Never point ``--node`` at a node another run is using.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from lab import chaos, control, cri, nodefiles, nodes, scenario, services, state
from lab.info import LabInfo

MIB = 1024 * 1024
POLL = 0.02  # seconds between /readyz polls
BOUND = 60.0  # seconds any one state is waited for


def _until(what: str, check: Callable[[], bool]) -> float:
    """time.monotonic() when ``check()`` first held (polled every POLL s)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL)
    raise SystemExit(f"{what}: not within {BOUND:g} s")


def _containerd_round(lab: LabInfo, name: str, agent: httpx.Client) -> dict[str, float]:
    paths = nodes.lab_paths(lab)
    pids = state.recorded_pids(paths)
    agent_pid = pids[f"agent-{name}"]

    def status() -> int:
        return agent.get("/readyz").status_code

    _until("agent ready before the round", lambda: status() == 200)
    killed = time.monotonic()
    os.kill(pids[f"containerd-{name}"], signal.SIGKILL)
    not_ready = _until("/readyz 503", lambda: status() == 503)
    restart = time.monotonic()
    nodes.restart_containerd(lab, name)
    cri_back = time.monotonic()
    ready = _until("/readyz 200", lambda: status() == 200)
    if state.recorded_pids(paths)[f"agent-{name}"] != agent_pid or not services.owned(
        agent_pid, paths.dir
    ):
        raise SystemExit(f"the agent of {name} was restarted: the figure would be wrong")
    return {
        "kill_to_not_ready_s": not_ready - killed,
        "restart_to_cri_s": cri_back - restart,
        "cri_to_agent_ready_s": ready - cri_back,
        "restart_to_agent_ready_s": ready - restart,
    }


def _registry_round(lab: LabInfo, action: chaos.Action, deadline: float) -> dict[str, Any]:
    cri.remove(lab.endpoint, lab.images["big"])  # its blobs must be fetched through the proxy
    with chaos.chaos_proxy() as proxy:
        proxy.arm(action, MIB)
        image = f"{proxy.address}/pullcheck/big:1.0"
        argv = [sys.executable, "-m", "agent", "pull", image, "--json", "--timeout", f"{deadline}"]
        started = time.monotonic()
        proc = subprocess.run(
            argv, env={**os.environ, **lab.env()}, capture_output=True, check=False
        )
        ended = time.monotonic()
    if not proxy.fired.is_set():
        raise SystemExit(f"{action}: the pull never fetched a blob through the proxy")
    result = json.loads(proc.stdout)
    return {
        "fault_to_named_s": ended - proxy.fired_at,
        "total_s": ended - started,
        "cause": result["cause"],
        "summary": result["summary"],
    }


def _figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, float):
            values = [r[key] for r in rounds]
            out[key] = {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
        else:
            out[key] = sorted({str(r[key]) for r in rounds})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 51), metavar="1..50")
    parser.add_argument("--node", default="node-1", help="lab node for the containerd figure")
    parser.add_argument(
        "--parts",
        default="containerd,registry-kill,registry-stall",
        help="comma-separated: containerd, registry-kill, registry-stall",
    )
    parser.add_argument(
        "--stall-deadline", type=float, default=10.0, help="pull test deadline, 1..300 s"
    )
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"containerd", "registry-kill", "registry-stall"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if not 1 <= args.stall_deadline <= 300:
        parser.error("--stall-deadline must be 1..300 seconds")
    nodes.node_index(args.node)  # a lab node name, or LabError

    lab = control.up()
    figures: dict[str, Any] = {"rounds": args.rounds}
    if "containerd" in parts:
        scenario.apply(lab.dir, [scenario.NodePlan(args.node)])
        token = nodefiles.token_file(nodes.lab_paths(lab)).read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=nodes.agent_url(args.node), headers=headers, timeout=10) as c:
            rounds = [_containerd_round(lab, args.node, c) for _ in range(args.rounds)]
        figures["containerd"] = _figures(rounds)
    plans: list[tuple[str, chaos.Action, float]] = [
        ("registry-kill", "kill", 60.0),
        ("registry-stall", "stall", args.stall_deadline),
    ]
    for part, action, deadline in plans:
        if part in parts:
            rounds = [_registry_round(lab, action, deadline) for _ in range(args.rounds)]
            figures[part] = {"deadline_s": deadline, **_figures(rounds)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
