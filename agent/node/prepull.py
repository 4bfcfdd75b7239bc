"""The node side of a pre-pull: one image onto this node, kind to the registry.

Never re-pulls a digest the node has: ``IfNotPresent`` (or a digest-pinned reference) only
checks presence; ``Always`` resolves the tag's digest with a manifest HEAD and pulls only when the
node lacks it. Pulled images are kept.
"""

from __future__ import annotations

import time
from typing import Literal

from agent.credentials import Credential, Keyring
from agent.cri import ImageInfo
from agent.models import PullTestResult, manifests
from agent.node.metrics import parse_ratelimit_remaining
from agent.node.models import PullOutcome
from agent.node.state import AgentState
from agent.reference import Reference
from agent.service.policy import CheckedTest
from agent.timing import ms_since

__all__ = ["prepull_image"]


async def prepull_image(
    state: AgentState,
    checked: CheckedTest,
    policy: Literal["IfNotPresent", "Always"],
    credential: Credential | None,
    keyring: Keyring | None,
) -> PullOutcome:
    """One image onto this node; the outcome the aggregator's scheduler needs."""
    ref = checked.reference
    started = time.monotonic()
    present = await state.ask_runtime(lambda c: c.image_status(ref.kubelet_image))

    def done(result: PullTestResult | None, *, skipped: bool, digest: str) -> PullOutcome:
        remaining, window = _ratelimit(result)
        return PullOutcome(
            ok=result is None or result.success,
            skipped=skipped,
            digest=digest,
            cause=None if result is None else result.cause,
            summary="already present" if skipped else (result.summary if result else ""),
            remedy="" if result is None else result.remedy,
            duration_ms=ms_since(started, digits=1),
            registry=ref.registry_host,
            ratelimit_remaining=remaining,
            ratelimit_window=window,
        )

    if present is not None and (policy == "IfNotPresent" or ref.digest):
        return done(None, skipped=True, digest=ref.digest or _present_digest(present))
    if present is not None:  # Always with a tag: is the tag's current digest here already?
        resolved = await _run(state, ref, "resolve", checked.timeout, credential, keyring)
        if resolved.digest and _has_digest(present, resolved.digest):
            return done(resolved, skipped=True, digest=resolved.digest)
    result = await _run(state, ref, "pull", checked.timeout, credential, keyring)
    return done(result, skipped=False, digest=result.digest)


async def _run(
    state: AgentState,
    ref: Reference,
    mode: Literal["pull", "resolve"],
    timeout: float,
    credential: Credential | None,
    keyring: Keyring | None,
) -> PullTestResult:
    request, key = state.test(ref, mode, timeout, credential, keyring, keep=True)
    result, _body, outcome = await state.runner.run(key, request)
    state.metrics.observe_pulltest(result, reused=outcome != "fresh", outcome=outcome)
    return result


def _present_digest(image: ImageInfo) -> str:
    return next(iter(image.repo_digests), "").rsplit("@", 1)[-1]


def _has_digest(image: ImageInfo, digest: str) -> bool:
    return any(d.endswith("@" + digest) for d in image.repo_digests)


def _ratelimit(result: PullTestResult | None) -> tuple[float | None, float | None]:
    """The lowest ``ratelimit-remaining`` the manifest probes saw, and its window (seconds)."""
    best: tuple[float | None, float | None] = (None, None)
    for evidence in manifests(result.endpoints) if result is not None else []:
        text = evidence.ratelimit_remaining
        remaining = parse_ratelimit_remaining(text) if text else None
        if remaining is None:
            continue
        window = text.partition(";")[2].strip().removeprefix("w=")
        if best[0] is None or remaining < best[0]:
            best = (remaining, float(window) if window.isdigit() else None)
    return best
