"""Screenshots of the dashboard's views at 1440x900, for the README (``docs/screenshots/``).

Starts the lab (as root, like the demo), agents on three lab nodes that each see the registries
differently and an aggregator (``tests/browser/cluster.py``), then drives Debian's Chromium,
headless, through each view: the matrix with a failing cell selected, a test run with a node's
evidence open, a warm-cache job after "run now", and the matrix in dark mode.

``.venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import control  # noqa: E402
from lab.servers import TOKEN  # noqa: E402
from tests.browser.cluster import JOB, lab_cluster, started  # noqa: E402

DESKTOP = ViewportSize(width=1440, height=900)


def _sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/ui/")
    page.locator("#token-input").fill(TOKEN)
    page.keyboard.press("Enter")
    page.locator("#view-overview[data-state=ready]").wait_for(timeout=60_000)


def _overview(page: Page, out: Path, tls: str, name: str) -> None:
    page.locator(f'#matrix button.cell[data-node="node-2"][data-column="https://{tls}/v2"]').click()
    page.locator("#ov-detail table.probes").wait_for()
    page.screenshot(path=out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).is_file():
        parser.error(f"no Chromium at {args.chromium}: bash scripts/setup.sh installs it")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    lab = control.up()
    tls = lab.registries["tls"]
    with (
        tempfile.TemporaryDirectory(prefix="pullcheck-shots-") as tmp,
        lab_cluster(lab, Path(tmp)) as cluster,
        started(cluster, "agg-shots", slow=False) as aggregator,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
        page = browser.new_context(viewport=DESKTOP, color_scheme="light").new_page()
        _sign_in(page, aggregator.url)
        _overview(page, out, tls, "overview.png")

        page.locator("#tab-test").click()
        page.locator("#test-image").fill(lab.images["missing_tag"])
        page.locator("#test-mode").select_option("resolve")
        page.locator("#test-run").click()
        page.locator("#view-test[data-state=done]").wait_for(timeout=60_000)
        page.locator('#test-results tr[data-node="node-2"] button.open').click()
        page.screenshot(path=out / "test.png")

        page.locator("#tab-jobs").click()
        job = page.locator(f'#jobs tr[data-job="{JOB}"]')
        job.get_by_role("button", name=f"run {JOB} now").click()
        page.locator('#job-nodes tr[data-node="node-1"][data-phase=done]').wait_for(timeout=120_000)
        job.get_by_text("idle").wait_for(timeout=120_000)
        page.screenshot(path=out / "jobs.png")

        dark = browser.new_context(viewport=DESKTOP, color_scheme="dark").new_page()
        _sign_in(dark, aggregator.url)
        _overview(dark, out, tls, "overview-dark.png")
        browser.close()
    for name in ("overview.png", "test.png", "jobs.png", "overview-dark.png"):
        print(out / name)


if __name__ == "__main__":
    main()
