"""Structured JSON logs: one parseable line per event, the pull-test line, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from typing import Any

import httpx
import pytest
import uvicorn

from agent.models import Cause, PullTestResult
from agent.service.logs import (
    MAX_LOGGED_TARGET,
    JsonFormatter,
    configure_logging,
    log_event,
    log_pulltest,
    uvicorn_log_config,
)
from tests.unit.conftest import capture_uvicorn_logs, serving

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SECRETS = ("hunter2", "s3cr3t-t0k3n", "Ym9iOmh1bnRlcjI=", "eyJhbGciOi.payload.sig")
DIGEST = "sha256:" + "ab" * 32

pytestmark = pytest.mark.usefixtures("restore_logging")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def result(**update: Any) -> PullTestResult:
    base = PullTestResult(
        pullcheck_version="0.1.0",
        node="node-a",
        image="quay.io/org/app:1",
        reference="quay.io/org/app:1",
        mode="pull",
        success=True,
        started_at="2025-01-01T00:00:00Z",
        duration_ms=1234.5678,
    )
    return base.model_copy(update=update)


# --- the formatter ---------------------------------------------------------------------------


def test_plain_log_call_is_one_json_line_with_fields() -> None:
    out = io.StringIO()
    configure_logging("debug", out)
    log = logging.getLogger("pullcheck.agent")
    log.info("hello %s", "world", extra={"fields": {"attempt": 2, "ok": True, "tags": ["a"]}})
    log.debug("multi\nline message")
    first, second = lines(out)
    assert RFC3339_UTC.match(first["ts"]), first["ts"]
    assert first["level"] == "info"
    assert first["logger"] == "pullcheck.agent"
    assert first["event"] == "hello world"
    assert first["attempt"] == 2 and first["ok"] is True and first["tags"] == ["a"]
    assert second["level"] == "debug" and second["event"] == "multi\nline message"
    assert out.getvalue().count("\n") == 2  # newlines inside values are escaped


def test_log_event_and_extra_keys() -> None:
    out = io.StringIO()
    log = configure_logging("info", out)
    log_event(log, "cache_evicted", entries=3, registry="docker.io")
    log.info("plain", extra={"request_id": "r-1"})
    log_event(log, "too_verbose", level=logging.DEBUG)  # below the level: nothing
    evicted, plain = lines(out)
    assert evicted["event"] == "cache_evicted" and evicted["logger"] == "pullcheck"
    assert evicted["entries"] == 3 and evicted["registry"] == "docker.io"
    assert plain["event"] == "plain" and plain["request_id"] == "r-1"


def test_agent_module_loggers_are_json_too_and_configure_is_idempotent() -> None:
    first, out = io.StringIO(), io.StringIO()
    configure_logging("info", first)
    configure_logging("warning", out)
    logging.getLogger("agent.cri.client").warning("runtime slow")
    logging.getLogger("pullcheck").info("filtered out")
    assert first.getvalue() == ""
    (line,) = lines(out)
    assert line["logger"] == "agent.cri.client" and line["level"] == "warning"


def test_the_head_of_a_line_cannot_be_overridden_by_fields() -> None:
    out = io.StringIO()
    log = configure_logging("info", out)
    log.warning(
        "real event",
        extra={"level": "debug", "logger": "x", "fields": {"ts": "1970", "event": ""}},
    )
    log_event(log, "named", ts="1970", level=logging.ERROR)
    line, named = lines(out)
    assert RFC3339_UTC.match(line["ts"]) and line["level"] == "warning"
    assert line["logger"] == "pullcheck" and line["event"] == "real event"
    assert list(line) == ["ts", "level", "logger", "event"]
    assert named["level"] == "error" and named["event"] == "named"
    assert RFC3339_UTC.match(named["ts"])


def test_exception_is_a_field() -> None:
    out = io.StringIO()
    log = configure_logging("info", out)
    try:
        raise RuntimeError("pull failed for https://bob:hunter2@registry.example.com/v2/")
    except RuntimeError:
        log.exception("pulltest_crashed")
    (line,) = lines(out)
    assert line["level"] == "error" and line["event"] == "pulltest_crashed"
    assert "RuntimeError" in line["exc"] and "hunter2" not in line["exc"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", io.StringIO())


# --- the pull-test line ----------------------------------------------------------------------


def test_log_pulltest_writes_exactly_one_line_with_the_fields() -> None:
    out = io.StringIO()
    log = configure_logging("info", out)
    log_pulltest(log, result(), client="10.0.0.9", reused="fresh", duration_ms=1240.25)
    failed = result(success=False, cause=Cause.UNAUTHORIZED, summary="401 from quay.io")
    log_pulltest(log, failed, client="aggregator", reused="shared", duration_ms=3.5)
    log_pulltest(log, failed, client="aggregator", reused=True, duration_ms=0.4)
    ok, shared, cached = lines(out)
    assert ok == {
        "ts": ok["ts"],
        "level": "info",
        "logger": "pullcheck",
        "event": "pulltest",
        "node": "node-a",
        "image": "quay.io/org/app:1",
        "reference": "quay.io/org/app:1",
        "registry": "quay.io",
        "mode": "pull",
        "success": True,
        "cause": None,
        "summary": "",
        "duration_ms": 1240.25,
        "test_duration_ms": 1234.568,
        "started_at": "2025-01-01T00:00:00Z",
        "client": "10.0.0.9",
        "outcome": "fresh",
    }
    assert shared["level"] == "warning" and shared["success"] is False
    assert shared["cause"] == "unauthorized" and shared["outcome"] == "shared"
    assert cached["outcome"] == "reused"


def test_digested_references_survive_redaction() -> None:
    out = io.StringIO()
    log = configure_logging("info", out)
    ref = f"docker.io/library/alpine:3.19@{DIGEST}"
    log_pulltest(
        log,
        result(image=f"alpine:3.19@{DIGEST}", reference=ref),
        client="c",
        reused="fresh",
        duration_ms=1,
    )
    (line,) = lines(out)
    assert line["image"] == f"alpine:3.19@{DIGEST}"
    assert line["reference"] == ref and line["registry"] == "docker.io"


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_never_reach_the_output() -> None:
    out = io.StringIO()
    log = configure_logging("debug", out)
    leaky = result(
        image="bob:hunter2@registry.example.com/app:1",
        reference="",
        success=False,
        cause=Cause.INVALID_REFERENCE,
        summary="Head https://bob:hunter2@registry.example.com/v2/ (Authorization: Bearer "
        "eyJhbGciOi.payload.sig) token=s3cr3t-t0k3n",
    )
    log_pulltest(log, leaky, client="bob:hunter2@10.0.0.1", reused="fresh", duration_ms=1)
    log_event(
        log,
        "registry_login",
        password="hunter2",
        registry_token="s3cr3t-t0k3n",
        headers={"Authorization": "Basic Ym9iOmh1bnRlcjI=", "Accept": "application/json"},
        attempts=[{"source": "--creds", "secret": "hunter2"}],
        url="https://registry.example.com/token?scope=repo&access_token=s3cr3t-t0k3n",
        note="sent Basic Ym9iOmh1bnRlcjI= to the realm",
    )
    log.info("login as %s", "bob:hunter2@quay.io", extra={"password": "hunter2", "user": "bob"})
    log.warning("raw", extra={"fields": {"Authorization": "Bearer s3cr3t-t0k3n"}})
    text = out.getvalue()
    for secret in SECRETS:
        assert secret not in text, secret
    pulltest, login, plain, raw = lines(out)
    assert pulltest["image"] == "<redacted>@registry.example.com/app:1"
    assert pulltest["client"] == "<redacted>@10.0.0.1"
    assert "https://<redacted>@registry.example.com/v2/" in pulltest["summary"]
    assert sorted(login["redacted"]) == [
        "attempts.secret",
        "headers.Authorization",
        "password",
        "registry_token",
    ]
    assert login["headers"] == {"Accept": "application/json"}
    assert login["attempts"] == [{"source": "--creds"}]
    assert login["url"].endswith("access_token=<redacted>")
    assert login["note"] == "sent Basic <redacted> to the realm"
    assert plain["event"] == "login as <redacted>@quay.io" and plain["user"] == "bob"
    assert plain["redacted"] == ["password"]
    assert raw["redacted"] == ["Authorization"]


# --- uvicorn ---------------------------------------------------------------------------------


def _install_uvicorn_config(out: io.StringIO) -> None:
    logging.config.dictConfig(uvicorn_log_config("info"))
    for name in ("uvicorn", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            assert isinstance(handler.formatter, JsonFormatter)
    capture_uvicorn_logs(out)


def test_uvicorn_access_record_becomes_a_json_line() -> None:
    out = io.StringIO()
    _install_uvicorn_config(out)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "10.0.0.7:5123",
        "GET",
        "/v1/pulltest?image=a&token=s3cr3t-t0k3n",
        "1.1",
        200,
    )
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started [\x1b[36m%d\x1b[0m]"}
    )
    access, started = lines(out)
    assert access["logger"] == "uvicorn.access" and access["event"] == "http_request"
    assert access["method"] == "GET" and access["status"] == 200
    assert access["client"] == "10.0.0.7:5123" and access["http_version"] == "1.1"
    assert access["path"] == "/v1/pulltest?image=a&token=<redacted>"
    assert (
        started["logger"] == "uvicorn.error" and started["event"] == "Started server process [42]"
    )
    assert "s3cr3t" not in out.getvalue()


def test_access_line_masks_every_credential_key_and_caps_the_target() -> None:
    out = io.StringIO()
    _install_uvicorn_config(out)
    paths = [
        "/v1/pulltest?image=a&creds=bob:hunter2",  # refused (unknown parameter), still logged
        "/v1/pulltest?image=a&%63reds=bob%3Ahunter2&Password=hunter2&docker_config=%7B%7D",
        "/v1/pulltest?auth=Ym9iOmh1bnRlcjI%3D&x-auth-token=s3cr3t-t0k3n",
        "/healthz?x=" + "a" * 60_000,
    ]
    for path in paths:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.7:5123", "GET", path, "1.1", 400
        )
    first, encoded, auth, long = (line["path"] for line in lines(out))
    assert first == "/v1/pulltest?image=a&creds=<redacted>"
    assert encoded == (
        "/v1/pulltest?image=a&creds=<redacted>&Password=<redacted>&docker_config=<redacted>"
    )
    assert auth == "/v1/pulltest?auth=<redacted>&x-auth-token=<redacted>"
    assert long == "/healthz?x=" + "a" * (MAX_LOGGED_TARGET - 11) + "…(+57963 chars)"
    for secret in SECRETS:
        assert secret not in out.getvalue()


def test_uvicorn_accepts_the_config_with_use_colors() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    uvicorn.Config(app, log_config=uvicorn_log_config("debug"), use_colors=False)
    handler = logging.getLogger("uvicorn.access").handlers[0]
    assert type(handler.formatter).__name__ == "UvicornAccessFormatter"


async def test_a_real_uvicorn_server_logs_requests_as_json() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    out = io.StringIO()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=uvicorn_log_config("info"), lifespan="off"
    )
    capture_uvicorn_logs(out)
    async with serving(config) as url, httpx.AsyncClient() as client:
        reply = await client.get(f"{url}/healthz?password=hunter2")
        assert reply.status_code == 204
        encoded = "/v1/pulltest?image=bob%3Ahunter2%40registry.example.com%2Fapp%3A1"
        await client.get(f"{url}{encoded}")
    records = lines(out)
    access = [r for r in records if r["event"] == "http_request"]
    assert len(access) == 2
    assert access[0]["path"] == "/healthz?password=<redacted>" and access[0]["status"] == 204
    assert access[1]["path"] == "/v1/pulltest?image=<redacted>@registry.example.com/app:1"
    assert all(r["logger"].startswith("uvicorn") for r in records)
    assert "hunter2" not in out.getvalue()
