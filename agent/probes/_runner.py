"""The one runner every probe goes through, as blackbox_exporter's ``prober`` package does.

A probe file has one public function, ``async def probe_xxx(endpoint, ctx) -> ProbeResult``,
which hands its body to :func:`run_probe`. The runner gives the body a :class:`ProbeRun`, the one
place that builds a result (timing, phases, redaction, the probes run on its behalf), supplies the
prerequisites a probe needs when run alone (:meth:`ProbeRun.addresses`, :meth:`ProbeRun.address`:
the DNS probe runs first when nothing was resolved yet), and catches and classifies whatever a
body raises, once: a probe reports, it never raises.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable

from agent.models import Cause, Endpoint, Evidence, Phase, ProbeName, ProbeResult
from agent.probes._addresses import host_key
from agent.probes._classify import classify
from agent.probes._context import ProbeContext
from agent.probes._tls_context import TlsConfigError
from agent.redaction import redact_text
from agent.timing import PhaseClock

__all__ = ["ProbeRun", "redact", "run_probe"]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` as one line, redacted (:func:`agent.redaction.redact_text`) with the known
    ``secrets``."""
    return redact_text(" ".join(text.split()), secrets)


class _Unresolved(Exception):
    """A prerequisite failed: the endpoint's host did not resolve (the message says why)."""


class ProbeRun:
    """One run of one probe: its timed phases, its evidence so far, the probes run on its behalf
    (:attr:`preceding`), and what it is doing (:attr:`action`, the start of an error text)."""

    def __init__(self, probe: ProbeName, target: str, ctx: ProbeContext) -> None:
        self.probe: ProbeName = probe
        self.target = target
        self.ctx = ctx
        self.action = target  # e.g. "GET http://host/v2/ (127.0.0.1)"
        self.evidence: Evidence | None = None
        self.preceding: list[ProbeResult] = []
        self._clock = PhaseClock()

    @property
    def phases(self) -> list[Phase]:
        return self._clock.phases

    @property
    def started(self) -> float:
        """When the run began (``time.monotonic()``)."""
        return self._clock.started

    def phase(self, name: str, ok: bool, started: float, detail: str = "") -> Phase:
        """Record a phase that began at ``started`` (a ``time.monotonic()`` value) and ends now."""
        return self._clock.add(name, ok, started, detail)

    def ok(self, evidence: Evidence | None = None) -> ProbeResult:
        return self._build(True, None, "", evidence)

    def fail(self, cause: Cause, error: str, evidence: Evidence | None = None) -> ProbeResult:
        return self._build(False, cause, error, evidence)

    def fail_action(self, cause: Cause, reason: str) -> ProbeResult:
        """A failure of :attr:`action` for ``reason``; a timeout names the limit it hit."""
        if cause is Cause.TIMEOUT:
            reason = f"{reason} after {self.ctx.timeout:.3g} s"
        return self.fail(cause, f"{self.action}: {reason}")

    async def addresses(self, endpoint: Endpoint) -> list[str]:
        """The addresses of ``endpoint.host``, running the DNS probe if the chain has not."""
        state = self.ctx.state
        if state.addresses is None:
            # imported here: the DNS probe itself runs through this module
            from agent.probes.dns import probe_dns

            await probe_dns(endpoint, self.ctx)
        if not state.addresses:
            failed = state.dns_error
            raise _Unresolved(failed.error if failed else f"lookup {endpoint.host}: no addresses")
        return list(state.addresses)

    async def address(self, endpoint: Endpoint) -> str:
        """The address to talk to: the one the TCP probe connected to, else the first one
        resolved; later requests for the host go there too."""
        state = self.ctx.state
        if state.connected:
            return state.connected
        address = (await self.addresses(endpoint))[0]
        state.host_addresses.setdefault(host_key(endpoint.host), address)
        return address

    def _build(
        self, success: bool, cause: Cause | None, error: str, evidence: Evidence | None
    ) -> ProbeResult:
        secrets = _secrets(self.ctx)
        phases = [
            p.model_copy(update={"detail": redact(p.detail, secrets)}) if p.detail else p
            for p in self.phases
        ]
        return ProbeResult(
            probe=self.probe,
            target=redact(self.target, secrets),
            success=success,
            duration_ms=self._clock.elapsed_ms(),
            phases=phases,
            cause=cause,
            error=redact(error, secrets),
            evidence=evidence if evidence is not None else self.evidence,
        ).after(self.preceding)


async def run_probe(
    probe: ProbeName,
    target: str,
    ctx: ProbeContext,
    body: Callable[[ProbeRun], Awaitable[ProbeResult]],
) -> ProbeResult:
    """Run ``body`` as the probe ``probe`` of ``target``; its result, or, when it raised, a
    failure: ``dns_failure`` for an unmet prerequisite, else the exception classified."""
    run = ProbeRun(probe, target, ctx)
    try:
        return await body(run)
    except _Unresolved as exc:
        return run.fail(Cause.DNS_FAILURE, str(exc))
    except Exception as exc:  # the one place: a probe reports, it never raises
        cause, reason = classify(exc)
        if isinstance(exc, TlsConfigError):
            run.phase("config", False, run.started, reason)
        return run.fail_action(cause, reason)


def _secrets(ctx: ProbeContext) -> list[str]:
    """Every secret of the run: the context's, and each credential's ``user:pass`` base64."""
    secrets = ctx.secrets()
    for cred in ctx.credentials:
        if cred.username or cred.password:
            pair = f"{cred.username}:{cred.password}".encode()
            secrets.append(base64.b64encode(pair).decode("ascii"))
    return secrets
