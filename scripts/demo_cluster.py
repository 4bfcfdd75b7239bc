"""The cluster view on the lab: three nodes, an agent on each, one aggregator, one question.

Started by ``scripts/demo.sh``: asks the aggregator "can every node pull this?" for a good image
and for a missing tag, prints the summaries, and stops everything it started.
"""

from __future__ import annotations

import json
import sys
import tempfile
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
        config = merge(
            agent_config(lab, workdir / "token", lab.endpoint),
            {"aggregator": {"discovery": {"mode": "static", "agents": static}}},
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


if __name__ == "__main__":
    main()
