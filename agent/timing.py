"""Durations in milliseconds on the monotonic clock, and the phase clock of a timed run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from agent.models import Phase

__all__ = ["PhaseClock", "ms_since"]


def ms_since(start: float, digits: int = 3) -> float:
    """Milliseconds since ``start`` (a ``time.monotonic()`` value), rounded to ``digits``."""
    return round((time.monotonic() - start) * 1000.0, digits)


class PhaseClock:
    """Collects timed :class:`~agent.models.Phase` records of one run (a pull test, a probe)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.phases: list[Phase] = []

    def add(self, name: str, ok: bool, start: float, detail: str = "") -> Phase:
        """Record a phase that began at ``start`` (``time.monotonic()``) and ends now."""
        phase = Phase(name=name, ok=ok, duration_ms=ms_since(start), detail=detail)
        self.phases.append(phase)
        return phase

    def elapsed_ms(self) -> float:
        return ms_since(self.started)
