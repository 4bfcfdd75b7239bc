"""The dashboard at /ui/ in Debian's Chromium against real agents on the lab's nodes and a real
aggregator (``tests/browser/cluster.py`` says what each node sees)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route, expect

from lab.servers import TOKEN, Server
from tests.browser.cluster import JOB, NODES, PAYLOAD, Cluster
from tests.browser.conftest import Watched, sign_in

pytestmark = pytest.mark.lab

#: every control the keyboard must reach (visible and enabled)
_FOCUSABLE = """() => [...document.querySelectorAll(
    'button, input, select, textarea, a[href], summary, [tabindex]:not([tabindex="-1"])')]
  .filter((e) => !e.disabled && e.checkVisibility())
  .map((e, i) => { e.dataset.kb = String(i); return String(i); })"""


def _cell(page: Page, node: str, column: str) -> str:
    locator = page.locator(f'#matrix button.cell[data-node="{node}"][data-column="{column}"]')
    return locator.inner_text().strip()


def _matrix(page: Page) -> None:
    page.locator("#view-overview[data-state=ready]").wait_for(timeout=60_000)


def test_the_token_is_asked_once_and_kept_for_the_tab_only(
    watched: Watched, aggregator: Server
) -> None:
    page = watched.page
    page.goto(f"{aggregator.url}/ui/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.locator("#token-input").fill("not-the-token")
    page.keyboard.press("Enter")
    expect(page.locator("#token-error")).to_contain_text("refused (HTTP 401)")
    expect(dialog).to_be_visible()
    page.locator("#token-input").fill(TOKEN)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    _matrix(page)
    assert page.evaluate("() => sessionStorage.getItem('pullcheck.token')") == TOKEN
    assert page.evaluate("() => localStorage.length") == 0  # nothing outlives the tab
    page.reload()  # the same tab: no second prompt
    page.locator("body[data-state=ready]").wait_for()
    expect(dialog).to_be_hidden()
    other = page.context.new_page()  # another tab asks again
    other.goto(f"{aggregator.url}/ui/")
    expect(other.locator("#token-dialog")).to_be_visible()
    other.close()
    page.locator("#forget-token").click()
    expect(dialog).to_be_visible()


def test_the_matrix_shows_each_nodes_real_cause_and_the_probes_on_selection(
    watched: Watched, aggregator: Server, cluster: Cluster
) -> None:
    page = watched.page
    sign_in(page, aggregator.url, TOKEN)
    _matrix(page)
    lab = cluster.lab
    plain, tls = lab.registries["plain"], lab.registries["tls"]
    refused = f"https://{lab.registries['refused']}/v2"
    assert _cell(page, "node-1", f"http://{plain}/v2") == "ok"
    assert _cell(page, "node-1", f"https://{tls}/v2") == "ok"
    # node-2 has no hosts.toml: the runtime would speak HTTPS to the plain registry
    assert _cell(page, "node-2", f"https://{plain}/v2") == "http_https_mismatch"
    assert _cell(page, "node-2", f"https://{tls}/v2") == "tls_error"
    assert _cell(page, "node-3", refused) == "connection_refused"
    assert _cell(page, "node-1", refused) == "not probed"
    down = page.locator('#matrix tr[data-node="node-down"] td.unreachable')
    expect(down).to_contain_text("agent_unreachable")
    expect(down).to_contain_text("did not answer")
    expect(page.locator('#matrix tr[data-node="node-slow"]')).to_contain_text("agent_unreachable")
    # selection: every probe of the chain with its time and phases, and the remedy
    page.locator(f'#matrix button.cell[data-node="node-2"][data-column="https://{tls}/v2"]').click()
    detail = page.locator("#ov-detail")
    expect(detail.locator("table.probes")).to_be_visible()
    expect(detail.locator('tr[data-probe="tls"]')).to_contain_text("tls_error")
    for probe in ("dns", "tcp", "tls"):
        expect(detail.locator(f'tr[data-probe="{probe}"] td.num')).to_contain_text("ms")
    expect(detail).to_contain_text("Remedy")
    expect(detail).to_contain_text("ca")  # the remedy names the trust to add
    # filter by cause, then sort failing first
    page.locator("#ov-cause").select_option("tls_error")
    rows = page.locator("#matrix tbody tr")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-node") == "node-2"
    page.locator("#ov-cause").select_option("")
    page.locator("#ov-sort").select_option("failing")
    first = page.locator("#matrix tbody tr").first.get_attribute("data-node")
    assert first in {"node-down", "node-slow"}  # a node that did not answer comes first


def test_the_node_list_shows_at_once_and_its_cells_fill_when_the_matrix_comes(
    watched: Watched, aggregator: Server, cluster: Cluster
) -> None:
    page = watched.page
    held: list[Route] = []  # the page's /v1/connectivity calls, held until the test lets them go
    page.route("**/v1/connectivity", lambda route: held.append(route))
    sign_in(page, aggregator.url, TOKEN)
    section = page.locator("#view-overview")
    expect(section).to_have_attribute("data-state", "listed")  # from /v1/agents alone
    rows = page.locator("#matrix tbody tr")
    expect(rows).to_have_count(NODES + 2)
    pending = page.locator("#matrix td.pending .cell")
    expect(pending).to_have_count(NODES + 2)
    expect(pending).to_have_text(["probing…"] * (NODES + 2))
    expect(page.locator("#ov-summary")).to_contain_text(f"{NODES + 2} nodes · asking each")
    # filters, sorting and the page size work on the list already
    page.locator("#ov-node").fill("node-")
    expect(rows).to_have_count(NODES + 2)
    page.locator("#ov-node").fill("down")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-node") == "node-down"
    page.locator("#ov-node").fill("")
    expect(page.locator("#ov-cause option")).to_have_text(
        [f"all nodes ({NODES + 2})", f"probing… ({NODES + 2})"]
    )
    page.locator("#ov-sort").select_option("failing")
    expect(rows.first).to_have_attribute("data-node", "node-1")  # nothing known: by name
    # the matrix fails: the list stays, its cells no longer claim a probe is running
    assert len(held) == 1
    held.pop().fulfill(status=502, json={"error": "bad_gateway", "message": "held by the test"})
    expect(section).to_have_attribute("data-state", "error")
    expect(page.locator("#ov-error")).to_contain_text("held by the test")
    expect(pending).to_have_text(["not known"] * (NODES + 2))
    # asked again, for real: the same rows fill in, the sort still applies
    page.unroute("**/v1/connectivity")
    page.locator("#ov-refresh").click()
    _matrix(page)
    expect(pending).to_have_count(0)
    expect(page.locator("#ov-error")).to_have_text("")
    assert rows.first.get_attribute("data-node") in {"node-down", "node-slow"}
    expect(page.locator('#matrix tr[data-node="node-down"] td.unreachable')).to_contain_text(
        "did not answer"
    )
    plain = cluster.lab.registries["plain"]
    assert _cell(page, "node-1", f"http://{plain}/v2") == "ok"
    expect(page.locator("#ov-cause")).not_to_contain_text("probing")


def test_a_test_run_streams_rows_in_then_the_summary(
    watched: Watched, aggregator: Server, cluster: Cluster
) -> None:
    page = watched.page
    sign_in(page, aggregator.url, TOKEN)
    page.locator("#tab-test").click()
    page.locator("#test-image").fill(cluster.lab.images["missing_tag"])
    page.locator("#test-mode").select_option("resolve")
    page.locator("#test-run").click()
    section = page.locator("#view-test")
    # the quick nodes' rows are on the page while node-slow still holds the stream open
    rows = page.locator("#test-results tbody tr[data-node]")
    expect(rows).to_have_count(NODES + 1, timeout=20_000)
    assert section.get_attribute("data-state") == "running"
    expect(page.locator("#test-summary")).to_contain_text("running")
    expect(section).to_have_attribute("data-state", "done", timeout=30_000)
    expect(rows).to_have_count(NODES + 2)
    summary = page.locator("#test-summary")
    expect(summary).to_contain_text("manifest_not_found: 2")  # node-1 and node-3
    expect(summary).to_contain_text("http_https_mismatch: 1")  # node-2: no hosts.toml
    expect(summary).to_contain_text("agent_unreachable: 2")
    row = page.locator('#test-results tr[data-node="node-1"]')
    expect(row).to_contain_text("manifest_not_found")
    row.locator("button.open").click()
    detail = page.locator("#test-detail")
    expect(detail.locator('tr[data-probe="manifest"]')).to_contain_text("manifest_not_found")
    expect(detail).to_contain_text("Remedy")
    # a chip shows only the nodes of one cause
    summary.get_by_role("button", name="agent_unreachable: 2").click()
    expect(rows).to_have_count(2)


def test_a_prepull_jobs_progress_moves(
    watched: Watched, aggregator: Server, cluster: Cluster
) -> None:
    page = watched.page
    sign_in(page, aggregator.url, TOKEN)
    page.locator("#tab-jobs").click()
    job = page.locator(f'#jobs tr[data-job="{JOB}"]')
    expect(job).to_contain_text("0/", timeout=30_000)  # every node counted, none ready
    expect(page.locator("#job-detail")).to_be_visible()
    assert int(page.locator("#job-progress").get_attribute("value") or -1) == 0
    job.get_by_role("button", name=f"run {JOB} now").click()
    node_1 = page.locator('#job-nodes tr[data-node="node-1"]')
    expect(node_1).to_contain_text("done", timeout=120_000)  # one node at a time: it moves
    expect(job).to_contain_text("idle", timeout=120_000)
    for node in ("node-2", "node-3"):  # each settled: done, or failed with its cause
        row = page.locator(f'#job-nodes tr[data-node="{node}"]')
        expect(row).to_have_attribute("data-phase", re.compile("^(done|failed)$"))
    expect(page.locator('#job-nodes tr[data-node="node-down"]')).to_contain_text("pending")
    done = page.locator("#job-nodes tr[data-phase=done]").count()
    assert done >= 1
    expect(page.locator("#job-progress")).to_have_attribute("value", str(done))
    expect(job).to_contain_text(f"{done}/")

def test_script_and_html_in_an_image_name_or_a_registry_error_stay_text(
    watched: Watched, aggregator: Server, cluster: Cluster
) -> None:
    page = watched.page
    sign_in(page, aggregator.url, TOKEN)
    _matrix(page)
    hostile = f"http://{cluster.hostile}/v2"
    assert _cell(page, "node-3", hostile) == "registry_error"
    page.locator(f'#matrix button.cell[data-node="node-3"][data-column="{hostile}"]').click()
    expect(page.locator("#ov-detail")).to_contain_text(PAYLOAD, timeout=30_000)
    # an image name: refused by the aggregator, its message shown as it is
    page.locator("#tab-test").click()
    page.locator("#test-image").fill(PAYLOAD)
    page.locator("#test-run").click()
    expect(page.locator("#test-error")).to_contain_text("invalid_reference")
    expect(page.locator("#test-error")).to_contain_text(PAYLOAD)
    # a registry error in a node's result and in its evidence
    page.locator("#test-image").fill(f"{cluster.hostile}/evil/app:1.0")
    page.locator("#test-mode").select_option("resolve")
    page.locator("#test-nodes").fill("node-1")
    page.locator("#test-run").click()
    row = page.locator('#test-results tr[data-node="node-1"]')
    expect(row).to_contain_text("registry_error", timeout=30_000)
    expect(row).to_contain_text(PAYLOAD)
    row.locator("button.open").click()
    expect(page.locator("#test-detail")).to_contain_text(PAYLOAD)
    # nothing ran: no element came from the text, no handler fired
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main img, main script").count() == 0
    assert watched.dialogs == []


def test_read_only_offers_no_test_and_no_run(
    watched: Watched, read_only_aggregator: Server
) -> None:
    page = watched.page
    sign_in(page, read_only_aggregator.url, TOKEN)
    expect(page.locator("#mode-badge")).to_be_visible()
    page.locator("#tab-test").click()
    expect(page.locator("#test-readonly")).to_be_visible()
    expect(page.locator("#test-run")).to_be_hidden()
    page.locator("#tab-jobs").click()
    expect(page.locator(f'#jobs tr[data-job="{JOB}"]')).to_be_visible(timeout=30_000)
    expect(page.locator("#jobs")).not_to_contain_text("Run now")
    assert page.locator("button.run-now").count() == 0
    expect(page.locator("#tab-pods")).to_be_hidden()  # the pod diagnosis is off


@pytest.mark.parametrize("view", ["overview", "test", "jobs"])
def test_the_keyboard_reaches_every_control(
    watched: Watched, aggregator: Server, view: str
) -> None:
    page = watched.page
    sign_in(page, aggregator.url, TOKEN)
    page.locator("#tab-overview").focus()
    for _ in range(["overview", "test", "jobs"].index(view)):
        page.keyboard.press("ArrowRight")  # the tabs: arrows between them, as ARIA tabs do
    page.keyboard.press("Enter")
    ready = {"overview": "ready", "test": "idle", "jobs": "ready"}[view]
    page.locator(f"#view-{view}[data-state={ready}]").wait_for(timeout=60_000)
    controls = set(page.evaluate(_FOCUSABLE))
    assert len(controls) >= 5
    page.locator("body").focus()
    reached: set[str] = set()
    for _ in range(len(controls) + 5):
        page.keyboard.press("Tab")
        mark = page.evaluate("() => document.activeElement?.dataset.kb ?? ''")
        reached.add(mark)
    assert controls <= reached, f"not reached by Tab: {sorted(controls - reached)}"
