"""Token probe: the Bearer token flow of distribution's token spec, as containerd runs it.

Only runs when ``GET /v2/`` was challenged with ``Bearer`` (success without evidence otherwise;
Basic challenges need no token — the manifest probe sends Basic credentials). The realm is usually
another host, so it is first probed like an endpoint (dns → tcp → tls; those results come back
as the token result's :attr:`~agent.models.ProbeResult.preceding`, so the chain shows them), then
``GET <realm>?service=…&scope=repository:<repo>:pull`` is sent anonymously (no credentials
given) or with each credential in order until one gets a token: username/password as HTTP Basic
on a GET, an identity token as the OAuth2 refresh-token POST containerd uses. The token itself
is kept only in ``ctx.state`` for the manifest probe; it never enters a result.

Causes: ``unauthorized`` (401/403 from the token endpoint), ``registry_error`` (5xx: the token
service fails on its side), ``unknown`` (other statuses, no token in the answer, invalid realm),
plus the realm host's ``dns_failure``, ``connection_refused``, ``connection_reset``, ``timeout``,
``tls_error``, ``http_https_mismatch``.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx

from agent.credentials import Credential
from agent.models import Cause, Endpoint, ProbeResult, TokenEvidence
from agent.probes._addresses import host_key
from agent.probes._classify import classify
from agent.probes._context import Challenge, EndpointState, ProbeContext
from agent.probes._parse import (
    error_codes,
    error_summary,
    is_server_error,
    retry_after_note,
    status_text,
)
from agent.probes._runner import ProbeRun, run_probe
from agent.probes._tls_context import TlsConfigError
from agent.probes._trace import send_traced
from agent.probes._transport import open_client
from agent.probes.dns import probe_dns
from agent.probes.tcp import probe_tcp
from agent.probes.tls import probe_tls

__all__ = ["TokenOutcome", "basic_authorization", "obtain_token", "probe_token", "pull_scope"]

_CLIENT_ID = "containerd-client"


def pull_scope(repository: str | None, challenge: Challenge | None = None) -> str:
    """The scope containerd asks for when pulling ``repository``."""
    if repository:
        return f"repository:{repository}:pull"
    return challenge.scope if challenge is not None else ""


def basic_authorization(cred: Credential) -> str:
    """``Basic …`` for a credential (identity tokens go as the secret of an empty user)."""
    secret = cred.password if cred.username else cred.identity_token
    raw = f"{cred.username}:{secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def credential_label(index: int | None, cred: Credential | None) -> str:
    if cred is None or index is None:
        return "anonymous"
    return f"credential {index + 1}" + (f" ({cred.source})" if cred.source else "")


@dataclass
class TokenOutcome:
    """What :func:`obtain_token` found; ``cause`` is None on success."""

    cause: Cause | None = None
    error: str = ""
    evidence: TokenEvidence | None = None
    realm_results: list[ProbeResult] = field(default_factory=list)  # its dns → tcp → tls


async def probe_token(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    challenge = ctx.state.challenge
    realm = challenge.realm if challenge is not None and challenge.is_bearer else ""
    return await run_probe(
        "token", realm or endpoint.host, ctx, lambda run: _token(endpoint, ctx, run)
    )


async def _token(endpoint: Endpoint, ctx: ProbeContext, run: ProbeRun) -> ProbeResult:
    challenge = ctx.state.challenge
    if challenge is None or not challenge.is_bearer:
        scheme = challenge.scheme if challenge is not None else "none"
        run.phase("skip", True, run.started, f"no Bearer challenge (auth scheme: {scheme})")
        return run.ok()
    outcome = await obtain_token(
        endpoint, challenge, pull_scope(ctx.repository, challenge), ctx, run
    )
    run.preceding.extend(outcome.realm_results)
    if outcome.cause is None:
        return run.ok(outcome.evidence)
    return run.fail(outcome.cause, outcome.error, outcome.evidence)


async def obtain_token(
    endpoint: Endpoint, challenge: Challenge, scope: str, ctx: ProbeContext, run: ProbeRun
) -> TokenOutcome:
    """Probe the realm host if needed, then fetch a token; phases go to ``run``, the realm
    host's probe results to the outcome. On success ``ctx.state.authorization`` holds
    ``Bearer <token>``."""
    evidence = TokenEvidence(realm=challenge.realm, service=challenge.service, scope=scope)
    try:
        realm = _realm_endpoint(endpoint, challenge.realm)
    except ValueError as exc:
        return TokenOutcome(
            Cause.UNKNOWN, f"invalid token realm {challenge.realm!r}: {exc}", evidence
        )

    outcome = TokenOutcome(evidence=evidence)
    if host_key(realm.host) not in ctx.state.host_addresses:
        outcome.realm_results = await _probe_realm_host(realm, ctx)
        failed = next((r for r in outcome.realm_results if not r.success), None)
        if failed is not None:
            outcome.cause = failed.cause or Cause.UNKNOWN
            outcome.error = f"token realm {challenge.realm}: {failed.error}"
            return outcome

    params = {k: v for k, v in (("scope", scope), ("service", challenge.service)) if v}
    url = challenge.realm + ("&" if "?" in challenge.realm else "?") + urlencode(params)
    attempts: list[tuple[int | None, Credential | None]] = (
        list(enumerate(ctx.credentials)) if ctx.credentials else [(None, None)]
    )
    try:
        async with open_client(endpoint, ctx) as client:
            last_line = ""
            for index, cred in attempts:
                label = credential_label(index, cred)
                status, token, expires_in, body, retry_after = await _request(
                    client, challenge, scope, url, cred, label, run
                )
                evidence.status = status
                evidence.authenticated = cred is not None
                evidence.error_codes = [c for c, _ in error_codes(body) if c]
                method = (
                    "POST"
                    if cred is not None and not cred.username and cred.identity_token
                    else "GET"
                )
                last_line = f"{method} {url} → {status_text(status)} ({label})"
                if is_server_error(status):
                    last_line += retry_after
                codes = error_summary(error_codes(body))
                if codes:
                    last_line += f": {codes}"
                if status == 200 and token:
                    evidence.expires_in = expires_in
                    evidence.credential_source = cred.source if cred is not None else ""
                    ctx.state.authorization = f"Bearer {token}"
                    ctx.state.token_scope = scope
                    ctx.state.credential_index = index
                    return outcome
                if status == 200:
                    outcome.cause, outcome.error = (
                        Cause.UNKNOWN,
                        f"{last_line}: answer has no token",
                    )
                    return outcome
                if is_server_error(status):
                    outcome.cause = Cause.REGISTRY_ERROR
                    outcome.error = f"token service failing: {last_line}"
                    return outcome
                if status not in (401, 403):
                    outcome.cause, outcome.error = Cause.UNKNOWN, last_line
                    return outcome
    except TlsConfigError as exc:
        outcome.cause, outcome.error = Cause.TLS_ERROR, f"token realm {challenge.realm}: {exc}"
        return outcome
    except (httpx.HTTPError, OSError) as exc:  # the token endpoint's network failed
        cause, reason = classify(exc)
        outcome.cause, outcome.error = cause, f"GET {url}: {reason}"
        return outcome
    outcome.cause = Cause.UNAUTHORIZED
    outcome.error = (
        last_line if len(attempts) == 1 else f"{last_line}; all {len(attempts)} credentials refused"
    )
    return outcome


async def _request(
    client: httpx.AsyncClient,
    challenge: Challenge,
    scope: str,
    url: str,
    cred: Credential | None,
    label: str,
    run: ProbeRun,
) -> tuple[int, str, int | None, bytes, str]:
    """status, token, lifetime, body and the `` (Retry-After …)`` note of one token request."""
    started = time.monotonic()
    if cred is not None and not cred.username and cred.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": cred.identity_token,
            "service": challenge.service,
            "scope": scope,
            "client_id": _CLIENT_ID,
        }
        request = client.build_request("POST", challenge.realm, data=form)
    else:
        headers = {"Authorization": basic_authorization(cred)} if cred is not None else {}
        request = client.build_request("GET", url, headers=headers)
    response, body = await send_traced(client, request, run.phases, f"token {label}")
    token, expires_in = _parse_token(body) if response.status_code == 200 else ("", None)
    run.phase(
        f"token {label}",
        response.status_code == 200 and bool(token),
        started,
        status_text(response.status_code),
    )
    retry_after = retry_after_note(response.headers.get("retry-after", ""))
    return response.status_code, token, expires_in, body, retry_after


def _parse_token(body: bytes) -> tuple[str, int | None]:
    try:
        doc = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return "", None
    if not isinstance(doc, dict):
        return "", None
    token = doc.get("token") or doc.get("access_token") or ""
    expires = doc.get("expires_in")
    return (token if isinstance(token, str) else ""), (
        expires if isinstance(expires, int) else None
    )


def _realm_endpoint(endpoint: Endpoint, realm: str) -> Endpoint:
    if not realm:
        raise ValueError("the challenge has no realm")
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(
        url=f"{parts.scheme}://{parts.netloc}",
        scheme="https" if parts.scheme == "https" else "http",
        host=parts.hostname,
        port=port,
        path="",
        role="upstream",
        capabilities=[],
        ca_files=list(endpoint.ca_files),  # containerd uses the registry host's client for tokens
        client_certs=list(endpoint.client_certs),
        skip_verify=endpoint.skip_verify,
    )


async def _probe_realm_host(realm: Endpoint, ctx: ProbeContext) -> list[ProbeResult]:
    """dns → tcp → tls for the realm host, up to the first failure: the results, in order. The
    addresses found go into the chain's map, for the token request."""
    sub_ctx = ctx.for_endpoint()
    sub_ctx.state = EndpointState(host_addresses=ctx.state.host_addresses)
    steps = [probe_dns, probe_tcp] + ([probe_tls] if realm.scheme == "https" else [])
    results: list[ProbeResult] = []
    for step in steps:
        results.append(await step(realm, sub_ctx))
        if not results[-1].success:
            break
    return results
