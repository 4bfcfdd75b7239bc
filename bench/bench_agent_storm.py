"""1,000 concurrent requests at one node agent, measured on the lab (run as root).

Each round starts a fresh ``pullcheck agent`` on lab node ``--node``'s containerd (the lab's
configuration: rate limit off, so every request reaches its route), lets it run its first
connectivity probes, then sends ``--requests`` requests at once, each on its own connection
(``lab.storm``: 40 % ``/v1/pulltest?mode=pull`` over ``--tags`` fresh tags of the lab's good
image, which the node has, 20 % each ``/v1/connectivity``, ``/metrics`` and
``/healthz``/``/readyz``). Per round: answers by status (``error`` = no answer), p50/p99
latency, the wall time of the storm, peak RSS (``VmHWM``, reset just before the storm), RSS
right after and ``--settle`` seconds later, open file descriptors before and after, and RSS
after a second, identical storm on the same agent (does each storm add to it?). Printed: every
round and the medians.

The test ``tests/integration/test_cluster_faults.py`` runs one such storm and asserts its
answers (200 or 429 with ``Retry-After`` only) and memory bounds. The other storm, 100 identical
pull tests sharing one CRI pull, is ``bench/bench_agent.py --parts storm``.

``.venv/bin/python bench/bench_agent_storm.py [--rounds 3] [--requests 1000] [--tags 20]
[--node node-5] [--settle 5] [--tree DIR] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int, use_tree

from lab import access, control, cri, nodes, procstat, storm
from lab.info import LabInfo
from lab.servers import TOKEN, agent_config, server


def one_round(
    lab: LabInfo, workdir: Path, endpoint: str, *, requests: int, tags: int, settle: float
) -> dict[str, Any]:
    images = [access.fresh_reference(lab) for _ in range(tags)]
    config = agent_config(lab, workdir / "token", endpoint)
    with server("agent", config, workdir, name="storm") as agent:
        pid = agent.proc.pid
        agent.client().get("/v1/connectivity").raise_for_status()
        idle = procstat.status_mib(pid)["VmRSS"]
        fds_before = procstat.open_fds(pid)
        procstat.reset_peak(pid)
        result = asyncio.run(storm.storm(agent.url, storm.mix(images, requests), TOKEN))
        now = procstat.status_mib(pid)
        fds_after = procstat.open_fds(pid)
        time.sleep(settle)
        settled = procstat.status_mib(pid)["VmRSS"]
        fds_settled = procstat.open_fds(pid)
        # a second storm on the same agent: is what the first one left in RSS reused, or does
        # every storm add to it?
        asyncio.run(storm.storm(agent.url, storm.mix(images, requests), TOKEN))
        time.sleep(settle)
        second = procstat.status_mib(pid)["VmRSS"]
    return {
        "statuses": dict(sorted(result.statuses.items())),
        "by_path": {p: dict(sorted(c.items())) for p, c in sorted(result.by_path.items())},
        "missing_retry_after": result.missing_retry_after,
        "errors": result.errors[:3],
        "p50_ms": round(result.percentile(0.5) * 1000, 1),
        "p99_ms": round(result.percentile(0.99) * 1000, 1),
        "wall_s": round(result.wall, 2),
        "rss_idle_mib": round(idle, 1),
        "rss_peak_mib": round(now["VmHWM"], 1),
        "rss_after_mib": round(now["VmRSS"], 1),
        "rss_settled_mib": round(settled, 1),
        "rss_after_second_storm_mib": round(second, 1),
        "fds_before": fds_before,
        "fds_after": fds_after,
        "fds_settled": fds_settled,
    }


_MEDIANS = (
    "p50_ms",
    "p99_ms",
    "wall_s",
    "rss_idle_mib",
    "rss_peak_mib",
    "rss_after_mib",
    "rss_settled_mib",
    "rss_after_second_storm_mib",
    "fds_before",
    "fds_after",
    "fds_settled",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=bounded_int(1, 50), default=3)
    parser.add_argument("--requests", type=bounded_int(1, storm.MAX_REQUESTS), default=1000)
    parser.add_argument("--tags", type=bounded_int(1, 200), default=20, help="distinct pull tests")
    parser.add_argument("--node", default="node-5", help="the lab node whose containerd it uses")
    parser.add_argument("--settle", type=bounded_int(0, 600), default=5, help="seconds")
    parser.add_argument("--tree", type=Path, help="run the agent from this source tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.tree is not None:
        use_tree(args.tree)
    lab = control.up()
    try:
        index = nodes.node_index(args.node)
    except Exception as exc:
        parser.error(str(exc))
    endpoint = nodes.ensure_nodes(lab, index)[args.node]
    cri.pull(endpoint, lab.images["good"])
    rounds = []
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        for _ in range(args.rounds):
            rounds.append(
                one_round(
                    lab,
                    workdir,
                    endpoint,
                    requests=args.requests,
                    tags=args.tags,
                    settle=args.settle,
                )
            )
    medians = {key: statistics.median(r[key] for r in rounds) for key in _MEDIANS}
    statuses = sorted({s for r in rounds for s in r["statuses"]})
    medians |= {
        f"answers_{s}": statistics.median(r["statuses"].get(s, 0) for r in rounds) for s in statuses
    }
    figures = {"requests": args.requests, "rounds": rounds, "median": medians}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for i, r in enumerate(rounds, 1):
        print(f"round {i}: {json.dumps(r)}")
    for key, value in medians.items():
        print(f"median {key:22} {value}")


if __name__ == "__main__":
    main()
