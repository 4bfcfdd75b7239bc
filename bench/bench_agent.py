"""The node agent's targets, measured on the lab (run as root; needs Debian's ``wrk``).

* idle RSS of ``pullcheck agent`` (after start-up and its first connectivity round), median of 3;
* reused results served per second on one core: the agent pinned with ``taskset`` to CPU 0,
  ``wrk`` on CPU 1, a result already in the TTL cache, 3 runs of 10 s, median;
* 100 concurrent identical ``/v1/pulltest`` requests with the TTL off: how many CRI pulls ran
  (``pullcheck_pulltests_total``) and how many manifest requests containerd sent (registry log).

``.venv/bin/python bench/bench_agent.py [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import access, control
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, server

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _status_mib(pid: int) -> dict[str, float]:
    """VmRSS and its split: RssAnon (private heap) and RssFile (mapped shared libraries)."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = {}
    for key in ("VmRSS", "RssAnon", "RssFile"):
        match = re.search(rf"{key}:\s+(\d+) kB", status)
        found[key] = int(match.group(1)) / 1024 if match else float("nan")
    return found


def idle_rss(lab: LabInfo, workdir: Path) -> list[dict[str, float]]:
    values = []
    for _ in range(3):
        with server("agent", agent_config(lab, workdir / "token", lab.endpoint), workdir) as srv:
            time.sleep(3)  # the first connectivity round and readiness check run at start-up
            values.append(_status_mib(srv.proc.pid))
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


def single_flight(lab: LabInfo, workdir: Path) -> dict[str, int]:
    config = agent_config(
        lab, workdir / "token", lab.endpoint, limits={"result_ttl": 0, "pull_queue": 200}
    )
    image = access.fresh_reference(lab)
    tag = image.rsplit(":", 1)[1]
    with server("agent", config, workdir, name="sf") as srv:
        mark = access.mark(lab)

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
                assert all(r.status_code == 200 and r.json()["success"] for r in replies)

        asyncio.run(storm())
        pulls = _pulls(srv)
        containerd = sum(
            1
            for r in access.requests(lab, "plain", since=mark)
            if tag in r.uri and r.user_agent.startswith("containerd")
        )
    return {"requests": 100, "cri_pulls": pulls, "containerd_manifest_requests": containerd}


def _pulls(srv: Server) -> int:
    text = srv.client().get("/metrics").text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pullcheck_pulltests_total{") and 'mode="pull"' in line
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lab = control.up()
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        rss = idle_rss(lab, workdir)
        rps = reused_rps(lab, workdir)
        flight = single_flight(lab, workdir)
    figures = {
        "agent_idle_rss_mib_median": round(statistics.median(v["VmRSS"] for v in rss), 1),
        "agent_idle_rss_anon_mib_median": round(statistics.median(v["RssAnon"] for v in rss), 1),
        "agent_idle_rss_file_mib_median": round(statistics.median(v["RssFile"] for v in rss), 1),
        "agent_idle_rss_mib_runs": [round(v["VmRSS"], 1) for v in rss],
        "reused_results_per_second_one_core_median": round(statistics.median(rps)),
        "reused_results_per_second_runs": [round(v) for v in rps],
        **flight,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:45} {value}")


if __name__ == "__main__":
    main()
