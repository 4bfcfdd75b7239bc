"""The aggregator's own overhead at 1,000 nodes, against lightweight simulated agents.

The agents are ``bench/simulated_agents.py`` processes (``--workers`` of them, the agents
spread over them), each agent on its own loopback port answering like a real one from the
recorded answers after a delay: ``--delay`` ± ``--jitter`` (50 ± 10 ms), ``--slow`` of them
after ``--slow-delay`` (2 s, no jitter), ``--closed`` with a closed port (refused at once). The
aggregator is a real ``pullcheck aggregator`` process with static discovery of all of them; it
runs nothing else (no lab, no runtime). Per ``--in-flight`` value (``aggregator.max_in_flight``):

``live``  ``--agents`` agents as above. The slowest live agent answers after ``--slow-delay``,
          so the aggregator's added latency is the answer's wall time minus that: for the whole
          JSON answer (last byte), and for ``?stream=ndjson`` (its first node line, and the last
          line, the summary). Rounds alternate the two.
``hung``  the same, with ``--hung`` of the quick agents replaced by agents that accept and never
          answer: their deadline is ``aggregator.node_timeout`` (``--node-timeout``, above
          ``--slow-delay``), so the answer comes at that deadline plus the overhead, reported as
          the answer's wall time minus the node timeout.

Also reported: how long after start-up the aggregator has asked every agent's ``/readyz``, its
RSS idle (then) and at its peak (VmHWM) and after the rounds, and its CPU seconds per answer.
``--before DIR`` runs a second aggregator from another tree (``git archive REV | tar -x -C
DIR``) against the same agents, its rounds alternating with this tree's.

``.venv/bin/python bench/bench_aggregator_1000.py [--rounds 7] [--in-flight 64,1000]
[--before DIR] [--json]`` (no lab needed; about 2 minutes per tree with the defaults)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int

from lab import procstat
from lab.servers import TOKEN, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
IMAGE = "plain.pullcheck.test:15000/pullcheck/good:1.0"  # what the recorded answers tested
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Layout:
    agents: int
    slow: int
    closed: int
    hung: int
    delay: float
    jitter: float
    slow_delay: float

    def specs(self) -> list[dict[str, Any]]:
        """Every simulated agent: ``agents`` listed by ``live``, then the ``hung`` ones."""
        specs = []
        slow_every = self.agents // self.slow if self.slow else 0
        closed_every = self.agents // self.closed if self.closed else 0
        for i in range(self.agents):
            node = f"sim-{i:04d}"
            # spread over the fan-out order (node names sorted), the last one slow
            if slow_every and i % slow_every == slow_every - 1:
                specs.append({"node": node, "kind": "answer", "delay": self.slow_delay})
            elif closed_every and i % closed_every == closed_every // 2:
                specs.append({"node": node, "kind": "closed"})
            else:
                specs.append(
                    {"node": node, "kind": "answer", "delay": self.delay, "jitter": self.jitter}
                )
        specs += [{"node": f"sim-hung-{i:02d}", "kind": "hung"} for i in range(self.hung)]
        return specs

    def scenario(self, specs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        """The agents of scenario ``name``: ``hung`` replaces the first quick agents."""
        live = specs[: self.agents]
        if name == "live":
            return live
        hung = specs[self.agents :]
        quick = [s for s in live if s["kind"] == "answer" and s["delay"] == self.delay]
        dropped = {s["node"] for s in quick[: len(hung)]}
        return [s for s in live if s["node"] not in dropped] + hung


@contextmanager
def simulated_agents(
    specs: list[dict[str, Any]], workers: int, workdir: Path
) -> Iterator[tuple[dict[str, int], list[int]]]:
    """Start the agent processes; yield node → port and the processes' pids."""
    spec_file = workdir / "agents.json"
    spec_file.write_text(json.dumps(specs))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "simulated_agents.py"),
                "--spec",
                str(spec_file),
                "--worker",
                str(w),
                "--workers",
                str(workers),
                "--token-file",
                str(workdir / "token"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    try:
        ports: dict[str, int] = {}
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise SystemExit(f"simulated agents did not start: {line!r}")
            for item in line.split()[1:]:
                node, _, port = item.partition("=")
                ports[node] = int(port)
        yield ports, [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


@dataclass
class Aggregator:
    label: str
    url: str
    proc: subprocess.Popen[bytes]
    ready_s: float  # start-up until every agent's /readyz was asked
    idle_rss: float

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS


@contextmanager
def aggregator(
    label: str, tree: Path, static: list[str], in_flight: int, node_timeout: float, workdir: Path
) -> Iterator[Aggregator]:
    port = free_port()
    config = {
        "token_file": str(workdir / "token"),
        "allow": ["*.pullcheck.test:*/*"],
        "registries": [],
        "limits": {"rate_limit_per_minute": 0},
        "aggregator": {
            "listen": f"127.0.0.1:{port}",
            "max_in_flight": in_flight,
            "node_timeout": node_timeout,
            "leader_election": {"mode": "always"},
            "discovery": {"mode": "static", "agents": static},
        },
    }
    name = f"agg-{label}-{in_flight}-{port}"
    config_file = workdir / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLCHECK_")}
    env["PYTHONPATH"] = str(tree)
    with (workdir / f"{name}.log").open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "aggregator", "--config", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tree,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = _wait_checked(url, proc, len(static), started, workdir / f"{name}.log")
        time.sleep(1.0)  # settle: the first readiness round's connections expire after 2 s
        yield Aggregator(label, url, proc, ready_s, procstat.status_mib(proc.pid)["VmRSS"])
    finally:
        stop(proc)


def _wait_checked(
    url: str, proc: subprocess.Popen[bytes], agents: int, started: float, log: Path
) -> float:
    """Seconds from start until ``/v1/agents`` lists every agent with a readiness state."""
    deadline = started + 120
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"aggregator exited:\n{log.read_text()[-3000:]}")
            try:
                listed = client.get("/v1/agents").json()["agents"]
            except (httpx.HTTPError, ValueError, KeyError):
                listed = []
            if len(listed) == agents and all(a["state"] != "unknown" for a in listed):
                return time.monotonic() - started
            time.sleep(0.05)
    raise SystemExit(f"aggregator at {url} did not check its agents in 120 s")


@dataclass
class Round:
    wall_s: float  # the whole answer (its last byte)
    first_line_s: float | None  # ndjson: the first node entry
    cpu_s: float  # the aggregator's CPU time for the answer
    ok: int
    failed: int


def ask(agg: Aggregator, *, stream: bool) -> Round:
    params = {"image": IMAGE, "mode": "resolve"}
    if stream:
        params["stream"] = "ndjson"
    first: float | None = None
    chunks: list[bytes] = []
    cpu = agg.cpu_seconds()
    with httpx.Client(headers=HEADERS, timeout=120, trust_env=False) as client:
        start = time.perf_counter()
        with client.stream("GET", f"{agg.url}/v1/pulltest", params=params) as reply:
            for chunk in reply.iter_raw():
                if first is None and stream and chunk.strip():
                    first = time.perf_counter() - start
                chunks.append(chunk)
        wall = time.perf_counter() - start
    cpu = agg.cpu_seconds() - cpu
    if reply.status_code != 200:
        raise SystemExit(f"{agg.label}: HTTP {reply.status_code}: {b''.join(chunks)[:300]!r}")
    body = b"".join(chunks)
    if stream:
        summary = json.loads(body.splitlines()[-1])["summary"]
    else:
        summary = json.loads(body)["summary"]
    return Round(wall, first, cpu, summary["ok"], summary["failed"])


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _p(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": _ms(statistics.median(values)), "p99": _ms(_p(values, 99))}


def run_scenario(
    name: str,
    trees: dict[str, Path],
    static: list[str],
    layout: Layout,
    in_flight: int,
    node_timeout: float,
    rounds: int,
    workdir: Path,
) -> dict[str, Any]:
    """Paired rounds against one aggregator per tree, the trees' order alternating."""
    floor = node_timeout if name == "hung" else layout.slow_delay
    expect_ok = layout.agents - layout.closed - (layout.hung if name == "hung" else 0)
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        aggs = [
            stack.enter_context(aggregator(label, tree, static, in_flight, node_timeout, workdir))
            for label, tree in trees.items()
        ]
        full: dict[str, list[Round]] = {a.label: [] for a in aggs}
        streamed: dict[str, list[Round]] = {a.label: [] for a in aggs}
        for agg in aggs:
            ask(agg, stream=False)  # warm-up
        for i in range(rounds):
            order = aggs if i % 2 == 0 else aggs[::-1]
            for agg in order:
                kinds = (False, True) if (i // 2) % 2 == 0 else (True, False)
                for stream in kinds:
                    got = ask(agg, stream=stream)
                    if got.ok != expect_ok or got.ok + got.failed != layout.agents:
                        raise SystemExit(
                            f"{agg.label} {name}: ok {got.ok}, failed {got.failed}; "
                            f"expected ok {expect_ok} of {layout.agents}"
                        )
                    (streamed if stream else full)[agg.label].append(got)
        for agg in aggs:
            whole = full[agg.label]
            lines = streamed[agg.label]
            results[agg.label] = {
                "ready_after_start_s": round(agg.ready_s, 2),
                "answer_ms": _stats([r.wall_s for r in whole]),
                "added_ms": _stats([r.wall_s - floor for r in whole]),
                "ndjson_first_line_ms": _stats([r.first_line_s or math.nan for r in lines]),
                "ndjson_added_ms": _stats([r.wall_s - floor for r in lines]),
                "cpu_s_per_answer": round(statistics.median(r.cpu_s for r in whole), 3),
                "cpu_s_per_ndjson": round(statistics.median(r.cpu_s for r in lines), 3),
                "rss_idle_mib": round(agg.idle_rss, 1),
                "rss_after_mib": round(procstat.status_mib(agg.proc.pid)["VmRSS"], 1),
                "rss_peak_mib": round(procstat.status_mib(agg.proc.pid)["VmHWM"], 1),
            }
    return {
        "scenario": name,
        "max_in_flight": in_flight,
        "agents": layout.agents,
        "rounds": rounds,
        "floor_s": floor,
        "trees": results,
    }


def _in_flight(text: str) -> list[int]:
    return [bounded_int(1, 4096)(part) for part in text.split(",")]


def _seconds(low: float, high: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"seconds from {low:g} to {high:g} (got {text!r})")
        return value

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=bounded_int(10, 5000), default=1000)
    parser.add_argument("--slow", type=bounded_int(0, 100), default=10)
    parser.add_argument("--closed", type=bounded_int(0, 100), default=10)
    parser.add_argument("--hung", type=bounded_int(0, 100), default=10)
    parser.add_argument("--delay", type=_seconds(0, 10), default=0.05)
    parser.add_argument("--jitter", type=_seconds(0, 10), default=0.01)
    parser.add_argument("--slow-delay", type=_seconds(0, 60), default=2.0)
    parser.add_argument("--node-timeout", type=_seconds(0.5, 120), default=4.0)
    parser.add_argument("--workers", type=bounded_int(1, 32), default=4)
    parser.add_argument("--rounds", type=bounded_int(1, 100), default=7)
    parser.add_argument("--in-flight", type=_in_flight, default=[64, 1000], help="comma-separated")
    parser.add_argument("--scenarios", default="live,hung", help="live, hung or both")
    parser.add_argument("--before", type=Path, help="also run the aggregator of this tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.jitter > args.delay or args.slow_delay >= args.node_timeout:
        parser.error("want --jitter <= --delay and --slow-delay < --node-timeout")
    if args.slow + args.closed + args.hung >= args.agents:
        parser.error("--slow + --closed + --hung must leave quick agents")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if not scenarios or set(scenarios) - {"live", "hung"}:
        parser.error("--scenarios: live, hung or live,hung")
    trees = {"after": ROOT}
    if args.before is not None:
        before = args.before.resolve()
        if not (before / "agent" / "__init__.py").is_file():
            parser.error(f"--before {before}: no agent/__init__.py there")
        trees = {"before": before, "after": ROOT}
    layout = Layout(
        args.agents, args.slow, args.closed, args.hung, args.delay, args.jitter, args.slow_delay
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        specs = layout.specs()
        with simulated_agents(specs, args.workers, workdir) as (ports, _pids):
            for in_flight in args.in_flight:
                for name in scenarios:
                    static = [
                        f"{s['node']}=127.0.0.1:{ports[s['node']]}"
                        for s in layout.scenario(specs, name)
                    ]
                    results.append(
                        run_scenario(
                            name,
                            trees,
                            static,
                            layout,
                            in_flight,
                            args.node_timeout,
                            args.rounds,
                            workdir,
                        )
                    )
                    if not args.json:
                        _print(results[-1])
    if args.json:
        print(json.dumps(results, indent=2))


def _print(result: dict[str, Any]) -> None:
    print(
        f"--- {result['scenario']}: {result['agents']} agents, max_in_flight "
        f"{result['max_in_flight']}, {result['rounds']} rounds, floor {result['floor_s']:g} s",
        flush=True,
    )
    for label, figures in result["trees"].items():
        for key, value in figures.items():
            print(f"{label:7} {key:22} {value}", flush=True)


if __name__ == "__main__":
    main()
