"""The dashboard's page load at 1,000 nodes, in Debian's Chromium (headless).

1,000 simulated agents (``bench/simulated_agents.py``, answering after ``--delay`` ± 10 ms;
``--closed`` of them with a closed port, shown as not answering) behind a real ``pullcheck
aggregator`` (``bench_aggregator_1000.aggregator``). Per round, a fresh browser tab (the token
already in its sessionStorage, as after the prompt) opens ``/ui/`` and the figures are read from
the browser's own clock (``performance.now()``, from the navigation's start):

``shell_ms``   the page, its script and style loaded (DOMContentLoaded);
``nodes_ms``   the node list on screen: every node from ``/v1/agents`` (the aggregator's cached
               list, no fan-out), its first page of rows drawn, each cell "probing…";
``matrix_ms``  the node x endpoint matrix filled: the aggregator's fan-out of
               ``/v1/connectivity`` to every agent included (one ``--delay`` at least), then its
               first page of rows drawn;
``render_ms``  of that, the page's own work: from the answer's last byte to the rows drawn;
``stream_ms``  a test run of the image on every node: from "Run test" to the summary drawn,
               every node's row counted (paginated: one page in the DOM).

``.venv/bin/python bench/bench_ui_1000.py [--agents 1000] [--rounds 5] [--delay 0.05]
[--in-flight 64]`` (no lab)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_aggregator_1000 import IMAGE, Layout, aggregator, simulated_agents
from cli_options import bounded_int

from lab.servers import TOKEN

ROOT = Path(__file__).resolve().parent.parent
_READY = "#view-overview[data-state=ready]"


def _round(browser: Browser, url: str, agents: int) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('pullcheck.token', {TOKEN!r})")
    page = context.new_page()
    page.goto(f"{url}/ui/")
    page.locator(_READY).wait_for(timeout=120_000)
    figures: dict[str, Any] = page.evaluate(
        """() => {
          const nav = performance.getEntriesByType("navigation")[0];
          const matrix = performance.getEntriesByType("resource")
            .filter((e) => e.name.includes("/v1/connectivity")).pop();
          return {shell: nav.domContentLoadedEventEnd, answered: matrix ? matrix.responseEnd : NaN};
        }"""
    )
    # the wait returned after the rows were drawn: the page marks when it drew them
    drawn = page.evaluate(
        "() => performance.getEntriesByName('pullcheck:matrix-drawn').pop().startTime"
    )
    # the node list, drawn before (no mark: the matrix came first, and the list with it)
    listed = page.evaluate(
        """() => {
          const mark = performance.getEntriesByName('pullcheck:nodes-drawn').pop();
          return mark ? {at: mark.startTime, nodes: mark.detail.nodes} : null;
        }"""
    )
    if listed is not None and listed["nodes"] != agents:
        raise SystemExit(f"the node list showed {listed['nodes']} of {agents} nodes")
    rows = page.locator("#matrix tbody tr").count()
    if rows < 25:
        raise SystemExit(f"the matrix shows {rows} rows")
    page.locator("#tab-test").click()
    page.locator("#test-image").fill(IMAGE)
    page.locator("#test-mode").select_option("resolve")
    start = page.evaluate("() => performance.now()")
    page.locator("#test-run").click()
    page.locator("#view-test[data-state=done]").wait_for(timeout=120_000)
    done = page.evaluate("() => performance.now()")
    answered = page.locator("#test-summary p").first.inner_text()
    if not answered.startswith(f"{agents} nodes answered"):
        raise SystemExit(f"the test run shows {answered!r}")
    context.close()
    return {
        "shell_ms": figures["shell"],
        "nodes_ms": drawn if listed is None else listed["at"],
        "matrix_ms": drawn,
        "render_ms": drawn - figures["answered"],
        "stream_ms": done - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=bounded_int(10, 5000), default=1000)
    parser.add_argument("--closed", type=bounded_int(0, 100), default=10)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--rounds", type=bounded_int(1, 50), default=5)
    parser.add_argument("--workers", type=bounded_int(1, 32), default=4)
    parser.add_argument("--in-flight", type=bounded_int(1, 4096), default=64)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not 0 <= args.delay <= 5:  # also refuses nan
        parser.error("--delay: seconds from 0 to 5")
    layout = Layout(args.agents, 0, args.closed, 0, args.delay, min(0.01, args.delay), 0.0)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="pullcheck-bench-ui-") as tmp:
        workdir = Path(tmp)
        (workdir / "token").write_text(TOKEN + "\n")
        specs = layout.specs()
        with (
            simulated_agents(specs, args.workers, workdir) as (ports, _pids),
            aggregator(
                "ui", ROOT, [f"{s['node']}=127.0.0.1:{ports[s['node']]}" for s in specs],
                args.in_flight, 4.0, workdir,
            ) as agg,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
            _round(browser, agg.url, args.agents)  # warm-up
            for _ in range(args.rounds):
                rounds.append(_round(browser, agg.url, args.agents))
            browser.close()
    print(
        f"{args.agents} simulated agents, {args.closed} closed, max_in_flight {args.in_flight}, "
        f"{args.rounds} rounds"
    )
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        print(f"{key:10} median {statistics.median(values):8.1f} ms   max {max(values):8.1f} ms")


if __name__ == "__main__":
    main()
