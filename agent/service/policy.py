"""The pull-test policy both processes apply to a request before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.reference import InvalidReference, Reference, parse
from agent.service.config import Settings
from agent.service.errors import ApiError

__all__ = ["CheckedTest", "check_test"]


@dataclass(frozen=True)
class CheckedTest:
    reference: Reference
    mode: Literal["pull", "resolve"]
    timeout: float


def check_test(
    settings: Settings, image: str, mode: str | None, timeout: float | None
) -> CheckedTest:
    """The policy every pull-test request passes first: a valid reference, in the allowlist,
    no pull when read-only (and resolve by default then), a timeout within the bound."""
    try:
        reference = parse(image)
    except InvalidReference as exc:
        raise ApiError(400, "invalid_reference", f"{image!r}: {exc.reason}") from None
    if not settings.allows(reference.name):
        raise ApiError(403, "not_allowed", f"{reference.name} is not in the registry allowlist")
    chosen = mode or ("resolve" if settings.read_only else "pull")
    if chosen == "pull" and settings.read_only:
        raise ApiError(403, "read_only", "pullcheck is read-only here: use mode=resolve")
    limits = settings.limits
    budget = timeout if timeout is not None else limits.default_timeout
    if budget > limits.max_timeout:
        raise ApiError(400, "bad_request", f"timeout: at most {limits.max_timeout:g} s")
    return CheckedTest(reference, "pull" if chosen == "pull" else "resolve", budget)
