"""Registry path probes, one per file, all with one signature::

    async def probe_xxx(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult

Each returns success, timed phases (monotonic clock), typed evidence, a one-line redacted error
and a :class:`~agent.models.Cause` on failure; none raises for network conditions. They share
``ctx.state`` (addresses, connected address, /v2/ challenge, token), so run them in chain order —
:func:`probe_endpoint` does — or alone (a probe resolves what it needs when run by itself).

Name resolution happens only in :func:`probe_dns` (resolv.conf + hosts file, never the system
resolver); every connection goes to an address it produced, with Host/SNI = the hostname.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from agent.models import Endpoint, EndpointReport, ManifestEvidence, ProbeResult
from agent.probes._context import Challenge, EndpointState, ProbeContext
from agent.probes._net import format_host_port
from agent.probes._parse import parse_www_authenticate, status_text
from agent.probes.dns import probe_dns
from agent.probes.http import probe_http
from agent.probes.manifest import MANIFEST_ACCEPT, probe_manifest
from agent.probes.tcp import probe_tcp
from agent.probes.tls import probe_tls
from agent.probes.token import probe_token

__all__ = [
    "MANIFEST_ACCEPT",
    "Challenge",
    "EndpointState",
    "Probe",
    "ProbeContext",
    "parse_www_authenticate",
    "probe_dns",
    "probe_endpoint",
    "probe_http",
    "probe_manifest",
    "probe_registry",
    "probe_tcp",
    "probe_tls",
    "probe_token",
]

Probe = Callable[[Endpoint, ProbeContext], Awaitable[ProbeResult]]


async def probe_endpoint(endpoint: Endpoint, ctx: ProbeContext) -> EndpointReport:
    """Run dns → tcp → tls (https only) → http (/v2/) → token (Bearer only) → manifest (when
    ``ctx`` names a repository and tag/digest) and stop at the first failed step.

    Uses a copy of ``ctx`` with fresh state, so one context can serve several endpoints.
    """
    ctx = ctx.for_endpoint()
    started = time.monotonic()
    results: list[ProbeResult] = []
    steps: list[Probe] = [probe_dns, probe_tcp]
    if endpoint.scheme == "https":
        steps.append(probe_tls)
    steps.append(probe_http)
    skipped = ""
    for step in steps:
        failed = await _run(step, endpoint, ctx, results)
        if failed is not None:
            return _report(endpoint, results, started, failed)

    challenge = ctx.state.challenge
    if challenge is not None and challenge.is_bearer:
        failed = await _run(probe_token, endpoint, ctx, results)
        if failed is not None:
            return _report(endpoint, results, started, failed)

    if ctx.repository and ctx.tag_or_digest:
        needed = (
            "pull" if ":" in ctx.tag_or_digest else "resolve"
        )  # digests contain ":", tags cannot
        if needed in endpoint.capabilities:
            failed = await _run(probe_manifest, endpoint, ctx, results)
            if failed is not None:
                return _report(endpoint, results, started, failed)
        else:
            skipped = (
                f"manifest not checked: the host lacks the '{needed}' capability, "
                "containerd does not ask it"
            )
    return _report(endpoint, results, started, None, skipped)


async def probe_registry(endpoints: Sequence[Endpoint], ctx: ProbeContext) -> list[EndpointReport]:
    """Probe every endpoint concurrently (each with its own state); reports in input order."""
    return list(await asyncio.gather(*(probe_endpoint(e, ctx) for e in endpoints)))


async def _run(
    step: Probe, endpoint: Endpoint, ctx: ProbeContext, results: list[ProbeResult]
) -> ProbeResult | None:
    result = await step(endpoint, ctx)
    results.extend(ctx.state.sub_results)  # e.g. the token realm's dns/tcp/tls, before the step
    ctx.state.sub_results.clear()
    results.append(result)
    return None if result.success else result


def _report(
    endpoint: Endpoint,
    results: list[ProbeResult],
    started: float,
    failed: ProbeResult | None,
    note: str = "",
) -> EndpointReport:
    duration = round((time.monotonic() - started) * 1000.0, 3)
    if failed is not None:
        return EndpointReport(
            endpoint=endpoint,
            success=False,
            cause=failed.cause,
            summary=failed.error,
            duration_ms=duration,
            probes=results,
        )
    return EndpointReport(
        endpoint=endpoint,
        success=True,
        summary=_success_summary(endpoint, results, note),
        duration_ms=duration,
        probes=results,
    )


def _success_summary(endpoint: Endpoint, results: list[ProbeResult], note: str) -> str:
    where = format_host_port(endpoint.host, endpoint.port)
    address = next(
        (
            r.evidence.address
            for r in results
            if r.probe == "tcp" and r.evidence is not None and r.evidence.kind == "tcp"
        ),
        "",
    )
    parts = [f"{endpoint.scheme}://{where}" + (f" ({address})" if address else "") + " reachable"]
    http = next((r for r in results if r.probe == "http"), None)
    if http is not None and http.evidence is not None and http.evidence.kind == "http":
        auth = f" {http.evidence.auth_scheme}" if http.evidence.auth_scheme else ""
        status = http.evidence.status
        parts.append(f"/v2/ → {status}{auth}" if status is not None else "/v2/ answered")
    if any(r.probe == "token" for r in results):
        parts.append("token ok")
    manifest = next((r for r in reversed(results) if r.probe == "manifest"), None)
    if manifest is not None and isinstance(manifest.evidence, ManifestEvidence):
        evidence = manifest.evidence
        text = f"{evidence.method} manifest → {status_text(evidence.status or 0)}"
        if evidence.digest:
            text += f" {evidence.digest}"
        if evidence.ratelimit_remaining:
            text += f" (ratelimit-remaining {evidence.ratelimit_remaining})"
        parts.append(text)
    if note:
        parts.append(note)
    return "; ".join(parts)
