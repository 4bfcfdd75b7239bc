"""What a pull test costs on top of the pull itself, measured on the lab.

Paired runs, alternating order each round:

* ``bare``: what ``crictl pull`` does — one CRI PullImage of the lab's good image, then RemoveImage;
* ``pulltest``: ``run_pull_test`` on the same image (ImageStatus, PullImage, ImageStatus,
  RemoveImage, plus the registry probes running alongside).

Reported: the median of each, the median of the per-round ratios pulltest/bare, and the peak RSS
of the ``pullcheck pull`` CLI process. Run as root: ``.venv/bin/python bench/bench_pulltest.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cri import connect
from agent.pulltest import NodeSettings, PullTestRequest, run_pull_test
from lab import control
from lab.info import LabInfo


async def _bare(endpoint: str, image: str) -> float:
    start = time.perf_counter()
    async with await connect(endpoint) as client:
        ref = await client.pull_image(image)
        await client.remove_image(ref)
    return time.perf_counter() - start


async def _pulltest(node: NodeSettings, image: str) -> float:
    start = time.perf_counter()
    result = await run_pull_test(PullTestRequest(image=image), node)
    elapsed = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"pull test failed: {result.cause}: {result.summary}")
    return elapsed


def _cli_peak_rss_kib(lab: LabInfo, image: str) -> int:
    env = {**os.environ, **lab.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "pull", image, "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"pullcheck pull exited {proc.returncode}")
    return int(usage.ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    lab = control.up()
    image = lab.images["good"]
    node = NodeSettings(
        endpoint=lab.endpoint,
        resolv_conf=Path(lab.resolv_conf),
        registry_config_path=lab.registry_config_path,
    )
    asyncio.run(_bare(lab.endpoint, image))  # warm-up: registry caches, containerd plugins
    bare: list[float] = []
    full: list[float] = []
    for i in range(args.rounds):
        if i % 2 == 0:
            bare.append(asyncio.run(_bare(lab.endpoint, image)))
            full.append(asyncio.run(_pulltest(node, image)))
        else:
            full.append(asyncio.run(_pulltest(node, image)))
            bare.append(asyncio.run(_bare(lab.endpoint, image)))
    ratios = [f / b for f, b in zip(full, bare, strict=True)]
    rss = [_cli_peak_rss_kib(lab, image) for _ in range(5)]
    figures = {
        "rounds": args.rounds,
        "bare_median_ms": round(statistics.median(bare) * 1000, 1),
        "pulltest_median_ms": round(statistics.median(full) * 1000, 1),
        "ratio_median": round(statistics.median(ratios), 2),
        "ratio_p90": round(sorted(ratios)[int(0.9 * (len(ratios) - 1))], 2),
        "cli_peak_rss_mib_median": round(statistics.median(rss) / 1024, 1),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:26} {value}")


if __name__ == "__main__":
    main()
