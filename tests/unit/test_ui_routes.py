"""The dashboard's routes in-process: its files (public, strict CSP, only the package's files),
``/ui/api/settings`` and one node's connectivity (behind the token). The page itself is tested
in a real browser (``tests/browser``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.cluster.app import AggregatorState, create_aggregator_app
from agent.cluster.routes.ui import CONTENT_SECURITY_POLICY
from tests.unit.test_cluster_api import (
    AUTH,
    NOT_ALLOWED,
    _agents,
    _closed,
    _settings,
    _static,
    aggregator,
)

STATIC = Path(__file__).resolve().parents[2] / "agent/cluster/ui/static"


async def test_the_files_are_public_with_a_strict_policy(tmp_path: Path) -> None:
    async with aggregator(tmp_path, {}, []) as (client, _state):
        for path, media in (
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ):
            reply = await client.get(path)  # no token: the files hold no data
            assert reply.status_code == 200, (path, reply.text)
            assert reply.headers["content-type"].startswith(media)
            assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert reply.headers["x-frame-options"] == "DENY"
        moved = await client.get("/ui")
        assert moved.status_code == 308 and moved.headers["location"] == "/ui/"
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("name", ["../app.py", "..%2Fapp.py", "__init__.py", "x" * 65, "static"])
async def test_nothing_but_the_dashboards_files_is_served(tmp_path: Path, name: str) -> None:
    async with aggregator(tmp_path, {}, []) as (client, _state):
        reply = await client.get(f"/ui/{name}", headers=AUTH)
    assert reply.status_code in {400, 404}, reply.text
    assert "import" not in reply.text


def test_the_page_has_no_inline_script_style_or_remote_load() -> None:
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="app.js" defer>']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    for text in (page, (STATIC / "app.css").read_text(), (STATIC / "app.js").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    script = (STATIC / "app.js").read_text()
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script
    assert "eval(" not in script and "new Function" not in script


async def test_settings_need_the_token_and_tell_read_only(tmp_path: Path) -> None:
    async with aggregator(tmp_path, {}, []) as (client, state):
        assert (await client.get("/ui/api/settings")).status_code == 401
        reply = await client.get("/ui/api/settings", headers=AUTH)
        assert reply.status_code == 200
        body: dict[str, Any] = reply.json()
        assert body["read_only"] is False and body["pod_diagnosis"] is False
        assert body["max_timeout"] == state.settings.limits.max_timeout
    read_only = _settings(tmp_path, []).model_copy(update={"read_only": True})
    state = AggregatorState(read_only)
    transport = httpx.ASGITransport(create_aggregator_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://aggregator") as client:
        reply = await client.get("/ui/api/settings", headers=AUTH)
    await state.close()
    assert reply.json()["read_only"] is True

async def test_one_nodes_connectivity_in_full_or_why_not(tmp_path: Path) -> None:
    agents = _agents(node_1={"/v1/connectivity": "connectivity"}, node_2=NOT_ALLOWED)
    async with aggregator(tmp_path, agents, _static(agents, _closed())) as (client, _state):
        assert (await client.get("/ui/api/nodes/node-1/connectivity")).status_code == 401
        full = (await client.get("/ui/api/nodes/node-1/connectivity", headers=AUTH)).json()
        assert full["node"] == "node-1" and full["agent"].endswith("node-1.test:8479")
        probes = full["registries"][0]["endpoints"][0]["probes"]
        assert [p["probe"] for p in probes][:2] == ["dns", "tcp"]
        assert all("duration_ms" in p and "phases" in p for p in probes)
        refused = (await client.get("/ui/api/nodes/node-2/connectivity", headers=AUTH)).json()
        assert refused["success"] is False and refused["cause"] == "agent_refused"
        down = (await client.get("/ui/api/nodes/node-down/connectivity", headers=AUTH)).json()
        assert down["cause"] == "agent_unreachable" and "node-down" in down["remedy"]
        missing = await client.get("/ui/api/nodes/node-9/connectivity", headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"] == "node_not_found"
        assert "node-9" in missing.json()["message"]
