"""Building :class:`ProbeResult` values: timing, phases and redaction in one place."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from typing import Literal

from agent.models import Cause, Evidence, Phase, ProbeResult
from agent.probes._context import ProbeContext
from agent.redaction import redact_text

__all__ = ["ResultBuilder", "redact"]

ProbeName = Literal["dns", "tcp", "tls", "http", "token", "manifest"]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` as one line, redacted (:func:`agent.redaction.redact_text`) with the known
    ``secrets``."""
    return redact_text(" ".join(text.split()), secrets)


def _all_secrets(ctx: ProbeContext) -> list[str]:
    secrets = ctx.secrets()
    for cred in ctx.credentials:
        if cred.username or cred.password:
            pair = f"{cred.username}:{cred.password}".encode()
            secrets.append(base64.b64encode(pair).decode("ascii"))
    return secrets


class ResultBuilder:
    """Collects timed phases for one probe run and produces its (redacted) result."""

    def __init__(self, probe: ProbeName, target: str, ctx: ProbeContext) -> None:
        self.probe: ProbeName = probe
        self.target = target
        self.ctx = ctx
        self.start = time.monotonic()
        self.phases: list[Phase] = []

    def phase(self, name: str, ok: bool, started: float, detail: str = "") -> Phase:
        """Record a phase that began at ``started`` (a ``time.monotonic()`` value) and ends now."""
        phase = Phase(
            name=name,
            ok=ok,
            duration_ms=round((time.monotonic() - started) * 1000.0, 3),
            detail=detail,
        )
        self.phases.append(phase)
        return phase

    def ok(self, evidence: Evidence | None = None) -> ProbeResult:
        return self._build(True, None, "", evidence)

    def fail(self, cause: Cause, error: str, evidence: Evidence | None = None) -> ProbeResult:
        return self._build(False, cause, error, evidence)

    def _build(
        self, success: bool, cause: Cause | None, error: str, evidence: Evidence | None
    ) -> ProbeResult:
        secrets = _all_secrets(self.ctx)
        phases = [
            p.model_copy(update={"detail": redact(p.detail, secrets)}) if p.detail else p
            for p in self.phases
        ]
        return ProbeResult(
            probe=self.probe,
            target=redact(self.target, secrets),
            success=success,
            duration_ms=round((time.monotonic() - self.start) * 1000.0, 3),
            phases=phases,
            cause=cause,
            error=redact(error, secrets),
            evidence=evidence,
        )
