"""Names in a sentence, bounded: what the pod checks share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["LIST_LIMIT", "listing"]

#: names shown in one sentence before "and N more"
LIST_LIMIT: Final = 8


def listing(names: Sequence[str], limit: int = LIST_LIMIT) -> str:
    """``a, b, c and K more``: at most ``limit`` names."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
