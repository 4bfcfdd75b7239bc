"""HTTP probe: ``GET <endpoint>/v2/``, the registry API version check.

200 and 401 both mean "a registry v2 API answers here"; the 401 challenge (``WWW-Authenticate``)
decides the auth flow: Bearer → the token probe, Basic → credentials sent with the manifest
request. The request goes to the address the chain resolved, with ``Host``/SNI = the hostname.

Causes: ``unknown`` (404 "not a registry v2 API", 5xx, other statuses, malformed responses),
``forbidden`` (403), ``rate_limited`` (429), ``http_https_mismatch`` (plain HTTP on an https
endpoint, or TLS on an http one), ``tls_error``, ``connection_refused``, ``timeout`` (connect or
read), ``dns_failure`` (run alone and the host does not resolve).
"""

from __future__ import annotations

import time

import httpx

from agent.models import Cause, Endpoint, HttpEvidence, ProbeResult
from agent.probes._context import ProbeContext
from agent.probes._net import (
    PhaseTrace,
    TlsConfigError,
    classify,
    open_client,
    read_capped,
    speaks_plain_http,
    speaks_tls,
    url_for,
)
from agent.probes._parse import (
    error_codes,
    error_summary,
    parse_www_authenticate,
    select_challenge,
    status_text,
)
from agent.probes._prereq import target_address
from agent.probes._result import ResultBuilder

__all__ = ["probe_http"]

_SNIFF_TIMEOUT = 3.0


async def probe_http(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    url = url_for(endpoint, endpoint.path + "/")
    result = ResultBuilder("http", url, ctx)
    evidence = HttpEvidence(method="GET", url=url)
    target = await target_address(endpoint, ctx)
    if isinstance(target, tuple):
        return result.fail(Cause.DNS_FAILURE, target[1], evidence)
    address = target
    trace = PhaseTrace()
    started = time.monotonic()
    try:
        async with open_client(endpoint, ctx) as client:
            request = client.build_request("GET", url, extensions={"trace": trace})
            response = await client.send(request, stream=True)
            body = await read_capped(response)
    except TlsConfigError as exc:
        result.phase("config", False, started, str(exc))
        return result.fail(Cause.TLS_ERROR, f"GET {url}: {exc}", evidence)
    except Exception as exc:  # network failures are classified; a probe never raises
        cause, reason = classify(exc)
        trace.close_open(reason)
        result.phases.extend(trace.phases)
        if (
            endpoint.scheme == "http"
            and cause == Cause.UNKNOWN
            and await _tls_check(endpoint, address, ctx, result)
        ):
            return result.fail(
                Cause.HTTP_HTTPS_MISMATCH,
                f"GET {url} ({address}): the endpoint is http:// but the server speaks TLS",
                evidence,
            )
        if endpoint.scheme == "https" and cause == Cause.HTTP_HTTPS_MISMATCH:
            if await _plain_http_check(endpoint, address, ctx, result):
                reason = (
                    "server speaks plain HTTP (http: server gave HTTP response to HTTPS client)"
                )
            else:
                cause = Cause.TLS_ERROR
        if cause == Cause.TIMEOUT:
            reason = f"{reason} after {ctx.timeout:.3g} s"
        return result.fail(cause, f"GET {url} ({address}): {reason}", evidence)

    result.phases.extend(trace.phases)
    _fill(evidence, response, body)
    state = ctx.state
    state.api_status = response.status_code
    challenges = parse_www_authenticate(response.headers.get_list("www-authenticate"))
    state.challenge = select_challenge(challenges) if response.status_code == 401 else None

    status = response.status_code
    line = f"GET {url} → {status_text(status)}"
    codes = error_summary(error_codes(body))
    if status in (200, 401):
        return result.ok(evidence)
    if status == 404 and endpoint.override_path:
        # a non-standard API root (hosts.toml override_path) need not answer the /v2/ check;
        # containerd never asks it either, so the manifest probe decides
        return result.ok(evidence)
    if status == 404:
        return result.fail(Cause.UNKNOWN, f"{line}: not a registry v2 API", evidence)
    if status == 403:
        return result.fail(Cause.FORBIDDEN, _with(line, codes), evidence)
    if status == 429:
        return result.fail(Cause.RATE_LIMITED, _with(line, codes), evidence)
    if status == 400 and endpoint.scheme == "http" and b"HTTPS" in body.upper():
        return result.fail(
            Cause.HTTP_HTTPS_MISMATCH,
            f"{line}: the endpoint is http:// but the server expects HTTPS",
            evidence,
        )
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        return result.fail(Cause.UNKNOWN, f"{line}: redirected to {location or '?'}", evidence)
    return result.fail(Cause.UNKNOWN, _with(line, codes), evidence)


def _fill(evidence: HttpEvidence, response: httpx.Response, body: bytes) -> None:
    evidence.status = response.status_code
    evidence.api_version = response.headers.get("docker-distribution-api-version", "")
    raw = response.headers.get_list("www-authenticate")
    evidence.www_authenticate = ", ".join(raw)
    challenge = select_challenge(parse_www_authenticate(raw))
    if challenge is not None:
        evidence.auth_scheme = "Bearer" if challenge.is_bearer else "Basic"
        evidence.realm = challenge.realm
        evidence.service = challenge.service
    evidence.error_codes = [code for code, _ in error_codes(body) if code]


async def _tls_check(
    endpoint: Endpoint, address: str, ctx: ProbeContext, result: ResultBuilder
) -> bool:
    started = time.monotonic()
    tls = await speaks_tls(address, endpoint.port, endpoint.host, min(ctx.timeout, _SNIFF_TIMEOUT))
    result.phase(
        "tls check", True, started, "server speaks TLS" if tls else "server does not speak TLS"
    )
    return tls


async def _plain_http_check(
    endpoint: Endpoint, address: str, ctx: ProbeContext, result: ResultBuilder
) -> bool:
    started = time.monotonic()
    plain = await speaks_plain_http(
        address, endpoint.port, endpoint.host, min(ctx.timeout, _SNIFF_TIMEOUT)
    )
    result.phase(
        "plain-http check", True, started, "server answers plain HTTP" if plain else "no answer"
    )
    return plain


def _with(line: str, codes: str) -> str:
    return f"{line}: {codes}" if codes else line
