"""Manifest probe: containerd's resolve step, ``HEAD <endpoint>/v2/<repo>/manifests/<tag|digest>``.

Sent with containerd's Accept header, ``?ns=<registry>`` on mirrors, the API root from hosts.toml
(``override_path`` aware) and the authorization the chain obtained (Bearer token, or Basic
credentials tried in order). A HEAD does not count as a Docker Hub pull; it still returns the
``ratelimit-*`` headers. Like containerd it retries with GET on 405 and handles a fresh Bearer
challenge on the manifest itself (registries whose /v2/ is open but repositories are not). A 404
is followed by ``GET …/tags/list`` to tell a missing tag from a missing repository; a 403 or 5xx by
a GET to read the registry's error codes.

Causes: ``manifest_not_found``, ``repository_not_found``, ``unauthorized`` (401, incl.
``insufficient_scope``), ``forbidden`` (403), ``rate_limited`` (429), ``registry_error`` (5xx, from
the registry, a proxy in front of it, or the token service of a fresh challenge), ``unknown``
(other statuses), plus ``tls_error``, ``connection_refused``, ``connection_reset``, ``timeout``,
``dns_failure`` for transport failures.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from agent.models import Cause, Endpoint, ManifestEvidence, ProbeResult
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
from agent.probes._trace import send_traced
from agent.probes._transport import open_client
from agent.probes.token import (
    TokenOutcome,
    basic_authorization,
    credential_label,
    obtain_token,
    pull_scope,
)

__all__ = ["MANIFEST_ACCEPT", "manifest_url", "probe_manifest"]

# containerd's resolve Accept header (core/remotes/docker/resolver.go), in its order
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "*/*",
    )
)


@dataclass
class _Reply:
    method: str
    status: int
    headers: httpx.Headers
    body: bytes
    # a 401 whose fresh Bearer challenge could not be answered: why the token fetch failed
    token_failure: TokenOutcome | None = None


async def probe_manifest(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    repository, obj = ctx.repository, ctx.tag_or_digest
    if not repository or not obj:
        return await run_probe("manifest", endpoint.url, ctx, _skip)
    url = manifest_url(endpoint, repository, obj)
    return await run_probe(
        "manifest", url, ctx, lambda run: _resolve(endpoint, ctx, repository, obj, run)
    )


async def _skip(run: ProbeRun) -> ProbeResult:
    run.phase("skip", True, run.started, "no repository/tag to check")
    return run.ok()


async def _resolve(
    endpoint: Endpoint, ctx: ProbeContext, repository: str, obj: str, run: ProbeRun
) -> ProbeResult:
    """The manifest HEAD on the chain's client; a network failure is the runner's to word."""
    url = run.target
    evidence = run.evidence = ManifestEvidence(url=url)
    address = await run.address(endpoint)
    run.action = f"HEAD {url} ({address})"
    async with open_client(endpoint, ctx) as client:
        return await _probe(
            client, endpoint, ctx, repository, obj, url, _namespace_query(endpoint), run, evidence
        )


def manifest_url(endpoint: Endpoint, repository: str, reference: str) -> str:
    """``<endpoint>/<repository>/manifests/<tag|digest>`` as containerd asks it (``?ns=`` on
    mirrors)."""
    path = f"{endpoint.path}/{repository}/manifests/{reference}"
    return url_for(endpoint, path, _namespace_query(endpoint))


def _namespace_query(endpoint: Endpoint) -> str:
    return urlencode({"ns": endpoint.namespace}) if endpoint.namespace else ""


async def _probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    ctx: ProbeContext,
    repository: str,
    obj: str,
    url: str,
    query: str,
    run: ProbeRun,
    evidence: ManifestEvidence,
) -> ProbeResult:
    reply = await _authorized(client, endpoint, ctx, "HEAD", url, run)
    if reply.status == 405:
        # registries without HEAD support: containerd retries the resolve as GET
        evidence.method = "GET"
        run.action = "GET" + run.action.removeprefix("HEAD")
        reply = await _authorized(client, endpoint, ctx, "GET", url, run)
    _fill(evidence, reply)
    status = reply.status
    line = f"{reply.method} {url} → {status_text(status)}"

    if status == 200:
        if ctx.measure_size_for:
            await _measure_size(client, endpoint, ctx, repository, query, run, evidence)
        return run.ok(evidence)
    failed_token = reply.token_failure
    if status == 401 and failed_token is not None and failed_token.cause is not Cause.UNAUTHORIZED:
        # the token service itself failed (5xx, unreachable): that, not the 401, blocks the pull
        return run.fail(failed_token.cause or Cause.UNKNOWN, failed_token.error, evidence)
    if status == 401:
        challenge = select_challenge(
            parse_www_authenticate(reply.headers.get_list("www-authenticate"))
        )
        if challenge is not None and challenge.error == "insufficient_scope":
            note = "insufficient_scope: the repository does not exist or needs other credentials"
        elif not ctx.credentials:
            basic = challenge is not None and challenge.is_basic
            note = "no basic auth credentials" if basic else "no credentials sent"
        else:
            note = f"{len(ctx.credentials)} credential(s) refused"
        return run.fail(Cause.UNAUTHORIZED, f"{line} ({note})", evidence)
    if status == 404:
        return await _not_found(client, endpoint, ctx, repository, obj, query, line, run, evidence)
    if status == 429:
        limits = (
            [f"ratelimit-remaining {evidence.ratelimit_remaining}"]
            if evidence.ratelimit_remaining
            else []
        )
        if evidence.ratelimit_limit:
            limits.append(f"ratelimit-limit {evidence.ratelimit_limit}")
        codes = error_summary(error_codes(reply.body))
        text = (
            line + (f" ({'; '.join(limits)})" if limits else "") + (f": {codes}" if codes else "")
        )
        return run.fail(Cause.RATE_LIMITED, text, evidence)

    if reply.method == "HEAD" and (status == 403 or is_server_error(status)):
        # HEAD has no body: fetch the registry's error codes with a GET (newest containerd does)
        detail = await _authorized(client, endpoint, ctx, "GET", url, run)
        if detail.status == status:
            evidence.error_codes = [c for c, _ in error_codes(detail.body) if c]
            reply = detail
    codes = error_summary(error_codes(reply.body))
    if is_server_error(status):
        line += retry_after_note(reply.headers.get("retry-after", ""))
    text = f"{line}: {codes}" if codes else line
    if status == 403:
        return run.fail(Cause.FORBIDDEN, text, evidence)
    if is_server_error(status):
        return run.fail(Cause.REGISTRY_ERROR, text, evidence)
    return run.fail(Cause.UNKNOWN, text, evidence)


async def _authorized(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    ctx: ProbeContext,
    method: str,
    url: str,
    run: ProbeRun,
) -> _Reply:
    """Send with the chain's authorization; handle a Basic or a new Bearer challenge like
    containerd (credentials in order, at most one token fetch)."""
    state = ctx.state
    challenge = state.challenge
    if state.authorization:
        reply = await _send(client, method, url, state.authorization, run, "")
    elif challenge is not None and challenge.is_basic and ctx.credentials:
        reply = await _basic(client, ctx, method, url, run)
    else:
        reply = await _send(client, method, url, None, run, "")
    if reply.status != 401:
        return reply
    fresh = select_challenge(parse_www_authenticate(reply.headers.get_list("www-authenticate")))
    if fresh is None:
        return reply
    if fresh.is_basic and ctx.credentials and not (challenge is not None and challenge.is_basic):
        state.challenge = fresh
        return await _basic(client, ctx, method, url, run)
    scope = pull_scope(ctx.repository, fresh)
    if fresh.is_bearer and fresh.realm and scope != state.token_scope:
        outcome = await obtain_token(endpoint, fresh, scope, ctx, run)
        run.preceding.extend(outcome.realm_results)
        if outcome.cause is None and state.authorization:
            return await _send(client, method, url, state.authorization, run, "")
        reply.token_failure = outcome if outcome.cause is not None else None
    return reply


async def _basic(
    client: httpx.AsyncClient, ctx: ProbeContext, method: str, url: str, run: ProbeRun
) -> _Reply:
    reply: _Reply | None = None
    for index, cred in enumerate(ctx.credentials):
        label = credential_label(index, cred)
        reply = await _send(client, method, url, basic_authorization(cred), run, label)
        if reply.status != 401:
            ctx.state.credential_index = index
            ctx.state.authorization = basic_authorization(cred)
            return reply
    assert reply is not None
    return reply


async def _send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    authorization: str | None,
    run: ProbeRun,
    label: str,
) -> _Reply:
    headers = {"Accept": MANIFEST_ACCEPT}
    if authorization:
        headers["Authorization"] = authorization
    name = f"{method} {label}".strip()
    started = time.monotonic()
    request = client.build_request(method, url, headers=headers)
    response, body = await send_traced(client, request, run.phases, name)
    run.phase(name, response.status_code < 400, started, status_text(response.status_code))
    return _Reply(method, response.status_code, response.headers, body)


async def _not_found(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    ctx: ProbeContext,
    repository: str,
    obj: str,
    query: str,
    line: str,
    run: ProbeRun,
    evidence: ManifestEvidence,
) -> ProbeResult:
    """404: does the repository exist? (``GET …/tags/list``: 404 → no, 200 → yes)."""
    tags_url = url_for(endpoint, f"{endpoint.path}/{repository}/tags/list", query)
    authorization = ctx.state.authorization
    try:
        reply = await _send(client, "GET", tags_url, authorization, run, "tags/list")
    except (httpx.HTTPError, OSError) as exc:  # the 404 stands; only its detail is missing
        return run.fail(
            Cause.MANIFEST_NOT_FOUND,
            f"{line}: {obj} not found (tags/list failed: {classify(exc)[1]})",
            evidence,
        )
    codes = [c for c, _ in error_codes(reply.body) if c]
    evidence.error_codes = list(dict.fromkeys(evidence.error_codes + codes))
    if reply.status == 404 or "NAME_UNKNOWN" in codes:
        evidence.repository_exists = False
        return run.fail(
            Cause.REPOSITORY_NOT_FOUND,
            f"{line}: repository {repository} not found (tags/list → 404)",
            evidence,
        )
    if reply.status == 200:
        evidence.repository_exists = True
        return run.fail(
            Cause.MANIFEST_NOT_FOUND,
            f"{line}: {obj} not found in repository {repository}",
            evidence,
        )
    return run.fail(
        Cause.MANIFEST_NOT_FOUND,
        f"{line}: {obj} not found (tags/list → {status_text(reply.status)})",
        evidence,
    )


_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


async def _measure_size(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    ctx: ProbeContext,
    repository: str,
    query: str,
    run: ProbeRun,
    evidence: ManifestEvidence,
) -> None:
    """Add up config + layer sizes of the node platform's manifest (for the size guard)."""
    platform = ctx.measure_size_for or ""
    evidence.platform = platform
    ref = evidence.digest or (ctx.tag_or_digest or "")
    document = await _get_json(client, endpoint, ctx, repository, ref, run)
    if document is not None and document.get("mediaType", evidence.media_type) in _INDEX_TYPES:
        os_name, _, arch = platform.partition("/")
        chosen = next(
            (
                m
                for m in document.get("manifests", [])
                if isinstance(m, dict)
                and m.get("platform", {}).get("os") == os_name
                and m.get("platform", {}).get("architecture") == arch.split("/")[0]
            ),
            None,
        )
        document = None
        if chosen is not None and isinstance(chosen.get("digest"), str):
            document = await _get_json(client, endpoint, ctx, repository, chosen["digest"], run)
    if document is None:
        return
    parts = [document.get("config", {}), *document.get("layers", [])]
    total = 0
    for part in parts:
        size = part.get("size") if isinstance(part, dict) else None
        if not isinstance(size, int) or size < 0:
            return  # a malformed manifest: size unknown
        total += size
    evidence.image_size = total


async def _get_json(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    ctx: ProbeContext,
    repository: str,
    ref: str,
    run: ProbeRun,
) -> dict[str, Any] | None:
    url = manifest_url(endpoint, repository, ref)
    reply = await _authorized(client, endpoint, ctx, "GET", url, run)
    if reply.status != 200:
        return None
    try:
        document = json.loads(reply.body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _fill(evidence: ManifestEvidence, reply: _Reply) -> None:
    headers = reply.headers
    evidence.status = reply.status
    evidence.digest = headers.get("docker-content-digest", "")
    evidence.media_type = headers.get("content-type", "") if reply.status == 200 else ""
    length = headers.get("content-length", "")
    evidence.content_length = int(length) if length.isdigit() else None
    evidence.ratelimit_limit = headers.get("ratelimit-limit", "")
    evidence.ratelimit_remaining = headers.get("ratelimit-remaining", "")
    evidence.ratelimit_source = headers.get("docker-ratelimit-source", "")
    evidence.error_codes = [c for c, _ in error_codes(reply.body) if c]
