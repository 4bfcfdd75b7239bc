"""What every request to both HTTP APIs passes before a route runs: sizes (414/431, the request
guard), the token before any validation (401, the token dependency), duplicate parameters (400),
the body limit (413, chunked too); the float parameters (no nan/inf/negative); and the real
server's protocol bound and access log.

In-process through ``httpx.ASGITransport`` (no lab: nothing here reaches a runtime or registry);
the last tests run a real uvicorn server as ``pullcheck agent`` configures it.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from agent.cli._serve import max_request_head, uvicorn_config
from agent.cluster.app import AggregatorState, create_aggregator_app
from agent.node.app import create_agent_app
from agent.node.state import AgentState
from agent.service.config import Settings
from agent.service.guard import MAX_HEADERS
from tests.unit.conftest import capture_uvicorn_logs, serving

TOKEN = "guard-test-token-4e1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY_LIMIT = 4096
DENIED_IMAGE = "evil.example.com/x:1"  # outside the allowlist: a request that gets this far is 403


def settings(tmp_path: Path) -> Settings:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return Settings.model_validate(
        {
            "token_file": str(token),
            "allow": ["docker.io/pullcheck/*"],
            "registries": [],
            "limits": {"max_body_bytes": BODY_LIMIT, "rate_limit_per_minute": 0},
            "agent": {"runtime_endpoint": f"unix://{tmp_path}/no-runtime.sock"},
            "aggregator": {"discovery": {"mode": "static", "agents": ["127.0.0.1:9"]}},
        }
    )


def agent_app(tmp_path: Path) -> FastAPI:
    return create_agent_app(AgentState(settings(tmp_path), name="guarded"))


def aggregator_app(tmp_path: Path) -> FastAPI:
    return create_aggregator_app(AggregatorState(settings(tmp_path)))


APPS: dict[str, Callable[[Path], FastAPI]] = {"agent": agent_app, "aggregator": aggregator_app}


@asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://guarded") as http:
        yield http


def padded(size: int) -> bytes:
    """A valid JSON body of exactly ``size`` bytes that reaches the allowlist check (403)."""
    head, tail = f'{{"image": "{DENIED_IMAGE}"'.encode(), b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


async def chunks(size: int) -> AsyncIterator[bytes]:
    """:func:`padded` sent chunked (no Content-Length), 1000 bytes at a time."""
    body = padded(size)
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


def error_of(reply: httpx.Response) -> str:
    body = reply.json()
    assert set(body) == {"error", "message"}, body
    return str(body["error"])


# --- the token comes first -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(APPS))
async def test_only_health_is_public(kind: str, tmp_path: Path) -> None:
    async with client(APPS[kind](tmp_path)) as http:
        assert (await http.get("/healthz")).status_code == 200
        for path in ("/v1/pulltest?image=x", "/metrics", "/openapi.json", "/no/such/route"):
            reply = await http.get(path)
            assert reply.status_code == 401, (path, reply.text)
            assert error_of(reply) == "unauthorized"
            assert reply.headers["www-authenticate"] == 'Bearer realm="pullcheck"'
            assert reply.headers["connection"] == "close"
        twice = [("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer other")]
        assert (await http.get("/metrics", headers=twice)).status_code == 401
        assert (await http.get("/metrics", headers=AUTH)).status_code == 200
        missing = await http.get("/no/such/route", headers=AUTH)
        assert missing.status_code == 404
        assert missing.json() == {"error": "not_found", "message": "no such endpoint"}
        wrong = await http.delete("/metrics", headers=AUTH)
        assert wrong.status_code == 405
        assert error_of(wrong) == "method_not_allowed"


NO_TOKEN_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/pulltest", {}),  # image missing
    ("GET", "/v1/pulltest?image=x&timeout=abc", {}),
    ("GET", "/v1/pulltest?image=x&timeout=nan", {}),
    ("GET", "/v1/pulltest?image=x&colour=blue", {}),
    ("GET", "/v1/pulltest?image=x&image=y", {}),
    ("GET", "/v1/pulltest?image=" + "a" * 2000, {}),  # over the parameter's max_length
    ("POST", "/v1/pulltest", {"content": b"{not json"}),
    ("POST", "/v1/pulltest", {"json": {"image": "x", "colour": "blue"}}),
    ("POST", "/v1/pulltest", {"content": b"x" * (BODY_LIMIT + 1)}),
    ("POST", "/v1/pulltest", {"content": chunks}),  # chunked, over the limit
]


@pytest.mark.parametrize("kind", list(APPS))
@pytest.mark.parametrize(("method", "path", "options"), NO_TOKEN_REQUESTS)
async def test_without_the_token_bad_input_is_401_not_its_reason(
    kind: str, method: str, path: str, options: dict[str, Any], tmp_path: Path
) -> None:
    if options.get("content") is chunks:
        options = {"content": chunks(BODY_LIMIT * 4)}
    async with client(APPS[kind](tmp_path)) as http:
        reply = await http.request(method, path, **options)
    assert reply.status_code == 401, reply.text
    assert error_of(reply) == "unauthorized"


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(APPS))
async def test_an_overlong_target_is_414_and_health_still_answers(
    kind: str, tmp_path: Path
) -> None:
    async with client(APPS[kind](tmp_path)) as http:
        for path in ("/healthz?x=" + "a" * 9000, "/" + "a." * 5000, "/healthz?" + "&k=v" * 3000):
            reply = await http.get(path, headers=AUTH)
            assert reply.status_code == 414, reply.text
            assert error_of(reply) == "uri_too_long"
        assert (await http.get("/healthz?x=" + "a" * 8000)).status_code == 200  # under 8 KiB
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize("kind", list(APPS))
async def test_too_much_header_is_431(kind: str, tmp_path: Path) -> None:
    many = [(f"x-h{i}", "1") for i in range(MAX_HEADERS + 1)]
    async with client(APPS[kind](tmp_path)) as http:
        for headers in ({"x-big": "a" * 17_000}, many):
            reply = await http.get("/healthz", headers=headers)
            assert reply.status_code == 431, reply.text
            assert error_of(reply) == "headers_too_large"
        assert (await http.get("/healthz", headers={"x-ok": "a" * 8000})).status_code == 200


# --- duplicates and the body ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "name"),
    [
        ("agent", f"/v1/pulltest?image={DENIED_IMAGE}&image=docker.io/pullcheck/good:1", "image"),
        ("agent", f"/v1/pulltest?image={DENIED_IMAGE}&mode=resolve&mode=pull", "mode"),
        ("aggregator", f"/v1/pulltest?image={DENIED_IMAGE}&nodes=a&nodes=b", "nodes"),
        ("aggregator", "/v1/agents?x=1&x=2", "x"),
    ],
)
async def test_a_duplicate_query_parameter_is_400_naming_it(
    kind: str, path: str, name: str, tmp_path: Path
) -> None:
    async with client(APPS[kind](tmp_path)) as http:
        reply = await http.get(path, headers=AUTH)
    assert reply.status_code == 400, reply.text
    message = reply.json()["message"]
    assert message == f"query parameter {name!r} given more than once"


@pytest.mark.parametrize("kind", list(APPS))
async def test_an_oversized_body_is_413_chunked_or_not(kind: str, tmp_path: Path) -> None:
    async with client(APPS[kind](tmp_path)) as http:
        refused: list[dict[str, Any]] = [
            {"content": chunks(BODY_LIMIT + 1)},
            {"content": b"x" * (BODY_LIMIT + 1)},
            {"content": b"", "headers": {**AUTH, "content-length": str(10**12)}},
            {"content": b"", "headers": {**AUTH, "content-length": "9" * 5000}},
        ]
        for options in refused:
            options.setdefault("headers", AUTH)
            reply = await http.post("/v1/pulltest", **options)
            assert reply.status_code == 413, reply.text
            assert error_of(reply) == "body_too_large"
        # a body at the limit reaches the route whole, chunked or not
        for content in (chunks(BODY_LIMIT), padded(BODY_LIMIT)):
            headers = {**AUTH, "content-type": "application/json"}
            reply = await http.post("/v1/pulltest", content=content, headers=headers)
            assert reply.status_code == 403 and error_of(reply) == "not_allowed", reply.text


# --- floats a caller sends -----------------------------------------------------------------------

BAD_TIMEOUTS = {"nan": "finite", "inf": "finite", "-inf": "finite", "1e999": "finite", "-1": "0"}


@pytest.mark.parametrize("kind", list(APPS))
@pytest.mark.parametrize(("value", "reason"), BAD_TIMEOUTS.items())
async def test_a_bad_timeout_query_is_400_naming_it(
    kind: str, value: str, reason: str, tmp_path: Path
) -> None:
    async with client(APPS[kind](tmp_path)) as http:
        reply = await http.get(f"/v1/pulltest?image={DENIED_IMAGE}&timeout={value}", headers=AUTH)
    assert reply.status_code == 400, reply.text
    message = reply.json()["message"]
    assert message.startswith("timeout: ") and reason in message, message


@pytest.mark.parametrize(
    ("kind", "path"),
    [("agent", "/v1/pulltest"), ("agent", "/v1/prepull"), ("aggregator", "/v1/pulltest")],
)
@pytest.mark.parametrize(("value", "reason"), [*BAD_TIMEOUTS.items(), ("NaN", "finite")])
async def test_a_bad_timeout_in_a_body_is_400_naming_it(
    kind: str, path: str, value: str, reason: str, tmp_path: Path
) -> None:
    literal = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(value, value)
    body = f'{{"image": "{DENIED_IMAGE}", "timeout": {literal}}}'.encode()
    async with client(APPS[kind](tmp_path)) as http:
        headers = {**AUTH, "content-type": "application/json"}
        reply = await http.post(path, content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    message = reply.json()["message"]
    assert message.startswith("timeout: ") and reason in message, message


# --- metrics of refused requests -----------------------------------------------------------------


def _requests_total(text: str, endpoint: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pullcheck_aggregator_requests_total" and sample.labels == {
                "endpoint": endpoint,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


async def test_the_aggregator_counts_requests_refused_before_routing(tmp_path: Path) -> None:
    async with client(aggregator_app(tmp_path)) as http:
        await http.get("/v1/pulltest?image=x")
        await http.get("/v1/prepull/jobs/x", headers={"Authorization": "Bearer wrong"})
        await http.get("/v1/agents?x=1&x=2", headers=AUTH)
        await http.get("/v1/connectivity?" + "a" * 9000, headers=AUTH)
        text = (await http.get("/metrics", headers=AUTH)).text
    assert _requests_total(text, "pulltest", "unauthorized") == 1
    assert _requests_total(text, "prepull", "unauthorized") == 1
    assert _requests_total(text, "agents", "bad_request") == 1
    assert _requests_total(text, "connectivity", "other") == 1


# --- the real server -----------------------------------------------------------------------------


async def _raw_request(url: str, head: bytes) -> bytes:
    """Send a raw request head; the whole answer (the server closes after a refusal)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.usefixtures("restore_logging")
async def test_the_real_server_bounds_the_head_and_logs_no_credentials(tmp_path: Path) -> None:
    config = settings(tmp_path)
    app = create_agent_app(AgentState(config, name="guarded"))
    out = io.StringIO()
    server_config = uvicorn_config(app, "127.0.0.1", 0, "info", config.limits)
    capture_uvicorn_logs(out)
    huge = "/healthz?x=" + "a" * max_request_head(config.limits)
    async with serving(server_config) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get("/v1/pulltest?image=a&creds=bob:hunter2&%70assword=hunter2")
        unknown = await http.get("/v1/pulltest?image=a&creds=bob:hunter2", headers=AUTH)
        long = await http.get("/healthz?x=" + "a" * 9000)
        chunked = await _raw_request(
            url,
            b"POST /v1/pulltest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            + f"{BODY_LIMIT + 1:x}\r\n".encode()
            + b"x" * (BODY_LIMIT + 1),  # and never the rest
        )
        # a head still incomplete past the bound (no blank line yet): h11 refuses it
        protocol = await _raw_request(url, f"GET {huge} HTTP/1.1\r\nHost: x\r\n".encode())
        health = await http.get("/healthz")
    assert refused.status_code == 401
    assert unknown.status_code == 400 and "creds" in unknown.json()["message"]
    assert long.status_code == 414
    # answered and closed at once, the rest of the body unread
    assert chunked.startswith(b"HTTP/1.1 413 ") and b'"body_too_large"' in chunked
    assert b"\r\nconnection: close\r\n" in chunked.lower()
    assert protocol.startswith(b"HTTP/1.1 400 ")  # before the app: no access line
    assert health.status_code == 200
    log = out.getvalue()
    assert "hunter2" not in log
    access = [json.loads(line) for line in log.splitlines() if '"http_request"' in line]
    paths = [line["path"] for line in access]
    assert paths[:2] == [
        "/v1/pulltest?image=a&creds=<redacted>&password=<redacted>",
        "/v1/pulltest?image=a&creds=<redacted>",
    ]
    assert paths[2].startswith("/healthz?x=aaa") and paths[2].endswith("…(+6963 chars)")
    assert [line["status"] for line in access] == [401, 400, 414, 413, 200]
