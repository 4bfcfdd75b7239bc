"""A soak: the aggregator and five node agents running for ``--minutes`` under periodic work.

Five lab nodes in their own namespaces (``--nodes``, default node-31..node-35, so the soak can
share the lab with tests that plan node-1..node-11), each with its containerd 1.6 and its agent; one
node keeps a resolver fault (``dns-nxdomain``: the failure paths run too) and one has
``registry-refused`` switched on and off every ``--flip`` seconds (results change, readiness of the
registry path changes). One aggregator finds the agents statically. The work, on a fixed clock:

* every ``--connectivity`` s: ``GET /v1/connectivity`` (every agent probes both lab registries:
  DNS, TCP, TLS, the v2 API);
* every ``--pulltest`` s: the good image removed from every node, then a cluster-wide
  ``/v1/pulltest`` in pull mode (a real CRI pull on each node), alternating with resolve mode.

Every ``--sample`` s it reads, for the aggregator and each agent, ``VmRSS`` and the number of open
file descriptors (``/proc/PID/fd``). At the end: the first and last samples, the maximum, and the
trend over the run's second half (least-squares slope, per hour), so a slow leak shows as a
positive slope well above the noise; plus every answer counted by status. Progress goes to stderr
once a minute.

``.venv/bin/python bench/bench_soak.py [--minutes 30] [--sample 30] [--json] [--out FILE]`` (root;
starts the lab if it is not up; leaves it up).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int

from lab import control, cri, nodefaults, nodefiles, nodes, procstat, state
from lab.info import LabInfo
from lab.servers import TOKEN, agent_config, merge, server

DEFAULT_NODES = [f"node-{i}" for i in range(31, 36)]
STEADY_FAULT = "dns-nxdomain"
FLIPPED_FAULT = "registry-refused"


def _sample(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {
        name: {"rss_mib": procstat.status_mib(pid)["VmRSS"], "fds": float(procstat.open_fds(pid))}
        for name, pid in pids.items()
    }


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour; 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return float(statistics.linear_regression(xs, ys).slope * 3600)


def summarise(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process: first, last, max RSS and fds, and second-half slopes per hour."""
    half = samples[len(samples) // 2 :]
    out: dict[str, dict[str, float]] = {}
    for name in samples[0]["procs"]:
        series = [(s["t"], s["procs"][name]) for s in samples if name in s["procs"]]
        late = [(s["t"], s["procs"][name]) for s in half if name in s["procs"]]
        out[name] = {
            "rss_first": series[0][1]["rss_mib"],
            "rss_last": series[-1][1]["rss_mib"],
            "rss_max": max(v["rss_mib"] for _, v in series),
            "rss_slope_h": _slope_per_hour([(t, v["rss_mib"]) for t, v in late]),
            "fds_first": series[0][1]["fds"],
            "fds_last": series[-1][1]["fds"],
            "fds_max": max(v["fds"] for _, v in series),
            "fds_slope_h": _slope_per_hour([(t, v["fds"]) for t, v in late]),
        }
    return out


def _clear(info: LabInfo, names: list[str]) -> None:
    for name in names:
        nodefaults.clear(info.dir, name)


class _Every:
    """Calls ``action`` every ``period`` seconds of the soak's clock (first call at 0)."""

    def __init__(self, period: float, action: Callable[[], None]) -> None:
        self.period, self.action, self.next = period, action, 0.0

    def tick(self, now: float) -> None:
        if now >= self.next:
            self.action()
            self.next += self.period


def soak(args: argparse.Namespace) -> dict[str, Any]:
    info = control.up()
    names: list[str] = args.nodes
    nodes.ensure_nodes(info, 0, agents=True, names=names)  # not node-1..: tests plan those
    _clear(info, names)
    nodefaults.set_fault(info.dir, names[1], STEADY_FAULT, True)
    info = LabInfo.load(Path(info.dir))
    paths = nodes.lab_paths(info)
    workdir = Path(tempfile.mkdtemp(prefix="pullcheck-soak-"))
    (workdir / "token").write_text(TOKEN + "\n")
    config = merge(
        agent_config(info, nodefiles.token_file(paths), info.endpoint),
        {
            "aggregator": {
                "node_timeout": 60,
                "discovery": {
                    "mode": "static",
                    "agents": [nodes.agent_url(n).removeprefix("http://") for n in names],
                },
            }
        },
    )
    image = info.images["good"]
    answers: collections.Counter[str] = collections.Counter()
    samples: list[dict[str, Any]] = []
    flipped = [False]
    try:
        with (
            server("aggregator", config, workdir, name="agg-soak") as agg,
            agg.client() as client,
        ):
            recorded = state.recorded_pids(paths)
            pids = {"aggregator": agg.proc.pid} | {n: recorded[f"agent-{n}"] for n in names}
            mode = ["pull"]

            def connectivity() -> None:
                reply = client.get("/v1/connectivity")
                answers[f"connectivity {reply.status_code}"] += 1

            def pulltest() -> None:
                if mode[0] == "pull":
                    for name in names:
                        cri.remove(info.nodes[name], image)
                reply = client.get(
                    "/v1/pulltest", params={"image": image, "mode": mode[0], "timeout": "30"}
                )
                answers[f"pulltest-{mode[0]} {reply.status_code}"] += 1
                if reply.status_code == 200:
                    for entry in reply.json()["nodes"]:
                        answers[f"node {'ok' if entry['success'] else entry['cause']}"] += 1
                mode[0] = "resolve" if mode[0] == "pull" else "pull"

            def flip() -> None:
                flipped[0] = not flipped[0]
                nodefaults.set_fault(info.dir, names[3], FLIPPED_FAULT, flipped[0])

            def sample() -> None:
                samples.append({"t": time.monotonic() - start, "procs": _sample(pids)})

            start = time.monotonic()
            clocks = [
                _Every(args.sample, sample),
                _Every(args.connectivity, connectivity),
                _Every(args.pulltest, pulltest),
                _Every(args.flip, flip),
            ]
            end = args.minutes * 60
            last_report = 0.0
            while (now := time.monotonic() - start) < end:
                for clock in clocks:
                    clock.tick(now)
                if now - last_report >= 60:
                    last_report = now
                    latest = samples[-1]["procs"] if samples else {}
                    agg_now = latest.get("aggregator", {})
                    print(
                        f"[{now / 60:5.1f} min] aggregator {agg_now.get('rss_mib', 0):.1f} MiB "
                        f"{agg_now.get('fds', 0):.0f} fds; answers {dict(answers)}",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(max(0.0, min(c.next for c in clocks) - (time.monotonic() - start)))
            sample()
    finally:
        _clear(info, names)
    return {
        "minutes": args.minutes,
        "nodes": names,
        "periods_s": {
            "sample": args.sample,
            "connectivity": args.connectivity,
            "pulltest": args.pulltest,
            "flip": args.flip,
        },
        "answers": dict(sorted(answers.items())),
        "summary": summarise(samples),
        "samples": samples,
    }


def _print(result: dict[str, Any]) -> None:
    print(f"soak: {result['minutes']} min, {len(result['samples'])} samples")
    print(f"answers: {result['answers']}")
    head = (
        f"{'process':<11} {'RSS first':>9} {'last':>7} {'max':>7} {'MiB/h (2nd half)':>16} "
        f"{'fds first':>9} {'last':>5} {'max':>5} {'fds/h':>7}"
    )
    print(head)
    for name, s in result["summary"].items():
        print(
            f"{name:<11} {s['rss_first']:>9.1f} {s['rss_last']:>7.1f} {s['rss_max']:>7.1f} "
            f"{s['rss_slope_h']:>16.2f} {s['fds_first']:>9.0f} {s['fds_last']:>5.0f} "
            f"{s['fds_max']:>5.0f} {s['fds_slope_h']:>7.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=bounded_int(1, 720), default=30)
    parser.add_argument("--sample", type=bounded_int(1, 600), default=30, help="seconds")
    parser.add_argument("--connectivity", type=bounded_int(1, 600), default=15, help="seconds")
    parser.add_argument("--pulltest", type=bounded_int(5, 600), default=60, help="seconds")
    parser.add_argument("--flip", type=bounded_int(10, 3600), default=300, help="seconds")
    parser.add_argument("--nodes", nargs=5, default=DEFAULT_NODES, metavar="NODE")
    parser.add_argument("--json", action="store_true", help="the whole result as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    result = soak(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print(result)


if __name__ == "__main__":
    main()
