"""The container image: what it weighs, how fast it starts, how much memory it holds.

Needs the image (``bash scripts/image.sh --build-only``), podman and the lab (as root). Runs the
image the way the manifests run it (``lab/containers.py``: the DaemonSet's options, the
aggregator's) and reports:

* the image's size, each layer's (``podman history``) and the largest installed packages;
* cold start to ready, per round: ``podman run`` of the agent to its first ``/readyz`` 200
  (the runtime answered over the mounted CRI socket), and the same for ``pullcheck agent``
  started on the host with the same config, for the container's own cost; the aggregator in
  the container to its first ``/healthz`` 200;
* resident memory of the container's main process (VmRSS from the host, so the figure is the
  process's own, page cache excluded): idle after start, and after one pull test.

Usage::

    .venv/bin/python bench/bench_image.py [--image localhost/pullcheck:VERSION] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli_options import bounded_int

from lab import control
from lab.containers import (
    AGENT,
    Container,
    agent,
    agent_options,
    aggregator,
    container_args,
    extra_options,
    lab_config,
    podman,
)
from lab.info import LabInfo
from lab.servers import free_port, server

REPO = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

_PACKAGE_SIZES = """
import json, pathlib, sysconfig
root = pathlib.Path(sysconfig.get_paths()["purelib"])
sizes = {}
for entry in root.iterdir():
    files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
    name = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
    sizes[name] = sizes.get(name, 0) + sum(p.stat().st_size for p in files)
print(json.dumps(sizes))
"""


def _mib(size: float) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _wait(url: str, deadline_s: float = 60.0) -> float:
    """Seconds until ``url`` answers 200 (polled every 5 ms)."""
    start = time.monotonic()
    with httpx.Client(timeout=1, trust_env=False) as client:
        while time.monotonic() - start < deadline_s:
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} not ready within {deadline_s} s")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def weight(image: str) -> dict[str, Any]:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    history = json.loads(podman("history", "--format", "json", image).stdout)
    layers = [
        {"size": h["size"], "created_by": h["CreatedBy"][-90:]} for h in history if h["size"] > 0
    ]
    proc = podman(
        "run", "--rm", *extra_options(), "--entrypoint", "python", image, "-c", _PACKAGE_SIZES
    )
    packages = sorted(json.loads(proc.stdout).items(), key=lambda kv: -kv[1])
    return {"size": info["Size"], "layers": layers, "packages": packages}


def cold_start(lab: LabInfo, image: str, workdir: Path, rounds: int) -> dict[str, list[float]]:
    socket_dir = Path(lab.endpoint.removeprefix("unix://")).parent
    times: dict[str, list[float]] = {"agent_container": [], "agent_host": [], "aggregator": []}
    for i in range(rounds):
        port = free_port()
        options = agent_options(
            lab, workdir / f"start-{i}", node="bench", socket_dir=socket_dir, port=port
        )
        name = f"pullcheck-bench-{os.getpid()}-{i}"
        start = time.monotonic()
        try:
            podman("run", "--detach", "--name", name, *extra_options(), *options, image,
                   *container_args(AGENT))  # fmt: skip
            times["agent_container"].append(
                time.monotonic() - start + _wait(f"http://127.0.0.1:{port}/readyz")
            )
        finally:
            podman("rm", "--force", "--time", "10", name, check=False)
        config = lab_config(lab, token_file=str(workdir / f"start-{i}" / "token" / "token"))
        config["agent"] |= {
            "runtime_endpoint": lab.endpoint,
            "resolv_conf": lab.resolv_conf,
            "registry_config_path": lab.registry_config_path,
            "hosts_file": "/etc/hosts",
        }
        start = time.monotonic()
        with server("agent", config, workdir, node="bench") as srv:
            times["agent_host"].append(time.monotonic() - start + _wait(f"{srv.url}/readyz"))
        start = time.monotonic()
        with aggregator(lab, image, workdir / f"agg-{i}", agents={}):
            times["aggregator"].append(time.monotonic() - start)
    return times


def memory(lab: LabInfo, image: str, workdir: Path) -> dict[str, int]:
    socket_dir = Path(lab.endpoint.removeprefix("unix://")).parent
    with agent(lab, image, workdir / "memory", node="bench", socket_dir=socket_dir) as running:
        _wait(f"{running.url}/readyz")
        time.sleep(2)
        idle = _rss(running.host_pid())
        reply = _pull(running, lab.images["good"])
        after = _rss(running.host_pid())
    with aggregator(lab, image, workdir / "agg-memory", agents={}) as front:
        time.sleep(2)
        aggregator_idle = _rss(front.host_pid())
    return {
        "agent_idle": idle,
        "agent_after_pull": after,
        "pull_ok": int(reply),
        "aggregator_idle": aggregator_idle,
    }


def _pull(container: Container, reference: str) -> bool:
    reply = container.client().post(
        "/v1/pulltest", json={"image": reference, "mode": "pull", "timeout": 60}
    )
    return bool(reply.status_code == 200 and reply.json()["success"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=f"localhost/pullcheck:{VERSION}")
    parser.add_argument("--rounds", type=bounded_int(1, 50), default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_image.py: run as root (podman, the lab)")
    if podman("image", "exists", args.image, check=False).returncode != 0:
        sys.exit(f"bench_image.py: no image {args.image}: bash scripts/image.sh --build-only")
    lab = control.up()
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        workdir = Path(tmp)
        heavy = weight(args.image)
        starts = cold_start(lab, args.image, workdir, args.rounds)
        rss = memory(lab, args.image, workdir)
    if args.json:
        print(json.dumps({"weight": heavy, "start_s": starts, "rss": rss}, indent=2))
        return
    print(f"image {args.image}: {_mib(heavy['size'])}")
    for layer in heavy["layers"]:
        print(f"  layer {_mib(layer['size']):>11}  {layer['created_by']}")
    print("  largest packages: " + ", ".join(f"{n} {_mib(s)}" for n, s in heavy["packages"][:12]))
    for name, values in starts.items():
        print(
            f"start {name:16} median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )
    for name, value in rss.items():
        print(f"rss {name:18} {_mib(value) if name != 'pull_ok' else bool(value)}")


if __name__ == "__main__":
    main()
