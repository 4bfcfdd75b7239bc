"""A cluster pull test's wall time with a dead or a frozen agent among five, on the lab.

Five lab nodes (node-1..node-5, each with its own containerd and agent in its own namespaces)
and a real ``pullcheck aggregator`` that knows their agents statically, with the per-node
deadline ``node_timeout`` = ``--deadline``. Per round, in this order:

* ``healthy``: a cluster ``/v1/pulltest?mode=pull`` of the lab's good image (present on the
  nodes) and a ``/v1/connectivity``;
* ``killed``: the same with node-2's agent killed (SIGKILL) just before; then the time to bring
  the agent back (``lab.agentfaults.heal``: restart, until its ``/healthz`` answers);
* ``frozen``: the same with node-4's agent stopped (SIGSTOP) just before; thawed after.

Reported per scenario: the medians over ``--rounds`` of the pull test's and the connectivity
matrix's wall time (as the client sees it), next to the deadline; and the restart time.

``.venv/bin/python bench/bench_fanout_faults.py [--rounds 5] [--deadline 8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int

from lab import agentfaults, control
from lab.info import LabInfo
from lab.scenario import NodePlan
from lab.servers import Server
from tests.integration.cluster import lab_cluster, pulltest, static_discovery

NODES = [f"node-{i}" for i in range(1, 6)]
KILLED, FROZEN = "node-2", "node-4"
PULL_TIMEOUT = 60  # the test's own budget: the deadline below it is what cuts a node off


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _fanouts(agg: Server, image: str, expect_ok: int) -> tuple[float, float]:
    """Wall seconds of a cluster pull test and of a connectivity matrix."""

    def test() -> None:
        body = pulltest(agg, image, PULL_TIMEOUT)
        if body["summary"]["ok"] != expect_ok or body["summary"]["nodes"] != len(NODES):
            raise SystemExit(f"unexpected pull test summary: {body['summary']}")

    def matrix() -> None:
        agg.client().get("/v1/connectivity").raise_for_status()

    return _timed(test), _timed(matrix)


def run(lab: LabInfo, workdir: Path, rounds: int, deadline: float) -> dict[str, object]:
    seconds: dict[str, list[tuple[float, float]]] = {"healthy": [], "killed": [], "frozen": []}
    restarts: list[float] = []
    aggregator = {"node_timeout": deadline, "discovery": static_discovery(NODES)}
    plans = [NodePlan(n) for n in NODES]
    with lab_cluster(lab, plans, workdir, name="agg-bench", aggregator=aggregator) as (info, agg):
        image = info.images["good"]
        pulltest(agg, image, PULL_TIMEOUT)  # every node has the image, every pool is warm
        for _ in range(rounds):
            seconds["healthy"].append(_fanouts(agg, image, len(NODES)))
            try:
                agentfaults.kill(info, KILLED)
                seconds["killed"].append(_fanouts(agg, image, len(NODES) - 1))
            finally:
                restarts.append(_timed(lambda: agentfaults.heal(info, [KILLED])))
            try:
                agentfaults.freeze(info, FROZEN)
                seconds["frozen"].append(_fanouts(agg, image, len(NODES) - 1))
            finally:
                agentfaults.heal(info, [FROZEN])
    figures: dict[str, object] = {"deadline_s": deadline, "rounds": rounds}
    for name, values in seconds.items():
        figures[f"{name}_pulltest_s_median"] = round(statistics.median(v[0] for v in values), 2)
        figures[f"{name}_connectivity_s_median"] = round(statistics.median(v[1] for v in values), 2)
        figures[f"{name}_pulltest_s_runs"] = [round(v[0], 2) for v in values]
    figures["agent_restart_s_median"] = round(statistics.median(restarts), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded_int(1, 50), default=5)
    parser.add_argument("--deadline", type=bounded_int(1, 300), default=8, help="node_timeout, s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lab = control.up()
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        figures = run(lab, Path(tmp), args.rounds, float(args.deadline))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
