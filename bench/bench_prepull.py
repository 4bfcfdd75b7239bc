"""Pre-pull scheduler benchmark: a simulated 1,000-node cluster warming one 2 GiB image.

The real :func:`agent.cluster.prepull.scheduler.run_job` drives a simulated executor on a
discrete-event loop (:class:`tests.virtualtime.VirtualTimeLoop`): virtual time jumps to the next
event whenever every task waits, so an hour of simulated pulls takes well under a second and the
timings are exact (no real sleeping, no network).

Model of one pre-pull on a node (one registry session, from the executor's call to its answer):

1. ``setup``: token, manifest and config round trips; no bandwidth;
2. ``transfer``: the image's bytes through the registry, whose bandwidth ``B`` is shared by the
   active transfers max-min fairly (processor sharing, each transfer also capped by its node's
   link); every transfer's rate is recomputed at each start and finish;
3. ``unpack``: node-local (disk), no registry bandwidth, but the session (and so the scheduler's
   registry slot) lasts until the agent answers.

Scenarios, each for per-registry caps C = 8, 32, 128 with ``max_parallel_nodes: 100%``:

* ``ps``: pure processor sharing (no setup, no unpack, no node link cap): measures the
  scheduler's own gaps; the registry is saturated whenever any stream is active.
* ``uniform``: setup U(0.2, 0.6) s, node links 2 Gbit/s, unpack at U(400, 800) MB/s (the
  registry slot is held, idle, during setup and unpack). Seeded; median of several seeds.
* ``realistic``: ``uniform`` plus 10 % of slow nodes at 200 Mbit/s (a slow node holds its
  registry slot about ten times longer). Node profiles come from a seeded RNG; several seeds,
  median reported. Paired with a *barrier* baseline on the same profiles: waves of C nodes, each
  wave waiting for its slowest node (what a naive "wave" rollout does).
* ``uncapped``: every node at once (the DaemonSet / kube-fledged pattern) for contrast: the same
  makespan at best, but C = 1000 streams on the registry and every pull as slow as the whole run.

Reported per run: makespan and its ratio to the ideal N x size / B (the registry saturated the
whole time), the peak number of concurrent registry sessions (must never exceed C), the median
duration of one pull, and the real CPU time of the simulation.

Run: ``.venv/bin/python bench/bench_prepull.py [--json] [--seeds 5] [--nodes 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cluster.prepull.models import Job, Pacing, Phase
from agent.cluster.prepull.registry_caps import RegistryCaps
from agent.cluster.prepull.scheduler import run_job
from agent.node.models import PullOutcome
from tests.virtualtime import run_virtual

IMAGE = "registry.bench.example/app/big:1"
HOST = "registry.bench.example"
GIB = 1024**3
MB = 1_000_000
GBIT = 1_000_000_000 / 8  # bytes per second


# --- the registry link: max-min fair sharing, recomputed at every start and finish -----------


@dataclass(eq=False)
class _Stream:
    remaining: float
    cap: float
    done: asyncio.Future[None]
    rate: float = 0.0


class Link:
    """A registry with ``bandwidth`` bytes/s shared max-min fairly by its active transfers."""

    def __init__(self, bandwidth: float) -> None:
        self.bandwidth = bandwidth
        self.streams: list[_Stream] = []
        self.peak = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def transfer(self, size: float, cap: float) -> None:
        loop = asyncio.get_running_loop()
        self._advance()
        stream = _Stream(size, cap, loop.create_future())
        self.streams.append(stream)
        self.peak = max(self.peak, len(self.streams))
        self._reshare()
        try:
            await stream.done
        finally:
            if stream in self.streams:  # cancelled mid-transfer
                self._advance()
                self.streams.remove(stream)
                self._reshare()

    def _advance(self) -> None:
        now = asyncio.get_running_loop().time()
        elapsed = now - self._last
        self._last = now
        for stream in self.streams:
            stream.remaining -= stream.rate * elapsed

    def _reshare(self) -> None:
        left = self.bandwidth
        ordered = sorted(self.streams, key=lambda s: s.cap)
        for position, stream in enumerate(ordered):
            stream.rate = min(stream.cap, left / (len(ordered) - position))
            left -= stream.rate
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.streams:
            wait = min(max(0.0, s.remaining) / s.rate for s in self.streams)
            self._timer = asyncio.get_running_loop().call_later(wait, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._advance()
        for stream in [s for s in self.streams if s.remaining <= max(1.0, s.rate * 1e-6)]:
            self.streams.remove(stream)
            stream.done.set_result(None)
        self._reshare()


# --- nodes and the simulated executor -------------------------------------------------------


@dataclass(frozen=True)
class NodeProfile:
    setup: float  # seconds of round trips before the first byte
    link: float  # bytes/s the node can receive
    unpack: float  # bytes/s the node unpacks


def profiles(scenario: str, count: int, seed: int) -> dict[str, NodeProfile]:
    rng = random.Random(seed)
    result = {}
    for index in range(count):
        name = f"node-{index:04d}"
        if scenario == "ps":
            result[name] = NodeProfile(0.0, float("inf"), float("inf"))
        else:
            slow = rng.random() < 0.10 and scenario == "realistic"
            result[name] = NodeProfile(
                setup=rng.uniform(0.2, 0.6),
                link=(0.2 if slow else 2.0) * GBIT,
                unpack=rng.uniform(400, 800) * MB,
            )
    return result


@dataclass
class SimExecutor:
    link: Link
    nodes: dict[str, NodeProfile]
    size: float
    sessions: int = 0
    peak_sessions: int = 0
    durations: list[float] = field(default_factory=list)

    async def __call__(self, node: str, image: str, job: Job, /) -> PullOutcome:
        loop = asyncio.get_running_loop()
        profile = self.nodes[node]
        start = loop.time()
        self.sessions += 1
        self.peak_sessions = max(self.peak_sessions, self.sessions)
        try:
            if profile.setup:
                await asyncio.sleep(profile.setup)
            await self.link.transfer(self.size, profile.link)
            if profile.unpack != float("inf"):
                await asyncio.sleep(self.size / profile.unpack)
        finally:
            self.sessions -= 1
        took = loop.time() - start
        self.durations.append(took)
        return PullOutcome(ok=True, digest="sha256:" + "b" * 64, duration_ms=took * 1000)


# --- one run ---------------------------------------------------------------------------------


def make_job(cap: int) -> Job:
    return Job(
        name="warm",
        images=[IMAGE],
        on_new_node=True,
        timeout=7200,
        pacing=Pacing(max_parallel_nodes="100%", per_registry=cap, jitter=0),
    )


async def _rolling(job: Job, executor: SimExecutor) -> tuple[float, int, int]:
    loop = asyncio.get_running_loop()
    caps = RegistryCaps()
    start = loop.time()
    statuses = await run_job(job, list(executor.nodes), executor, registry_caps=caps)
    done = sum(1 for s in statuses.values() if s.phase is Phase.DONE)
    return loop.time() - start, caps.peak(HOST), done


async def _barrier(job: Job, executor: SimExecutor) -> tuple[float, int, int]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    names = list(executor.nodes)
    cap = job.pacing.per_registry
    done = 0
    for first in range(0, len(names), cap):
        outcomes = await asyncio.gather(*(executor(n, IMAGE, job) for n in names[first:][:cap]))
        done += sum(1 for o in outcomes if o.ok)
    return loop.time() - start, 0, done


def one_run(
    mode: str, scenario: str, cap: int, nodes: int, size: float, bandwidth: float, seed: int
) -> dict[str, Any]:
    executor = SimExecutor(Link(bandwidth), profiles(scenario, nodes, seed), size)
    job = make_job(cap)
    cpu = time.process_time()
    runner = _barrier if mode == "barrier" else _rolling
    makespan, limiter_peak, done = run_virtual(runner(job, executor))
    cpu = time.process_time() - cpu
    ideal = nodes * size / bandwidth
    return {
        "mode": mode,
        "scenario": scenario,
        "cap": cap,
        "seed": seed,
        "done": done,
        "makespan_s": round(makespan, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(makespan / ideal, 4),
        "peak_sessions": executor.peak_sessions,
        "peak_transfers": executor.link.peak,
        "limiter_peak": limiter_peak,
        "median_pull_s": round(statistics.median(executor.durations), 2),
        "cpu_s": round(cpu, 3),
    }


# --- the report ------------------------------------------------------------------------------


def bench(
    nodes: int, size_gib: float, bandwidth_gbit: float, caps: list[int], seeds: int
) -> dict[str, Any]:
    size = size_gib * GIB
    bandwidth = bandwidth_gbit * GBIT
    runs: list[dict[str, Any]] = []
    for cap in caps:
        runs.append(one_run("rolling", "ps", cap, nodes, size, bandwidth, 0))
        for seed in range(seeds):
            runs.append(one_run("rolling", "uniform", cap, nodes, size, bandwidth, seed))
        for seed in range(seeds):
            # paired: the same node profiles for both, order alternating
            pair = ("rolling", "barrier") if seed % 2 == 0 else ("barrier", "rolling")
            for mode in pair:
                runs.append(one_run(mode, "realistic", cap, nodes, size, bandwidth, seed))
    uncapped = one_run("rolling", "realistic", 10_000, nodes, size, bandwidth, 0)
    uncapped["scenario"] = "uncapped"
    runs.append(uncapped)

    summary = []
    for cap in caps:
        ps = next(r for r in runs if r["scenario"] == "ps" and r["cap"] == cap)
        uniform = [r for r in runs if r["scenario"] == "uniform" and r["cap"] == cap]
        rolling = [
            r for r in runs if (r["scenario"], r["mode"], r["cap"]) == ("realistic", "rolling", cap)
        ]
        barrier = {
            r["seed"]: r
            for r in runs
            if (r["scenario"], r["mode"], r["cap"]) == ("realistic", "barrier", cap)
        }
        summary.append(
            {
                "cap": cap,
                "ps_ratio": ps["ratio"],
                "ps_peak_sessions": ps["peak_sessions"],
                "uniform_ratio_median": statistics.median(r["ratio"] for r in uniform),
                "uniform_peak_sessions_max": max(r["peak_sessions"] for r in uniform),
                "realistic_ratio_median": statistics.median(r["ratio"] for r in rolling),
                "realistic_ratio_range": [
                    min(r["ratio"] for r in rolling),
                    max(r["ratio"] for r in rolling),
                ],
                "realistic_peak_sessions_max": max(r["peak_sessions"] for r in rolling),
                "realistic_median_pull_s": statistics.median(r["median_pull_s"] for r in rolling),
                "barrier_ratio_median": statistics.median(b["ratio"] for b in barrier.values()),
                "barrier_over_rolling_median": round(
                    statistics.median(barrier[r["seed"]]["ratio"] / r["ratio"] for r in rolling), 4
                ),
            }
        )
    scheduled = [r for r in runs if r["mode"] == "rolling" and r["scenario"] != "uncapped"]
    targets = {
        "peak_sessions_within_cap": all(
            r["peak_sessions"] <= r["cap"] and r["limiter_peak"] <= r["cap"] for r in scheduled
        ),
        "ps_makespan_within_1.1_ideal": all(s["ps_ratio"] <= 1.1 for s in summary),
        "uniform_makespan_within_1.1_ideal": {
            s["cap"]: s["uniform_ratio_median"] <= 1.1 for s in summary
        },
        "realistic_makespan_within_1.1_ideal": {
            s["cap"]: s["realistic_ratio_median"] <= 1.1 for s in summary
        },
        "all_pulled": all(r["done"] == nodes for r in runs),
    }
    return {
        "settings": {
            "nodes": nodes,
            "image_gib": size_gib,
            "registry_gbit_s": bandwidth_gbit,
            "caps": caps,
            "seeds": seeds,
            "max_parallel_nodes": "100%",
            "ideal_s": round(nodes * size / bandwidth, 3),
            "clock": "virtual (discrete-event event loop)",
        },
        "summary": summary,
        "uncapped": uncapped,
        "targets": targets,
        "runs": runs,
    }


def _print(report: dict[str, Any], wall: float) -> None:
    s = report["settings"]
    print(
        f"{s['nodes']} nodes x {s['image_gib']} GiB through a {s['registry_gbit_s']} Gbit/s "
        f"registry; ideal makespan {s['ideal_s']:.0f} s; {s['clock']}; "
        f"realistic: median of {s['seeds']} seeds"
    )
    print()
    head = (
        f"{'cap':>5} {'ps ratio':>9} {'ps peak':>8} {'uniform':>8} {'real ratio':>11} "
        f"{'(range)':>15} {'real peak':>10} {'pull s':>7} {'barrier':>8} {'barrier/rolling':>16}"
    )
    print(head)
    for row in report["summary"]:
        low, high = row["realistic_ratio_range"]
        print(
            f"{row['cap']:>5} {row['ps_ratio']:>9.4f} {row['ps_peak_sessions']:>8} "
            f"{row['uniform_ratio_median']:>8.4f} "
            f"{row['realistic_ratio_median']:>11.4f} {f'{low:.3f}-{high:.3f}':>15} "
            f"{row['realistic_peak_sessions_max']:>10} {row['realistic_median_pull_s']:>7.1f} "
            f"{row['barrier_ratio_median']:>8.3f} {row['barrier_over_rolling_median']:>16.3f}"
        )
    u = report["uncapped"]
    print(
        f"\nuncapped (every node at once): ratio {u['ratio']:.4f}, peak sessions "
        f"{u['peak_sessions']}, median pull {u['median_pull_s']:.0f} s"
    )
    print(f"\ntargets: {json.dumps(report['targets'])}")
    print(f"real time: {wall:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0, help="registry Gbit/s")
    parser.add_argument("--caps", default="8,32,128", help="per-registry caps, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the realistic scenario")
    args = parser.parse_args()
    caps = [int(c) for c in args.caps.split(",")]
    wall = time.perf_counter()
    report = bench(args.nodes, args.size_gib, args.bandwidth_gbit, caps, args.seeds)
    wall = time.perf_counter() - wall
    report["real_time_s"] = round(wall, 2)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, wall)
    targets = report["targets"]
    ok = targets["peak_sessions_within_cap"] and targets["ps_makespan_within_1.1_ideal"]
    return 0 if ok and targets["all_pulled"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
