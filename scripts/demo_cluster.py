"""The cluster view on the lab: three nodes, an agent on each, one aggregator, one question.

Started by ``scripts/demo.sh``: asks "can every node pull this?" with ``pullcheck cluster pull``
for a good image and for a missing tag, shows the node x endpoint matrix, runs a warm-cache job,
and stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import control
from lab.servers import TOKEN, agent_config, merge, server


def main() -> None:
    lab = control.up()
    nodes = control.ensure_nodes(lab, 3)
    with tempfile.TemporaryDirectory(prefix="pullcheck-demo-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        static = []
        for name, endpoint in sorted(nodes.items()):
            config = agent_config(lab, workdir / "token", endpoint)
            agent = stack.enter_context(server("agent", config, workdir, node=name))
            static.append(f"{name}={agent.url.removeprefix('http://')}")
        jobs = workdir / "jobs.yaml"
        jobs.write_text(
            "jobs:\n"
            "  - name: warm-lab\n"
            f"    images: [{lab.images['good']}, {lab.images['tls']}, {lab.images['refused']}]\n"
            "    on_new_node: false\n"
            "    schedule: '0 3 * * *'\n"
            "    retries: {attempts: 2, initial: 0.5}\n"
            "    pacing: {max_parallel_nodes: 1, per_registry: 2, jitter: 0}\n"
        )
        config = merge(
            agent_config(lab, workdir / "token", lab.endpoint),
            {
                "aggregator": {
                    "discovery": {"mode": "static", "agents": static, "refresh": 1},
                    "prepull": {"jobs_file": str(jobs), "tick": 0.5},
                }
            },
        )
        aggregator = stack.enter_context(server("aggregator", config, workdir))
        print(f"\n# the dashboard: {aggregator.url}/ui/ (token in {workdir / 'token'})", flush=True)
        client = aggregator.client()
        token_file = str(workdir / "token")

        def pullcheck(*args: str) -> None:
            shown = " ".join(args)
            print(f"\n$ pullcheck {shown} --url {aggregator.url} --token-file …", flush=True)
            command = [sys.executable, "-m", "agent", *args]
            subprocess.run(
                [*command, "--url", aggregator.url, "--token-file", token_file], check=False
            )

        pullcheck("cluster", "pull", lab.images["good"])
        pullcheck("cluster", "pull", lab.images["missing_tag"], "--mode", "resolve")
        pullcheck("cluster", "connectivity")
        print("\n# a warm-cache job, one node at a time (pacing.max_parallel_nodes: 1)")
        time.sleep(2)  # the aggregator finds the agents
        client.post("/v1/prepull/jobs/warm-lab/run")
        time.sleep(1)
        while client.get("/v1/prepull/jobs/warm-lab").json()["running"]:
            time.sleep(0.5)
        pullcheck("prepull", "job", "warm-lab")
        if os.environ.get("PULLCHECK_DEMO_KEEP"):  # scripts/demo.sh --keep
            print(f"\n# the dashboard stays at {aggregator.url}/ui/ (token in {workdir / 'token'})")
            print("# Ctrl-C stops it; the lab keeps running (python -m lab down stops it)")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()


if __name__ == "__main__":
    main()
