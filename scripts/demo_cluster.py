"""The cluster view on the lab: three nodes, an agent on each, one aggregator, one question.

Started by ``scripts/demo.sh``: asks the aggregator "can every node pull this?" for a good image
and for a missing tag, prints the summaries, and stops everything it started.
"""

from __future__ import annotations

import json
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
        client = aggregator.client()
        for image, mode in ((lab.images["good"], "pull"), (lab.images["missing_tag"], "resolve")):
            print(
                f"\n$ curl -H 'Authorization: Bearer …' "
                f"'{aggregator.url}/v1/pulltest?image={image}&mode={mode}'"
            )
            body = client.get("/v1/pulltest", params={"image": image, "mode": mode}).json()
            print(json.dumps(body["summary"], indent=2))
            for node in body["nodes"]:
                print(
                    f"  {node['node']}: {'ok' if node['success'] else node['cause']} — "
                    f"{node['summary']}"
                )
        print("\n# a warm-cache job, one node at a time (pacing.max_parallel_nodes: 1)")
        time.sleep(2)  # the aggregator finds the agents
        client.post("/v1/prepull/jobs/warm-lab/run")
        time.sleep(1)
        while client.get("/v1/prepull/jobs/warm-lab").json()["running"]:
            time.sleep(0.5)
        print(f"$ pullcheck prepull job warm-lab --url {aggregator.url}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "prepull",
                "job",
                "warm-lab",
                "--url",
                aggregator.url,
                "--token-file",
                str(workdir / "token"),
            ],
            check=False,
        )


if __name__ == "__main__":
    main()
