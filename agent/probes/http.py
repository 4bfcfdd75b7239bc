"""HTTP probe: ``GET <endpoint>/v2/``, the registry API version check.

200 and 401 both mean "a registry v2 API answers here"; the 401 challenge (``WWW-Authenticate``)
decides the auth flow: Bearer → the token probe, Basic → credentials sent with the manifest
request. The request goes to the address the chain resolved, with ``Host``/SNI = the hostname.

Causes: ``registry_error`` (5xx: the registry or a proxy in front of it fails on its side),
``unknown`` (404 "not a registry v2 API", other statuses, malformed responses), ``forbidden``
(403), ``rate_limited`` (429), ``http_https_mismatch`` (plain HTTP on an https endpoint, or TLS on
an http one), ``tls_error``, ``connection_refused``, ``connection_reset`` (the connection broke
after it was established), ``timeout`` (connect or read), ``dns_failure`` (run alone and the host
does not resolve).
"""

from __future__ import annotations

import httpx

from agent.models import Cause, Endpoint, HttpEvidence, ProbeResult
from agent.probes._addresses import url_for
from agent.probes._classify import classify
from agent.probes._context import ProbeContext
from agent.probes._parse import (
    error_codes,
    error_summary,
    is_server_error,
    parse_www_authenticate,
    retry_after_note,
    select_challenge,
    status_text,
)
from agent.probes._runner import ProbeRun, run_probe
from agent.probes._sniff import plain_http_check, tls_check
from agent.probes._trace import send_traced
from agent.probes._transport import open_client

__all__ = ["probe_http"]


async def probe_http(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    url = url_for(endpoint, endpoint.path + "/")
    return await run_probe("http", url, ctx, lambda run: _get(endpoint, ctx, url, run))


async def _get(endpoint: Endpoint, ctx: ProbeContext, url: str, run: ProbeRun) -> ProbeResult:
    evidence = run.evidence = HttpEvidence(method="GET", url=url)
    address = await run.address(endpoint)
    run.action = f"GET {url} ({address})"
    try:
        async with open_client(endpoint, ctx) as client:
            response, body = await send_traced(client, client.build_request("GET", url), run.phases)
    except (httpx.HTTPError, OSError) as exc:  # the network failed: say how, as containerd would
        cause, reason = classify(exc)
        if (
            endpoint.scheme == "http"
            and cause in (Cause.UNKNOWN, Cause.CONNECTION_RESET)
            and await tls_check(endpoint, address, run)
        ):
            return run.fail(
                Cause.HTTP_HTTPS_MISMATCH,
                f"{run.action}: the endpoint is http:// but the server speaks TLS",
            )
        if endpoint.scheme == "https" and cause == Cause.HTTP_HTTPS_MISMATCH:
            if await plain_http_check(endpoint, address, run):
                reason = (
                    "server speaks plain HTTP (http: server gave HTTP response to HTTPS client)"
                )
            else:
                cause = Cause.TLS_ERROR
        return run.fail_action(cause, reason)

    _fill(evidence, response, body)
    state = ctx.state
    state.api_status = response.status_code
    challenges = parse_www_authenticate(response.headers.get_list("www-authenticate"))
    state.challenge = select_challenge(challenges) if response.status_code == 401 else None

    status = response.status_code
    line = f"GET {url} → {status_text(status)}"
    codes = error_summary(error_codes(body))
    if status in (200, 401):
        return run.ok()
    if status == 404 and endpoint.override_path:
        # a non-standard API root (hosts.toml override_path) need not answer the /v2/ check;
        # containerd never asks it either, so the manifest probe decides
        return run.ok()
    if status == 404:
        return run.fail(Cause.UNKNOWN, f"{line}: not a registry v2 API")
    if status == 403:
        return run.fail(Cause.FORBIDDEN, _with(line, codes))
    if status == 429:
        return run.fail(Cause.RATE_LIMITED, _with(line, codes))
    if status == 400 and endpoint.scheme == "http" and b"HTTPS" in body.upper():
        expects = "the endpoint is http:// but the server expects HTTPS"
        return run.fail(Cause.HTTP_HTTPS_MISMATCH, f"{line}: {expects}")
    if is_server_error(status):
        note = retry_after_note(response.headers.get("retry-after", ""))
        return run.fail(Cause.REGISTRY_ERROR, _with(line + note, codes))
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        return run.fail(Cause.UNKNOWN, f"{line}: redirected to {location or '?'}")
    return run.fail(Cause.UNKNOWN, _with(line, codes))


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


def _with(line: str, codes: str) -> str:
    return f"{line}: {codes}" if codes else line
