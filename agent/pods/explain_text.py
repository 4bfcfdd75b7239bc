"""kubelet's message explained offline: the one place the pod engine calls ``explain``."""

from __future__ import annotations

from agent.explain import Finding, explain

__all__ = ["explain_message"]


def explain_message(text: str) -> Finding | None:
    """The finding ``pullcheck explain`` makes of ``text`` (the first, when several)."""
    found = explain(text).findings
    return found[0] if found else None
