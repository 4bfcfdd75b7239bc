"""The node agent's targets, measured on the lab (run as root; needs Debian's ``wrk``).

* idle RSS of ``pullcheck agent`` (after start-up and its first connectivity round), median of
  ``--runs`` (3);
* a storm: 100 concurrent identical ``/v1/pulltest?mode=pull`` on a fresh tag (one CRI pull):
  RSS idle before it, its peak during it (``VmHWM`` reset before the storm), right after it and
  3 s later, medians of ``--runs``;
* reused results served per second on one core: the agent pinned with ``taskset`` to CPU 0,
  ``wrk`` on CPU 1, a result already in the TTL cache, 3 runs of 10 s, median;
* 100 concurrent identical ``/v1/pulltest`` requests with the TTL off: how many CRI pulls ran
  (``pullcheck_pulltests_total``) and how many manifest requests containerd sent (registry log).

``.venv/bin/python bench/bench_agent.py [--parts rss,storm,rps,single-flight] [--runs 3]
[--tree DIR] [--env NAME=VALUE ...] [--json]``: ``--tree`` runs the agent from another source
tree (``git archive REV | tar -x -C DIR``) to compare a change with the code before it; ``--env``
sets a variable for the agents (``MALLOC_ARENA_MAX=2``); ``--parts rss,storm`` need no ``wrk``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int, env_setting, use_tree

from lab import access, control, procstat
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, server

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PARTS = ("rss", "storm", "rps", "single-flight")


def idle_rss(lab: LabInfo, workdir: Path, runs: int) -> list[dict[str, float]]:
    values = []
    for _ in range(runs):
        with server("agent", agent_config(lab, workdir / "token", lab.endpoint), workdir) as srv:
            time.sleep(3)  # the first connectivity round and readiness check run at start-up
            values.append(procstat.status_mib(srv.proc.pid))
    return values


def reused_rps(lab: LabInfo, workdir: Path) -> list[float]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    config = agent_config(lab, workdir / "token", lab.endpoint, limits={"result_ttl": 3600})
    image = lab.images["good"]
    with server("agent", config, workdir, name="rps") as srv:
        subprocess.run(["taskset", "-pc", "0", str(srv.proc.pid)], check=True, capture_output=True)
        url = f"{srv.url}/v1/pulltest?image={image}&mode=resolve"
        httpx.get(url, headers=HEADERS, timeout=60, trust_env=False).raise_for_status()
        rates = []
        for _ in range(3):
            out = subprocess.run(
                [
                    "taskset",
                    "-c",
                    "1",
                    "wrk",
                    "-t1",
                    "-c16",
                    "-d10s",
                    "-H",
                    f"Authorization: Bearer {TOKEN}",
                    url,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            match = re.search(r"Requests/sec:\s+([\d.]+)", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            if match is None or non2xx is not None:
                raise SystemExit(f"wrk run failed:\n{out}")
            rates.append(float(match.group(1)))
        return rates


def _storm_config(lab: LabInfo, workdir: Path) -> dict[str, object]:
    return agent_config(
        lab, workdir / "token", lab.endpoint, limits={"result_ttl": 0, "pull_queue": 200}
    )


def _storm(srv: Server, image: str) -> None:
    """100 concurrent identical ``/v1/pulltest?mode=pull`` (one CRI pull under single-flight)."""

    async def storm() -> None:
        async with httpx.AsyncClient(
            base_url=srv.url,
            headers=HEADERS,
            timeout=120,
            trust_env=False,
            limits=httpx.Limits(max_connections=100),
        ) as client:
            replies = await asyncio.gather(
                *(
                    client.get("/v1/pulltest", params={"image": image, "mode": "pull"})
                    for _ in range(100)
                )
            )
            failed = [r.status_code for r in replies if not (r.is_success and r.json()["success"])]
            if failed:
                raise SystemExit(f"storm: {len(failed)} of 100 requests failed: {failed[:5]}")

    asyncio.run(storm())


def single_flight(lab: LabInfo, workdir: Path) -> dict[str, int]:
    image = access.fresh_reference(lab)
    tag = image.rsplit(":", 1)[1]
    with server("agent", _storm_config(lab, workdir), workdir, name="sf") as srv:
        mark = access.mark(lab)
        _storm(srv, image)
        pulls = _pulls(srv)
        containerd = sum(
            1
            for r in access.requests(lab, "plain", since=mark)
            if tag in r.uri and r.user_agent.startswith("containerd")
        )
    return {"requests": 100, "cri_pulls": pulls, "containerd_manifest_requests": containerd}


def storm_rss(lab: LabInfo, workdir: Path, runs: int) -> list[dict[str, float]]:
    """Per run: idle RSS, the peak during the storm (``VmHWM``, reset just before it through
    ``/proc/PID/clear_refs``), RSS right after it and once the agent idled again."""
    values = []
    for _ in range(runs):
        image = access.fresh_reference(lab)
        with server("agent", _storm_config(lab, workdir), workdir, name="storm") as srv:
            time.sleep(3)  # the first connectivity round and readiness check, as for rss
            pid = srv.proc.pid
            idle = procstat.status_mib(pid)["VmRSS"]
            procstat.reset_peak(pid)
            _storm(srv, image)
            status = procstat.status_mib(pid)
            time.sleep(3)
            values.append(
                {
                    "idle": idle,
                    "peak": status["VmHWM"],
                    "after": status["VmRSS"],
                    "settled": procstat.status_mib(pid)["VmRSS"],
                }
            )
    return values


def _pulls(srv: Server) -> int:
    text = srv.client().get("/metrics").text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pullcheck_pulltests_total{") and 'mode="pull"' in line
        )
    )


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if not parts or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PARTS)} (got {text!r})")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=_parts, default=list(PARTS), help="comma-separated")
    parser.add_argument("--runs", type=bounded_int(1, 50), default=3, help="idle RSS runs (median)")
    parser.add_argument("--tree", type=Path, help="run the agent from this source tree")
    parser.add_argument(
        "--env", type=env_setting, action="append", default=[], help="NAME=VALUE for the agent"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.tree is not None:
        use_tree(args.tree)
    os.environ.update(args.env)  # the agents inherit this environment
    lab = control.up()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        if "rss" in args.parts:
            rss = idle_rss(lab, workdir, args.runs)
            figures |= {
                "agent_idle_rss_mib_median": _median(v["VmRSS"] for v in rss),
                "agent_idle_rss_anon_mib_median": _median(v["RssAnon"] for v in rss),
                "agent_idle_rss_file_mib_median": _median(v["RssFile"] for v in rss),
                "agent_idle_rss_mib_runs": [round(v["VmRSS"], 1) for v in rss],
            }
        if "storm" in args.parts:
            storm = storm_rss(lab, workdir, args.runs)
            figures |= {
                f"storm_rss_{key}_mib_median": _median(v[key] for v in storm)
                for key in ("idle", "peak", "after", "settled")
            }
            figures["storm_rss_peak_mib_runs"] = [round(v["peak"], 1) for v in storm]
        if "rps" in args.parts:
            rps = reused_rps(lab, workdir)
            figures |= {
                "reused_results_per_second_one_core_median": round(statistics.median(rps)),
                "reused_results_per_second_runs": [round(v) for v in rps],
            }
        if "single-flight" in args.parts:
            figures |= single_flight(lab, workdir)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:45} {value}")


def _median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 1)


if __name__ == "__main__":
    main()
