"""Aggregated ``/v1/pulltest?mode=resolve`` across many agents, measured on the lab.

200 lightweight agents live in one process (``bench/many_agents.py``) on loopback; a real
``pullcheck aggregator`` process finds them through static discovery. Paired rounds in
alternating order:

* ``direct``: the benchmark itself asks every agent at once and waits for the last answer — the
  slowest agent, as an ideal fan-out would see it;
* ``aggregated``: one request to the aggregator, which fans out (``max_in_flight``) and summarises.

Reported: medians of both, the median overhead (aggregated - direct), the aggregator's RSS
(current and peak) and that of the process hosting the agents after the runs, for the default
``max_in_flight`` (64) and for 256.

``.venv/bin/python bench/bench_aggregator.py [--agents 200] [--rounds 5] [--in-flight 64,256]
[--tree DIR] [--json]``: ``--tree`` runs the aggregator and the agents from another source tree
(``git archive REV | tar -x -C DIR``) to compare a change with the code before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int, use_tree

from lab import control, procstat
from lab.info import LabInfo
from lab.servers import TOKEN, agent_config, merge, server

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BENCH = Path(__file__).resolve().parent


async def _direct(ports: list[int], image: str) -> float:
    limits = httpx.Limits(max_connections=len(ports), max_keepalive_connections=len(ports))
    async with httpx.AsyncClient(
        headers=HEADERS, timeout=120, trust_env=False, limits=limits
    ) as client:
        start = time.perf_counter()
        replies = await asyncio.gather(
            *(
                client.get(
                    f"http://127.0.0.1:{p}/v1/pulltest",
                    params={"image": image, "mode": "resolve"},
                )
                for p in ports
            )
        )
        elapsed = time.perf_counter() - start
    bad = [r.status_code for r in replies if r.status_code != 200 or not r.json()["success"]]
    if bad:
        raise SystemExit(f"direct fan-out: {len(bad)} agents failed: {bad[:5]}")
    return elapsed


def _aggregated(url: str, image: str, agents: int) -> float:
    start = time.perf_counter()
    reply = httpx.get(
        f"{url}/v1/pulltest",
        params={"image": image, "mode": "resolve"},
        headers=HEADERS,
        timeout=120,
        trust_env=False,
    )
    elapsed = time.perf_counter() - start
    body = reply.json()
    if body["summary"]["ok"] != agents:
        failed = [n for n in body["nodes"] if not n["success"]]
        raise SystemExit(f"aggregated: {len(failed)} failed, e.g. {failed[:3]}")
    return elapsed


def run(
    lab: LabInfo, workdir: Path, agents: int, rounds: int, in_flight: int, bench: Path
) -> dict[str, Any]:
    """Paired rounds against ``agents`` agents hosted by ``bench``/many_agents.py."""
    config = agent_config(
        lab, workdir / "token", lab.endpoint, registries=[], limits={"result_ttl": 0}
    )
    config_file = workdir / "many.yaml"
    config_file.write_text(yaml.safe_dump(config))
    host = subprocess.Popen(
        [
            sys.executable,
            str(bench / "many_agents.py"),
            "--count",
            str(agents),
            "--config",
            str(config_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"agents did not start: {line!r}")
        ports = [int(p) for p in line.split()[1:]]
        static = [f"bench-node-{i:03d}=127.0.0.1:{p}" for i, p in enumerate(ports)]
        agg_config = merge(
            config,
            {
                "aggregator": {
                    "max_in_flight": in_flight,
                    "discovery": {"mode": "static", "agents": static},
                }
            },
        )
        image = lab.images["good"]
        direct: list[float] = []
        aggregated: list[float] = []
        with server("aggregator", agg_config, workdir, name=f"agg-{in_flight}") as agg:
            _aggregated(agg.url, image, agents)  # warm-up: connections, caches
            for i in range(rounds):
                if i % 2 == 0:
                    direct.append(asyncio.run(_direct(ports, image)))
                    aggregated.append(_aggregated(agg.url, image, agents))
                else:
                    aggregated.append(_aggregated(agg.url, image, agents))
                    direct.append(asyncio.run(_direct(ports, image)))
            rss = procstat.status_mib(agg.proc.pid)["VmRSS"]
            peak = procstat.status_mib(agg.proc.pid)["VmHWM"]
            host_rss = procstat.status_mib(host.pid)["VmRSS"]
            host_peak = procstat.status_mib(host.pid)["VmHWM"]
    finally:
        host.terminate()
        host.wait(timeout=30)
    overheads = [a - d for a, d in zip(aggregated, direct, strict=True)]
    return {
        "agents": agents,
        "max_in_flight": in_flight,
        "rounds": rounds,
        "direct_slowest_agent_ms_median": round(statistics.median(direct) * 1000, 1),
        "aggregated_ms_median": round(statistics.median(aggregated) * 1000, 1),
        "overhead_ms_median": round(statistics.median(overheads) * 1000, 1),
        "overhead_ms_runs": [round(o * 1000, 1) for o in overheads],
        "aggregator_rss_mib": round(rss, 1),
        "aggregator_peak_rss_mib": round(peak, 1),
        "agents_host_rss_mib": round(host_rss, 1),
        "agents_host_peak_rss_mib": round(host_peak, 1),
    }


def _in_flight(text: str) -> list[int]:
    return [bounded_int(1, 1000)(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=bounded_int(1, 1000), default=200)
    parser.add_argument("--rounds", type=bounded_int(1, 100), default=5)
    parser.add_argument("--in-flight", type=_in_flight, default=[64, 256], help="comma-separated")
    parser.add_argument("--tree", type=Path, help="run aggregator and agents from this tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench = BENCH if args.tree is None else use_tree(args.tree) / "bench"
    lab = control.up()
    results = []
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        for in_flight in args.in_flight:
            results.append(run(lab, workdir, args.agents, args.rounds, in_flight, bench))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for figures in results:
        print(f"--- max_in_flight {figures['max_in_flight']}")
        for key, value in figures.items():
            print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
