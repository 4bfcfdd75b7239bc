"""Durations in milliseconds on the monotonic clock, and the phase clock of a timed run."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the models load on the first Phase built, not with this module
    from agent.models import Phase

__all__ = ["PhaseClock", "ms_since"]


def ms_since(start: float, digits: int = 3) -> float:
    """Milliseconds since ``start`` (a ``time.monotonic()`` value), rounded to ``digits``."""
    return round((time.monotonic() - start) * 1000.0, digits)


class PhaseClock:
    """Collects timed :class:`~agent.models.Phase` records of one run (a pull test, a probe).

    :meth:`note` times a phase without building its record, so without loading the result
    models (pydantic): a pull test sends PullImage before it imports them. The next :meth:`add`
    or :meth:`settle` turns the notes into records, in the order they were taken.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.phases: list[Phase] = []
        self._notes: list[tuple[str, bool, float, str]] = []

    def note(self, name: str, ok: bool, start: float, detail: str = "") -> None:
        """Time a phase that began at ``start`` and ends now; its record is built later."""
        self._notes.append((name, ok, ms_since(start), detail))

    def add(self, name: str, ok: bool, start: float, detail: str = "") -> Phase:
        """Record a phase that began at ``start`` (``time.monotonic()``) and ends now."""
        self.note(name, ok, start, detail)
        return self.settle()[-1]

    def settle(self) -> list[Phase]:
        """Every phase as a record (the notes built now, in order): :attr:`phases`."""
        if self._notes:
            from agent.models import Phase

            self.phases += [
                Phase(name=name, ok=ok, duration_ms=duration, detail=detail)
                for name, ok, duration, detail in self._notes
            ]
            self._notes.clear()
        return self.phases

    def elapsed_ms(self) -> float:
        return ms_since(self.started)
