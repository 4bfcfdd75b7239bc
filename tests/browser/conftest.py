"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Playwright's own browser downloads are never used: the system's ``chromium`` (installed by
``scripts/setup.sh``) is. Without it these tests fail loudly; they never skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    sync_playwright,
)

from lab.info import LabInfo
from lab.servers import Server
from tests.browser.cluster import Cluster, lab_cluster, started

CHROMIUM = os.environ.get("PULLCHECK_CHROMIUM", "/usr/bin/chromium")
DESKTOP = ViewportSize(width=1440, height=900)


# module-scoped: sync Playwright keeps an event loop running in this thread while it is open,
# which the async tests of later modules (pytest-asyncio) cannot share
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's chromium (bash scripts/setup.sh)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def cluster(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with lab_cluster(lab, tmp_path_factory.mktemp("dashboard")) as made:
        yield made


@pytest.fixture(scope="module")
def aggregator(cluster: Cluster) -> Iterator[Server]:
    with started(cluster, "agg-ui") as srv:
        yield srv


@pytest.fixture(scope="module")
def read_only_aggregator(cluster: Cluster) -> Iterator[Server]:
    with started(cluster, "agg-ui-ro", read_only=True, slow=False) as srv:
        yield srv


class Watched:
    """A page and what it did that it must not: dialogs opened, CSP violations, script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.problems: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        # an API error status is the page's to show (a 401 is the token prompt), not a fault
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A fresh tab (its own sessionStorage) at desktop size; after the test, no dialog may
    have opened and the page may have broken no rule of its Content-Security-Policy."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(30_000)
    seen = Watched(page)
    yield seen
    context.close()
    assert seen.dialogs == [], f"a dialog opened: {seen.dialogs}"
    assert seen.problems == [], f"the page reported errors: {seen.problems}"


def sign_in(page: Page, url: str, token: str) -> None:
    """Open the dashboard at ``url`` and give the token through the prompt."""
    page.goto(f"{url}/ui/")
    page.locator("#token-input").fill(token)
    page.keyboard.press("Enter")
    page.locator("body[data-state=ready]").wait_for()

