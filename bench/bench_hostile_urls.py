"""Hostile request targets against a real ``pullcheck agent``: does ``/healthz`` still answer?

For each shape (a long run of word characters, ``a.a.a…``, repeated key names ``token=token=…``,
thousands of ``&k=v`` — on ``/healthz``, which needs no token, and on a path that does not exist)
and each size, one hostile request is sent while ``/healthz`` is asked back to back on another
connection until the hostile request is answered; ``--runs`` times. Reported per shape and size:
the hostile request's status and time (median), and the ``/healthz`` latency next to it (median
and max over every sample). The agent needs no runtime to answer these (no lab, no containerd).

``--tree DIR`` runs the agent from another checkout (e.g. ``git archive HEAD`` unpacked in /tmp),
to measure the code before a change with the same benchmark. ``--micro`` adds the time of
:func:`agent.redaction.redact_text` / ``redact_url`` on 64 KiB of each shape, in-process.

``.venv/bin/python bench/bench_hostile_urls.py [--sizes 2000,10000,20000,65536] [--runs 3]
[--timeout 300] [--tree DIR] [--micro] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.servers import TOKEN, server

UNDER_LIMIT = 8192 - 64  # just under the default limits.max_url_bytes (8 KiB): answered, logged
# shape name → (path, filler for the rest of the target)
SHAPES: dict[str, tuple[str, Callable[[int], str]]] = {
    "word run": ("/healthz?x=", lambda n: "a" * n),
    "a.a.a": ("/healthz?x=", lambda n: ("a." * n)[:n]),
    "token=token=": ("/healthz?", lambda n: ("token=" * n)[:n]),
    "&k=v": ("/healthz?", lambda n: ("&k=v" * n)[:n]),
    "404 word run": ("/", lambda n: "a" * n),
    "404 a.a.a": ("/", lambda n: ("a." * n)[:n]),
}


async def _get(port: int, target: str, timeout: float) -> tuple[int, float]:
    """One ``GET target`` on a new connection: (status, seconds); status 0 on a timeout."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                head = f"GET {target} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                writer.write(head.encode())
                await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
    except TimeoutError:
        return 0, time.perf_counter() - started
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"0"
    return int(status), time.perf_counter() - started


async def _one_run(port: int, target: str, timeout: float) -> tuple[int, float, list[float]]:
    hostile = asyncio.create_task(_get(port, target, timeout))
    health: list[float] = []
    while not hostile.done():
        status, seconds = await _get(port, "/healthz", timeout)
        if status != 200:
            raise RuntimeError(f"/healthz answered {status} next to a hostile request")
        health.append(seconds)
    status, seconds = await hostile
    return status, seconds, health


def measure(port: int, sizes: list[int], runs: int, timeout: float) -> list[dict[str, Any]]:
    rows = []
    for shape, (path, filler) in SHAPES.items():
        for size in sizes:
            target = path + filler(size - len(path))
            statuses, times, health = set(), [], []
            for _ in range(runs):
                status, seconds, samples = asyncio.run(_one_run(port, target, timeout))
                statuses.add(status)
                times.append(seconds)
                health.extend(samples)
            rows.append(
                {
                    "shape": shape,
                    "target_bytes": len(target),
                    "status": sorted(statuses),
                    "hostile_ms_median": round(statistics.median(times) * 1000, 1),
                    "healthz_ms_median": round(statistics.median(health) * 1000, 1),
                    "healthz_ms_max": round(max(health) * 1000, 1),
                    "healthz_samples": len(health),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def micro(size: int = 64 * 1024) -> list[dict[str, Any]]:
    """In-process: the redaction rules on ``size`` characters of each shape (median of 5)."""
    from agent.redaction import redact_text, redact_url

    def median_ms(call: Callable[[], str]) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 2)

    rows = []
    for shape, (path, filler) in SHAPES.items():
        text, target = filler(size), path + filler(size)
        for name, ms in (
            ("redact_text", median_ms(lambda: redact_text(text))),  # noqa: B023 - called now
            ("redact_url", median_ms(lambda: redact_url(target, 2048))),  # noqa: B023
        ):
            rows.append({"shape": shape, "function": name, "chars": size, "ms_median": ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=f"2000,{UNDER_LIMIT},10000,20000,65536")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--tree", type=Path, default=None, help="run the agent from this tree")
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(0 < s <= 1024 * 1024 for s in sizes) or not 0 < args.runs <= 100:
        parser.error("sizes must be 1..1048576 bytes and runs 1..100")
    if args.tree is not None:  # `python -m agent` then imports that tree's package
        tree = args.tree.resolve()
        os.chdir(tree)
        os.environ["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        config = {
            "token_file": str(workdir / "token"),
            "registries": [],  # no connectivity probes: only the requests below run
            "limits": {"rate_limit_per_minute": 0},
            "agent": {"runtime_endpoint": f"unix://{workdir}/no-runtime.sock"},
        }
        with server("agent", config, workdir, name="hostile") as srv:
            port = int(srv.url.rsplit(":", 1)[1])
            rows = measure(port, sizes, args.runs, args.timeout)
    figures: dict[str, Any] = {"tree": str(args.tree or Path.cwd()), "rows": rows}
    if args.micro:
        figures["micro"] = micro()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{'shape':14} {'bytes':>6} {'status':>8} {'hostile ms':>11} {'healthz ms':>18}")
    for row in rows:
        status = ",".join(str(s) for s in row["status"])
        health = f"{row['healthz_ms_median']} / {row['healthz_ms_max']}"
        print(
            f"{row['shape']:14} {row['target_bytes']:>6} {status:>8} "
            f"{row['hostile_ms_median']:>11} {health:>18}"
        )
    for row in figures.get("micro", []):
        print(f"{row['function']:12} {row['shape']:14} {row['chars']:>6} {row['ms_median']:>8} ms")


if __name__ == "__main__":
    main()
