"""Registry path probes, one per file, all with one signature::

    async def probe_xxx(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult

Each returns success, timed phases (monotonic clock), typed evidence, a one-line redacted error
and a :class:`~agent.models.Cause` on failure; none raises (one runner, ``_runner.py``, builds
every result and classifies what a probe did not expect). They share ``ctx.state`` (addresses,
connected address, /v2/ challenge, token), so run them in chain order — :func:`probe_endpoint`
does — or alone (the runner resolves what a probe needs when run by itself). Probes run on
another's behalf (the token realm's dns → tcp → tls) come back with its result
(:attr:`~agent.models.ProbeResult.preceding`) and the chain lists them before it.

Name resolution happens only in :func:`probe_dns` (resolv.conf + hosts file, never the system
resolver); every connection goes to an address it produced, with Host/SNI = the hostname.

A chain records its progress in a :class:`ChainProgress` as it goes, so what it learned can be
read at any moment: when the run is cancelled (Ctrl-C) or cut at a deadline, the finished probes
stay and the step in flight is reported as cut off (:meth:`RegistryProbe.so_far`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from agent import hostport
from agent.models import (
    Cause,
    Endpoint,
    EndpointReport,
    HttpEvidence,
    Phase,
    ProbeName,
    ProbeResult,
)
from agent.probes._addresses import url_for
from agent.probes._context import Challenge, EndpointState, ProbeContext
from agent.probes._parse import parse_www_authenticate, status_text
from agent.probes.dns import probe_dns
from agent.probes.http import probe_http
from agent.probes.manifest import MANIFEST_ACCEPT, manifest_url, probe_manifest
from agent.probes.tcp import probe_tcp
from agent.probes.tls import probe_tls
from agent.probes.token import probe_token
from agent.timing import ms_since

__all__ = [
    "MANIFEST_ACCEPT",
    "ChainProgress",
    "Challenge",
    "EndpointState",
    "Probe",
    "ProbeContext",
    "RegistryProbe",
    "parse_www_authenticate",
    "probe_dns",
    "probe_endpoint",
    "probe_http",
    "probe_manifest",
    "probe_tcp",
    "probe_tls",
    "probe_token",
    "step_text",
]

Probe = Callable[[Endpoint, ProbeContext], Awaitable[ProbeResult]]

_FALLBACK_NOTE = "the server answers plain HTTP: the runtime retries over http://"
_FALLBACK_SUMMARY = "HTTPS answered in plain HTTP, the runtime falls back to http"
# how a step in flight is named in a report, e.g. "TLS handshake with blackhole.test:15099"
_STEP_TEXT: dict[ProbeName, str] = {
    "dns": "DNS lookup of",
    "tcp": "TCP connect to",
    "tls": "TLS handshake with",
    "http": "GET",
    "token": "token request to",
    "manifest": "HEAD",
}


def step_text(step: ProbeName, target: str) -> str:
    """A chain step as words: ``TLS handshake with host:443``, ``GET http://host/v2/``."""
    return f"{_STEP_TEXT[step]} {target}"


@dataclass
class ChainProgress:
    """One endpoint's chain as it runs: the finished probes and the step in flight.

    :func:`probe_endpoint` keeps it up to date; read it at any time with :meth:`so_far`, e.g.
    after the chain was cancelled, to report what was learned before that.
    """

    endpoint: Endpoint  # as configured; the report names the one used (``target``)
    results: list[ProbeResult] = field(default_factory=list)
    report: EndpointReport | None = None  # set when the chain finished
    running: ProbeName | None = None  # the step in flight
    fell_back: bool = False  # HTTPS answered with plain HTTP and the chain went on over http
    _started: float | None = None
    _running_since: float = 0.0
    _ctx: ProbeContext | None = field(default=None, repr=False)  # the chain's own context

    @property
    def target(self) -> Endpoint:
        """The endpoint the chain talks to now: ``endpoint``, or its plain-HTTP fallback."""
        if not self.fell_back:
            return self.endpoint
        rest = self.endpoint.url.partition("://")[2]
        return self.endpoint.model_copy(update={"scheme": "http", "url": f"http://{rest}"})

    def so_far(self, cause: Cause, reason: str) -> EndpointReport:
        """The finished report, or the chain so far with the step in flight cut off (``cause``,
        e.g. ``cancelled`` or ``timeout``, and ``reason``: "cancelled before it finished")."""
        if self.report is not None:
            return self.report
        probes = list(self.results)
        if self.running is None:
            summary = f"{self.endpoint.url} not probed: {reason}"
        else:
            target = self._step_target(self.running)
            summary = f"{step_text(self.running, target)}: {reason}"
            probes.append(
                ProbeResult(
                    probe=self.running,
                    target=target,
                    success=False,
                    duration_ms=ms_since(self._running_since),
                    cause=cause,
                    error=summary,
                )
            )
        return EndpointReport(
            endpoint=self.target,
            success=False,
            cause=cause,
            summary=summary,
            duration_ms=ms_since(self._started) if self._started is not None else 0.0,
            probes=probes,
        )

    def _step_target(self, step: ProbeName) -> str:
        endpoint, ctx = self.target, self._ctx
        if step == "dns":
            return endpoint.host
        if step in ("tcp", "tls"):
            return hostport.join(endpoint.host, endpoint.port)
        if step == "manifest" and ctx is not None and ctx.repository and ctx.tag_or_digest:
            return manifest_url(endpoint, ctx.repository, ctx.tag_or_digest)
        challenge = ctx.state.challenge if ctx is not None else None
        if step == "token" and challenge is not None and challenge.realm:
            return challenge.realm
        return url_for(endpoint, endpoint.path + "/")

    def _start(self, ctx: ProbeContext) -> None:
        self._ctx, self._started = ctx, time.monotonic()

    async def _run(self, name: ProbeName, step: Probe, ctx: ProbeContext) -> ProbeResult:
        self.running, self._running_since = name, time.monotonic()
        result = await step(self.target, ctx)
        self.results.extend(result.preceding)  # e.g. the token realm's dns/tcp/tls, first
        self.results.append(result)
        self.running = None
        return result

    def _fall_back(self, tls: ProbeResult) -> None:
        """HTTPS found plain HTTP on an endpoint the runtime retries over http: go on so."""
        note = Phase(name="http fallback", ok=True, duration_ms=0.0, detail=_FALLBACK_NOTE)
        update = {"success": True, "cause": None, "error": "", "phases": [*tls.phases, note]}
        self.results[-1] = tls.model_copy(update=update)
        self.fell_back = True

    def _finish(self, failed: ProbeResult | None, note: str = "") -> EndpointReport:
        started = self._started if self._started is not None else time.monotonic()
        duration = ms_since(started)
        if failed is not None:
            self.report = EndpointReport(
                endpoint=self.target,
                success=False,
                cause=failed.cause,
                summary=failed.error,
                duration_ms=duration,
                probes=self.results,
            )
        else:
            notes = [_FALLBACK_SUMMARY if self.fell_back else "", note]
            self.report = EndpointReport(
                endpoint=self.target, success=True, duration_ms=duration, probes=self.results
            )
            self.report.summary = _success_summary(self.report, "; ".join(filter(None, notes)))
        return self.report


async def probe_endpoint(
    endpoint: Endpoint, ctx: ProbeContext, progress: ChainProgress | None = None
) -> EndpointReport:
    """Run dns → tcp → tls (https only) → http (/v2/) → token (Bearer only) → manifest (when
    ``ctx`` names a repository and tag/digest) and stop at the first failed step.

    Uses a copy of ``ctx`` with fresh state, so one context can serve several endpoints. An
    endpoint with ``http_fallback`` whose TLS step finds plain HTTP goes on over http, as the
    runtime does. ``progress`` (optional) is kept up to date as the chain runs.
    """
    chain = progress if progress is not None else ChainProgress(endpoint)
    ctx = ctx.for_endpoint()
    chain._start(ctx)
    steps: list[tuple[ProbeName, Probe]] = [("dns", probe_dns), ("tcp", probe_tcp)]
    if endpoint.scheme == "https":
        steps.append(("tls", probe_tls))
    steps.append(("http", probe_http))
    for name, step in steps:
        result = await chain._run(name, step, ctx)
        if result.success:
            continue
        if name == "tls" and endpoint.http_fallback and result.cause is Cause.HTTP_HTTPS_MISMATCH:
            chain._fall_back(result)
            continue
        return chain._finish(result)

    challenge = ctx.state.challenge
    if challenge is not None and challenge.is_bearer:
        result = await chain._run("token", probe_token, ctx)
        if not result.success:
            return chain._finish(result)

    skipped = ""
    if ctx.repository and ctx.tag_or_digest:
        needed = (
            "pull" if ":" in ctx.tag_or_digest else "resolve"
        )  # digests contain ":", tags cannot
        if needed in endpoint.capabilities:
            result = await chain._run("manifest", probe_manifest, ctx)
            if not result.success:
                return chain._finish(result)
        else:
            skipped = (
                f"manifest not checked: the host lacks the '{needed}' capability, "
                "containerd does not ask it"
            )
    return chain._finish(None, skipped)


class RegistryProbe:
    """Probes several endpoints concurrently, each with its own state and :class:`ChainProgress`.

    :meth:`run` gives the reports in input order; :meth:`so_far` gives them at any moment (the
    finished ones as they are, the others cut off), e.g. after ``run`` was cancelled.
    """

    def __init__(self, endpoints: Sequence[Endpoint], ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.chains = [ChainProgress(endpoint) for endpoint in endpoints]

    async def run(self) -> list[EndpointReport]:
        return list(
            await asyncio.gather(*(probe_endpoint(c.endpoint, self.ctx, c) for c in self.chains))
        )

    def so_far(self, cause: Cause, reason: str) -> list[EndpointReport]:
        return [chain.so_far(cause, reason) for chain in self.chains]


def _success_summary(report: EndpointReport, note: str) -> str:
    endpoint, address = report.endpoint, report.address
    where = hostport.join(endpoint.host, endpoint.port)
    parts = [f"{endpoint.scheme}://{where}" + (f" ({address})" if address else "") + " reachable"]
    http = report.evidence(HttpEvidence, first=True)
    if http is not None:
        auth = f" {http.auth_scheme}" if http.auth_scheme else ""
        status = http.status
        parts.append(f"/v2/ → {status}{auth}" if status is not None else "/v2/ answered")
    if any(r.probe == "token" for r in report.probes):
        parts.append("token ok")
    manifest = report.manifest
    if manifest is not None:
        text = f"{manifest.method} manifest → {status_text(manifest.status or 0)}"
        if manifest.digest:
            text += f" {manifest.digest}"
        if manifest.ratelimit_remaining:
            text += f" (ratelimit-remaining {manifest.ratelimit_remaining})"
        parts.append(text)
    if note:
        parts.append(note)
    return "; ".join(parts)
