"""The node agent's API in-process (``httpx.ASGITransport``): no root, no lab, no containerd.

Auth (every route but health needs the token, whatever else is wrong with the request), the
served schema, validation (400 naming the field, never its value), limits (rate limit, body),
and the runner behind ``/v1/pulltest``: single-flight, TTL reuse and a full queue. The runtime is
a missing CRI socket (``runtime_unavailable`` at once); the registry is a loopback listener this
test holds open or closes, so a test runs until the test lets it finish.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Message, Scope

from agent.node.app import create_agent_app
from agent.node.models import PrepullBody, PullTestBody
from agent.node.routes import ROUTERS
from agent.node.state import AgentState
from agent.service.config import Settings
from tests.unit.metrics_support import value

TOKEN = "node-api-test-token-7c1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "content-type": "application/json"}
JSON_TYPE = [(b"content-type", b"application/json")]
ALLOWED = "docker.io/pullcheck/x:1"
PUBLIC = {"/healthz", "/readyz"}
PROTECTED = {
    "/metrics",
    "/openapi.json",
    "/v1/pulltest",
    "/v1/prepull",
    "/v1/connectivity",
    "/v1/images",
    "/v1/runtime",
}
SECRET = "hunter2-s3cr3t"  # a value no answer may repeat


def settings(tmp_path: Path, *, read_only: bool = False, **limits: Any) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmp_path / "hosts").write_text("")
    (tmp_path / "certs.d").mkdir(exist_ok=True)
    return Settings.model_validate(
        {
            "token_file": str(token),
            "allow": ["docker.io/pullcheck/*", "127.0.0.1:*/*"],
            "registries": [],
            "read_only": read_only,
            "limits": {"max_body_bytes": 4096, "rate_limit_per_minute": 0, **limits},
            "agent": {
                "runtime_endpoint": f"unix://{tmp_path}/missing.sock",
                "resolv_conf": str(tmp_path / "resolv.conf"),
                "hosts_file": str(tmp_path / "hosts"),
                "registry_config_path": str(tmp_path / "certs.d"),
            },
        }
    )


@asynccontextmanager
async def serving(state: AgentState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_agent_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        yield http


def agent(tmp_path: Path, **options: Any) -> AgentState:
    return AgentState(settings(tmp_path, **options), name="in-process")


def routes() -> Iterator[tuple[str, str]]:
    """Every method and path the agent's app mounts."""
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in sorted(route.methods or ()):
                yield method, route.path


def error_of(reply: httpx.Response) -> dict[str, str]:
    body = reply.json()
    assert set(body) == {"error", "message"}, body
    return {str(k): str(v) for k, v in body.items()}


class Registry:
    """A loopback listener standing in for a registry: it holds every connection open (a test
    against it waits) until :meth:`release`, then closes them and every later one at once."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.connections = 0
        self.port = 0

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.released.wait()
        writer.close()

    def release(self) -> None:
        self.released.set()

    def image(self, name: str) -> str:
        return f"127.0.0.1:{self.port}/pullcheck/{name}:1"

    @classmethod
    @asynccontextmanager
    async def running(cls, *, released: bool = False) -> AsyncIterator[Registry]:
        registry = cls()
        if released:
            registry.release()
        server = await asyncio.start_server(registry._serve, "127.0.0.1", 0)
        registry.port = server.sockets[0].getsockname()[1]
        try:
            yield registry
        finally:
            registry.release()
            server.close()
            await server.wait_closed()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (bounded, so a broken runner fails instead of hanging)."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


# --- auth -----------------------------------------------------------------------------------------


async def test_every_route_but_health_needs_the_token(tmp_path: Path) -> None:
    state = agent(tmp_path)
    assert {path for _method, path in routes()} == PUBLIC | PROTECTED
    twice = [("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")]
    refused: list[dict[str, Any]] = [
        {},
        {"headers": {"Authorization": "Bearer not-the-token"}},
        {"headers": {"Authorization": f"Basic {TOKEN}"}},
        {"headers": {"Authorization": "Bearer"}},
        {"headers": twice},
    ]
    async with serving(state) as http:
        for method, path in routes():
            for options in refused:
                reply = await http.request(method, path, **options)
                if path in PUBLIC:
                    assert reply.status_code in (200, 503), (method, path, reply.text)
                    continue
                assert reply.status_code == 401, (method, path, options, reply.text)
                assert error_of(reply)["error"] == "unauthorized"
                assert reply.headers["www-authenticate"] == 'Bearer realm="pullcheck"'
                assert reply.headers["connection"] == "close"
        assert (await http.get("/healthz")).json() == {"status": "ok", "node": "in-process"}
        ready = await http.get("/readyz")  # the runtime is a missing socket
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "missing.sock" in ready.json()["runtime"]
        assert (await http.get("/metrics", headers=AUTH)).status_code == 200


async def test_without_the_token_no_path_or_method_is_revealed(tmp_path: Path) -> None:
    async with serving(agent(tmp_path)) as http:
        for method, path in [("GET", "/no/such/route"), ("DELETE", "/metrics")]:
            assert (await http.request(method, path)).status_code == 401, path
        assert (await http.get("/no/such/route", headers=AUTH)).status_code == 404
        wrong = await http.delete("/metrics", headers=AUTH)
        assert wrong.status_code == 405 and error_of(wrong)["error"] == "method_not_allowed"
        public = await http.delete("/healthz")  # a public path's wrong method needs no token
        assert public.status_code == 405 and error_of(public)["error"] == "method_not_allowed"


async def test_a_disabled_token_lets_everyone_in(tmp_path: Path) -> None:
    config = settings(tmp_path).model_copy(update={"auth": False})
    async with serving(AgentState(config, name="open")) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/no/such/route")).status_code == 404


async def test_the_schema_shows_the_scheme_every_answer_and_the_bodies(tmp_path: Path) -> None:
    async with serving(agent(tmp_path)) as http:
        schema = (await http.get("/openapi.json", headers=AUTH)).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    error = {"$ref": "#/components/schemas/ErrorAnswer"}
    operations = [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]
    assert {p for p, _m, _op in operations} == PUBLIC | PROTECTED - {"/openapi.json"}
    for path, method, op in operations:
        where = f"{method} {path}"
        assert ("security" in op) == (path in PROTECTED), where
        if path in PROTECTED:
            assert op["security"] == [{"bearer": []}], where
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == error
        ok = op["responses"]["200"]["content"]
        assert [s for s in ok.values() if s.get("schema")], where  # every answer is described
        assert op["responses"]["4XX"]["content"]["application/json"]["schema"] == error, where
        assert "422" not in op["responses"], where  # invalid input is a 400
    bodies: dict[tuple[str, str], type[BaseModel]] = {
        ("/v1/pulltest", "post"): PullTestBody,
        ("/v1/prepull", "post"): PrepullBody,
    }
    for (path, method), model in bodies.items():
        body = schema["paths"][path][method]["requestBody"]
        assert body["required"] is True
        fields = body["content"]["application/json"]["schema"]["properties"]
        assert set(fields) == set(model.model_fields), path
    assert "requestBody" not in schema["paths"]["/v1/pulltest"]["get"]
    pulltest = schema["paths"]["/v1/pulltest"]["get"]["responses"]
    assert pulltest["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PullTestResult"
    }
    assert "507" in pulltest and "429" in pulltest


# --- validation -------------------------------------------------------------------------------


BAD_INPUT: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("GET", "/v1/pulltest", {}, ["image"]),
    ("GET", f"/v1/pulltest?image={ALLOWED}&timeout={SECRET}", {}, ["timeout"]),
    ("GET", f"/v1/pulltest?image={ALLOWED}&mode={SECRET}", {}, ["mode"]),
    ("GET", f"/v1/pulltest?image={ALLOWED}&password={SECRET}", {}, ["password"]),
    ("GET", f"/v1/pulltest?image={ALLOWED}&image={SECRET}", {}, ["'image'", "more than once"]),
    ("GET", f"/v1/images?colour={SECRET}", {}, ["colour"]),
    ("POST", "/v1/pulltest", {"content": b"{" + SECRET.encode()}, ["JSON"]),
    ("POST", "/v1/pulltest", {"content": b""}, ["request"]),
    ("POST", "/v1/pulltest", {"json": [SECRET]}, ["request"]),
    (
        "POST",
        "/v1/pulltest",
        {"json": {"image": ALLOWED, "mode": SECRET, "creds": 7, "timeout": "NaN"}},
        ["mode", "creds", "timeout"],
    ),
    ("POST", "/v1/pulltest", {"json": {"image": ALLOWED, "colour": SECRET}}, ["colour"]),
    ("POST", "/v1/prepull", {"json": {"image": ALLOWED, "policy": SECRET}}, ["policy"]),
    ("POST", "/v1/prepull", {"json": {"image": ALLOWED, "timeout": -1}}, ["timeout"]),
]


@pytest.mark.parametrize(("method", "path", "options", "named"), BAD_INPUT)
async def test_bad_input_is_400_naming_the_field_never_its_value(
    method: str, path: str, options: dict[str, Any], named: list[str], tmp_path: Path
) -> None:
    async with serving(agent(tmp_path)) as http:
        reply = await http.request(method, path, headers=JSON, **options)
    assert reply.status_code == 400, reply.text
    answer = error_of(reply)
    assert answer["error"] == "bad_request"
    for name in named:
        assert name in answer["message"], answer
    assert SECRET not in reply.text


async def test_a_body_that_is_not_json_is_400(tmp_path: Path) -> None:
    body = json.dumps({"image": ALLOWED}).encode()
    async with serving(agent(tmp_path)) as http:
        for content_type in (None, "text/plain", "application/xml"):
            headers = AUTH if content_type is None else {**AUTH, "content-type": content_type}
            reply = await http.post("/v1/pulltest", content=body, headers=headers)
            assert reply.status_code == 400, (content_type, reply.text)
        vendor = {**AUTH, "content-type": "application/vnd.pullcheck+json"}
        reply = await http.post("/v1/pulltest", json={"image": "evil.example/x:1"}, headers=vendor)
        assert reply.status_code == 403, reply.text  # +json is JSON: it got to the allowlist


async def test_credentials_that_do_not_parse_are_400_without_them(tmp_path: Path) -> None:
    bodies = [
        {"image": ALLOWED, "creds": f":{SECRET}"},
        {"image": ALLOWED, "auth": SECRET},
        {"image": ALLOWED, "docker_config": "{" + SECRET},
        {"image": ALLOWED, "docker_config": {"auths": {"x": {"auth": SECRET}}}},
    ]
    async with serving(agent(tmp_path)) as http:
        for body in bodies:
            reply = await http.post("/v1/pulltest", json=body, headers=AUTH)
            assert reply.status_code == 400, reply.text
            assert error_of(reply)["error"] == "invalid_credentials"
            assert SECRET not in reply.text


async def test_policy_refusals_name_the_reason(tmp_path: Path) -> None:
    denied = "evil.example/x:1"
    async with serving(agent(tmp_path / "rw")) as http:
        refusals = [
            await http.get("/v1/pulltest", params={"image": denied}, headers=AUTH),
            await http.post("/v1/pulltest", json={"image": denied}, headers=AUTH),
            await http.post("/v1/prepull", json={"image": denied}, headers=AUTH),
        ]
        for reply in refusals:
            assert reply.status_code == 403 and error_of(reply)["error"] == "not_allowed"
        reply = await http.post("/v1/prepull", json={"image": ALLOWED}, headers=AUTH)
        assert reply.status_code == 503 and error_of(reply)["error"] == "runtime_unavailable"
        for path in ("/v1/images", "/v1/runtime"):
            reply = await http.get(path, headers=AUTH)
            assert reply.status_code == 503 and error_of(reply)["error"] == "runtime_unavailable"
    async with serving(agent(tmp_path / "ro", read_only=True)) as http:
        reply = await http.post("/v1/prepull", json={"image": ALLOWED}, headers=AUTH)
        assert reply.status_code == 403 and error_of(reply)["error"] == "read_only"
        reply = await http.get("/v1/pulltest", params={"image": ALLOWED, "mode": "pull"})
        assert reply.status_code == 401  # the token still comes first
        reply = await http.get(
            "/v1/pulltest", params={"image": ALLOWED, "mode": "pull"}, headers=AUTH
        )
        assert reply.status_code == 403 and error_of(reply)["error"] == "read_only"


# --- limits -------------------------------------------------------------------------------------


async def test_the_rate_limit_is_429_with_retry_after_and_counted(tmp_path: Path) -> None:
    state = agent(tmp_path, rate_limit_per_minute=1, rate_limit_burst=1)
    async with serving(state) as http:
        first = await http.get("/v1/runtime", headers=AUTH)
        assert first.status_code == 503  # got through (to the missing runtime)
        limited = await http.get("/v1/images", headers=AUTH)
        assert limited.status_code == 429 and error_of(limited)["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        unauthenticated = await http.get("/v1/images")
        assert unauthenticated.status_code == 401  # the token first: no bucket spent or told
        # health, metrics, the schema and pre-pulls are not rate limited
        assert (await http.get("/healthz")).status_code == 200
        for _ in range(3):
            assert (await http.get("/metrics", headers=AUTH)).status_code == 200
            assert (await http.get("/openapi.json", headers=AUTH)).status_code == 200
    assert value(state.metrics, "pullcheck_pulltest_requests_total", outcome="rejected") == 1


async def test_an_oversized_body_is_413_but_only_with_the_token(tmp_path: Path) -> None:
    big = json.dumps({"image": ALLOWED, "docker_config": "x" * 5000}).encode()
    async with serving(agent(tmp_path)) as http:
        for path in ("/v1/prepull", "/v1/pulltest"):
            refused = await http.post(path, content=big, headers=JSON)
            assert refused.status_code == 413, refused.text
            assert error_of(refused)["error"] == "body_too_large"
            assert refused.headers["connection"] == "close"
            stranger = await http.post(path, content=big, headers={"content-type": "x/y"})
            assert stranger.status_code == 401, stranger.text
        long = await http.get("/v1/images?x=" + "a" * 9000, headers=AUTH)
        assert long.status_code == 414 and error_of(long)["error"] == "uri_too_long"
        many = [(f"x-h{i}", "1") for i in range(101)]
        crowded = await http.get("/healthz", headers=many)
        assert crowded.status_code == 431 and error_of(crowded)["error"] == "headers_too_large"


async def test_a_client_gone_mid_body_gets_nothing_and_raises_nothing(tmp_path: Path) -> None:
    app = create_agent_app(agent(tmp_path))
    arriving: list[Message] = [
        {"type": "http.request", "body": b'{"ima', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/pulltest",
        "raw_path": b"/v1/pulltest",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode()), *JSON_TYPE],
        "client": ("127.0.0.1", 40000),
        "server": ("node", 80),
    }
    await app(scope, receive, send)  # no 500 (nor a traceback in the log) for nobody
    assert sent == []


# --- the runner behind /v1/pulltest -------------------------------------------------------------


async def pulltest(http: httpx.AsyncClient, image: str, mode: str) -> httpx.Response:
    return await http.get("/v1/pulltest", params={"image": image, "mode": mode}, headers=AUTH)


@contextmanager
def all_finished(tasks: list[asyncio.Task[httpx.Response]]) -> Iterator[None]:
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()


async def test_identical_tests_at_once_share_one_run(tmp_path: Path) -> None:
    state = agent(tmp_path, result_ttl=0)
    async with Registry.running() as registry, serving(state) as http:
        image = registry.image("shared")
        tasks = [asyncio.create_task(pulltest(http, image, "resolve")) for _ in range(5)]
        with all_finished(tasks):
            # every caller is inside the runner while the one test waits for the registry
            await until(
                lambda: (
                    value(state.metrics, "pullcheck_pulltests_in_flight") == 5
                    and registry.connections >= 1
                )
            )
            assert state.runner.fresh_runs == 0
            registry.release()
            replies = await asyncio.gather(*tasks)
    assert [r.status_code for r in replies] == [200] * 5
    assert len({r.content for r in replies}) == 1  # one result, shared
    assert replies[0].json()["image"] == image and replies[0].json()["node"] == "in-process"
    assert state.runner.fresh_runs == 1
    assert value(state.metrics, "pullcheck_pulltest_requests_total", outcome="shared") == 4
    assert value(state.metrics, "pullcheck_pulltest_requests_total", outcome="fresh") == 1


@pytest.mark.parametrize(("ttl", "runs"), [(30, 1), (0, 2)])
async def test_a_result_is_reused_for_the_ttl_only(tmp_path: Path, ttl: int, runs: int) -> None:
    state = agent(tmp_path, result_ttl=ttl)
    async with Registry.running(released=True) as registry, serving(state) as http:
        image = registry.image("reused")
        first = await pulltest(http, image, "resolve")
        second = await pulltest(http, image, "resolve")
        other_mode = await pulltest(http, image, "pull")  # another key: never the cached one
    assert first.status_code == second.status_code == other_mode.status_code == 200
    assert first.json()["success"] is False  # the "registry" closes every connection
    assert other_mode.json()["mode"] == "pull"
    assert state.runner.fresh_runs == runs + 1
    assert (first.content == second.content) == (ttl > 0)
    reused = value(state.metrics, "pullcheck_pulltest_requests_total", outcome="reused")
    assert reused == (1 if ttl > 0 else 0)


async def test_a_full_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    state = agent(tmp_path, pull_concurrency=1, pull_queue=0, result_ttl=0)
    async with (
        Registry.running() as registry,
        Registry.running() as other,
        serving(state) as http,
    ):
        busy = asyncio.create_task(pulltest(http, registry.image("slow"), "pull"))
        with all_finished([busy]):
            await until(lambda: registry.connections >= 1)  # the only pull slot is taken
            full = await pulltest(http, other.image("other"), "pull")
            resolve = asyncio.create_task(pulltest(http, other.image("other"), "resolve"))
            await until(lambda: other.connections >= 1)  # resolves have their own lane
            registry.release()
            other.release()
            done, resolved = await busy, await resolve
    assert full.status_code == 429, full.text
    assert error_of(full)["error"] == "queue_full" and int(full.headers["retry-after"]) >= 1
    assert done.status_code == 200 and done.json()["mode"] == "pull"
    assert resolved.status_code == 200 and resolved.json()["mode"] == "resolve"
    assert state.runner.fresh_runs == 2  # the refused one never ran
    assert value(state.metrics, "pullcheck_pulltest_requests_total", outcome="rejected") == 1
