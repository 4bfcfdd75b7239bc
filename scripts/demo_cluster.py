"""The cluster story on the lab: five nodes, one image, two nodes broken for two different reasons.

Started by ``scripts/demo.sh``. Five lab nodes (each in its own network namespace with its own
containerd and agent, ``lab.nodes``); node-2's resolver answers NXDOMAIN for every name and node-4
lacks the private CA (``lab.nodefaults``). One aggregator asks "can every node pull this?" for the
TLS registry's image (three pull it; node-2 says ``dns_failure``, node-4 ``tls_error``), shows the
node x registry matrix (node-2 reaches neither registry, node-4 only the plain one), and runs a
pre-pull job that warms the three healthy nodes and lists the two broken ones with their causes.
The faults are cleared at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import control, cri, nodefiles, nodes, scenario
from lab.servers import agent_config, merge, server

NODES = nodes.node_names(5)
FAULTS = {"node-2": "dns-nxdomain", "node-4": "ca-missing"}
JOB = "warm-tls"
JOB_TIMEOUT = 120.0


def _plans(faults: dict[str, str]) -> list[scenario.NodePlan]:
    return [scenario.NodePlan(n, faults=(faults[n],) if n in faults else ()) for n in NODES]


def main() -> None:
    lab = control.up()
    scenario.apply(lab.dir, _plans(FAULTS))
    image = lab.images["tls"]
    for name in NODES:  # absent everywhere: every node really pulls it
        with contextlib.suppress(Exception):  # absent already
            cri.remove(lab.nodes[name], image)
    print("\n# five nodes, two of them broken in different ways")
    table = nodes.nodes_table(lab).splitlines()
    print("\n".join(line for line in table if line.split()[0] in NODES))
    token_file = nodefiles.token_file(nodes.lab_paths(lab))
    try:
        with tempfile.TemporaryDirectory(prefix="pullcheck-demo-") as tmp:
            workdir = Path(tmp)
            jobs = workdir / "jobs.yaml"
            jobs.write_text(
                "jobs:\n"
                f"  - name: {JOB}\n"
                f"    images: [{image}]\n"
                "    on_new_node: false\n"
                "    schedule: '0 3 1 1 *'\n"
                "    retries: {attempts: 1, initial: 0.5, maximum: 1}\n"
                "    pacing: {max_parallel_nodes: 5, per_registry: 5, jitter: 0}\n"
            )
            static = [f"{n}={nodes.agent_url(n).removeprefix('http://')}" for n in NODES]
            config = merge(
                agent_config(lab, token_file, lab.endpoint),
                {
                    "aggregator": {
                        "discovery": {"mode": "static", "agents": static, "refresh": 1},
                        "allow_plain_http_credentials": True,
                        "prepull": {"jobs_file": str(jobs), "poll_interval": 0.5, "tick": 0.5},
                    }
                },
            )
            with server("aggregator", config, workdir, name="demo") as aggregator:
                _story(aggregator.url, str(token_file), image)
                _job(aggregator.client())
                _pullcheck(aggregator.url, str(token_file), "prepull", "job", JOB)
                if os.environ.get("PULLCHECK_DEMO_KEEP"):  # scripts/demo.sh --keep
                    print(f"\n# the dashboard stays at {aggregator.url}/ui/")
                    print("# Ctrl-C stops it and clears the faults; the lab keeps running")
                    with contextlib.suppress(KeyboardInterrupt):
                        signal.pause()
    finally:
        scenario.apply(lab.dir, _plans({}))


def _pullcheck(url: str, token_file: str, *args: str) -> None:
    print(f"\n$ pullcheck {' '.join(args)} --url {url} --token-file …", flush=True)
    command = [sys.executable, "-m", "agent", *args, "--url", url, "--token-file", token_file]
    subprocess.run(command, check=False)


def _story(url: str, token_file: str, image: str) -> None:
    print(f"\n# the dashboard: {url}/ui/ (token in {token_file})", flush=True)
    print("\n# can every node pull it? three can; two cannot, each for its own reason")
    _pullcheck(url, token_file, "cluster", "pull", image, "--timeout", "30")
    print("\n# which node cannot reach what")
    _pullcheck(url, token_file, "cluster", "connectivity")


def _job(client: httpx.Client) -> None:
    print("\n# a pre-pull job for the image: the broken nodes are listed with their causes")
    client.post(f"/v1/prepull/jobs/{JOB}/run")
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        body = client.get(f"/v1/prepull/jobs/{JOB}").json()
        phases = [n.get("phase") for n in body.get("nodes", [])]
        settled = len(phases) == len(NODES) and all(p in ("done", "failed") for p in phases)
        if settled and not body.get("running"):
            return
        time.sleep(0.5)
    print(f"(job {JOB} still running after {JOB_TIMEOUT:g} s)")


if __name__ == "__main__":
    main()
