"""Diagnosis: turn a runtime error and probe evidence into one cause, a summary and a remedy.

Two sources are combined:

* the runtime's own error text (containerd 1.x … 2.x, CRI-O, Docker and kubelet wordings, with or
  without their wrappers), classified by :func:`agent.classify.classify` — the same classifier
  ``pullcheck explain`` uses on pasted text;
* the registry-path probes (:class:`~agent.models.EndpointReport`), which settle what the text
  cannot, e.g. "pull access denied, repository does not exist or may require authorization" becomes
  ``repository_not_found`` or ``unauthorized`` depending on what the registry answered.

The cause is the failure that still blocks the pull once everything before it is fixed. The
runtime tries the endpoints in order and a failure that stops one endpoint (a dead mirror) does
not block the pull when a later one gets further, so the endpoint whose chain got furthest
decides (dns < tcp < tls < http < token < manifest < the registry's answer about the content, a
404 for the tag or repository), in the runtime's order when equally far. containerd's text names
the first non-404 error it met, which can be a mirror's "connection refused" in front of an
upstream that says the tag does not exist; when the text names a shallower stage than the probes
reached, the probes decide and the text becomes a runtime :class:`~agent.models.Finding`. Causes
no probe can see (unpacking, platforms, blobs, disk, cancellation, the runtime itself) keep the
runtime's classification. Every other failure on the path is a finding (:func:`path_findings`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

from agent.classify import VARIANTS, classify
from agent.hostport import bracket, join, split_go
from agent.models import Cause, EndpointReport, Finding, ProbeName, ProbeResult
from agent.redaction import redact_text
from agent.remedies import remedy_text

__all__ = [
    "AMBIGUOUS_CAUSES",
    "Diagnosis",
    "classify_error",
    "diagnose",
    "path_findings",
    "remedy",
    "sanitize_error",
]

# Causes that the runtime text alone cannot settle; the probe evidence decides between them.
AMBIGUOUS_CAUSES = frozenset({Cause.MANIFEST_NOT_FOUND, Cause.UNAUTHORIZED})


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    summary: str
    remedy: str
    findings: list[Finding] = field(default_factory=list)  # other failures on the path
    fragment: str = ""  # the words of the runtime's text that decided ("" when probes did)


def sanitize_error(text: str) -> str:
    """Remove anything credential-like from an error text before it is stored or shown
    (:func:`agent.redaction.redact_text`)."""
    return redact_text(text)


def classify_error(text: str, grpc_code: str | None = None) -> Cause:
    """Classify a runtime pull error by its text (and gRPC status code name, if known) with
    :func:`agent.classify.classify`. Causes in :data:`AMBIGUOUS_CAUSES` should be refined with
    probe evidence by :func:`diagnose`."""
    return classify(text, grpc_code).cause


# Causes only the runtime sees: the probes stop at the manifest HEAD and never unpack anything.
_RUNTIME_ONLY = frozenset(
    {
        Cause.INVALID_REFERENCE,
        Cause.PLATFORM_MISMATCH,
        Cause.LAYER_CORRUPT,
        Cause.BLOB_NOT_FOUND,
        Cause.DISK_FULL,
        Cause.RUNTIME_UNAVAILABLE,
        Cause.CANCELLED,
        Cause.CONNECTION_RESET,  # the probes stop at the manifest; the transfer comes later
        Cause.IMAGE_NEVER_PULL,
    }
)
# How far a chain got: the index of the step that failed; the registry's answer about the
# content (404 for the tag or repository) is the last stage, a working endpoint beyond it.
_STAGES: tuple[ProbeName, ...] = get_args(ProbeName)
_CONTENT = frozenset({Cause.MANIFEST_NOT_FOUND, Cause.REPOSITORY_NOT_FOUND})
_CONTENT_DEPTH = len(_STAGES)
_WORKS = _CONTENT_DEPTH + 1
# the stage a cause is met at, for reports without probes and for the runtime's text
_CAUSE_DEPTH: dict[Cause, int] = {
    Cause.DNS_FAILURE: 0,
    Cause.CONNECTION_REFUSED: 1,
    Cause.TIMEOUT: 1,
    Cause.TLS_ERROR: 2,
    Cause.HTTP_HTTPS_MISMATCH: 2,
    Cause.UNAUTHORIZED: 5,
    Cause.FORBIDDEN: 5,
    Cause.RATE_LIMITED: 5,
    Cause.REGISTRY_ERROR: 5,
    Cause.MANIFEST_NOT_FOUND: _CONTENT_DEPTH,
    Cause.REPOSITORY_NOT_FOUND: _CONTENT_DEPTH,
}
_RUNTIME_PREFIX = re.compile(
    r'^(?:failed to (?:pull and unpack image|resolve reference|resolve image) "[^"]*": )+'
)
_STATUS_5XX = re.compile(r"\b5\d\d(?: [A-Z][a-z]+)+")


def _failed_probe(report: EndpointReport) -> ProbeResult | None:
    return next((p for p in reversed(report.probes) if not p.success), None)


def _depth(report: EndpointReport) -> int:
    """How far the endpoint's chain got (see the module docstring)."""
    if report.success:
        return _WORKS
    failed = _failed_probe(report)
    if failed is None:
        return _CAUSE_DEPTH.get(report.cause, -1) if report.cause is not None else -1
    if failed.probe == "manifest" and failed.cause in _CONTENT:
        return _CONTENT_DEPTH
    return _STAGES.index(failed.probe)


def _runtime_depth(cause: Cause, text: str) -> int | None:
    """The stage the runtime's text names, None when it names none (``unknown``)."""
    lowered = text.lower()
    if cause is Cause.TIMEOUT and "tls handshake timeout" in lowered:
        return _STAGES.index("tls")
    if cause is Cause.TIMEOUT and ("awaiting" in lowered or "client.timeout" in lowered):
        return _STAGES.index("http")
    if cause in (Cause.UNAUTHORIZED, Cause.REGISTRY_ERROR) and "token" in lowered:
        return _STAGES.index("token")
    return _CAUSE_DEPTH.get(cause)


def _deciding(reports: Sequence[EndpointReport]) -> EndpointReport | None:
    """The failure that blocks the pull: the furthest chain, the runtime's order when equal;
    None when an endpoint works (the pull does not need the others) or none failed."""
    if any(r.success for r in reports):
        return None
    failed = [(i, r) for i, r in enumerate(reports) if r.cause is not None]
    if not failed:
        return None
    return max(failed, key=lambda pair: (_depth(pair[1]), -pair[0]))[1]


def path_findings(
    reports: Sequence[EndpointReport], cause_report: EndpointReport | None = None
) -> list[Finding]:
    """Every failed endpoint except the one that is the cause, in the runtime's order (a chain
    cut by a cancellation is no failure of its own)."""
    return [
        Finding(cause=r.cause, summary=r.summary, endpoint=r.endpoint.url)
        for r in reports
        if r is not cause_report and r.cause is not None and r.cause is not Cause.CANCELLED
    ]


def _refine(cause: Cause, text: str, reports: Sequence[EndpointReport]) -> Cause:
    """Settle what the text leaves open with what the registry answered to the probes."""
    if cause not in AMBIGUOUS_CAUSES:
        return cause
    probe_causes = {r.cause for r in reports if r.cause is not None}
    if Cause.REPOSITORY_NOT_FOUND in probe_causes and (
        cause is Cause.MANIFEST_NOT_FOUND or "repository does not exist" in text
    ):
        return Cause.REPOSITORY_NOT_FOUND
    return cause


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def diagnose(
    *,
    image: str,
    runtime_error: str | None,
    grpc_code: str | None,
    reports: Sequence[EndpointReport],
    platform: str = "",
    hosts_dir: str = "/etc/containerd/certs.d",
    deadline: float | None = None,
) -> Diagnosis | None:
    """One cause, summary, remedy and the other failures on the path for a failed pull test, or
    ``None`` when nothing failed (then :func:`path_findings` gives the failures seen anyway).

    ``runtime_error`` is the CRI error text (``None`` in resolve mode or when the pull succeeded);
    ``reports`` are the endpoint probe chains in the order containerd tries them. ``deadline``
    (seconds) means the test's own deadline cut the pull.
    """
    decided = _deciding(reports)
    if runtime_error is None:
        if decided is None or decided.cause is None:
            return None
        return _from_report(decided.cause, decided, reports, image, platform, hosts_dir)
    text = sanitize_error(runtime_error)
    if deadline is not None:
        return _deadline(deadline, reports, image, platform, hosts_dir)
    verdict = classify(text, grpc_code)
    cause = _refine(verdict.cause, text, reports)
    depth = _runtime_depth(cause, text)
    if (
        decided is not None
        and decided.cause is not None
        and cause not in _RUNTIME_ONLY
        and (depth is None or depth < _depth(decided))
    ):
        # the probes got further than the failure the runtime names (or it names none)
        found = _from_report(decided.cause, decided, reports, image, platform, hosts_dir)
        if depth is not None:
            found.findings.append(
                Finding(cause=cause, summary=_runtime_line(text), source="runtime")
            )
        return found
    variant = verdict.variant if cause is verdict.cause else ""
    evidence = decided if decided is not None and decided.cause is cause else None
    evidence = evidence or next((r for r in reports if r.cause is cause), None)
    if evidence is not None and evidence.summary:
        found = _from_report(cause, evidence, reports, image, platform, hosts_dir, text, variant)
        return Diagnosis(found.cause, found.summary, found.remedy, found.findings, verdict.fragment)
    summary = _text_summary(cause, text, image, platform, variant, verdict.fragment)
    fix = remedy(
        cause, None, image, platform=platform, hosts_dir=hosts_dir, detail=text, variant=variant
    )
    gone = _gone_since(cause, reports)
    if gone is not None:
        # the transfer broke and the registry now refuses connections: it went down mid-pull
        summary += f"; {gone.endpoint.url} now refuses connections: the registry went down"
        fix = (
            f"Registry {_registry(image) or 'endpoint'} stopped listening during the pull (it "
            "refuses connections now): check whether it crashed or was restarted (its logs, "
            "its restart count), and run the test again once it is back. " + fix
        )
    return Diagnosis(cause, summary, fix, path_findings(reports), verdict.fragment)


def _gone_since(cause: Cause, reports: Sequence[EndpointReport]) -> EndpointReport | None:
    """The one endpoint that refuses connections after the runtime's transfer from it broke."""
    if cause is not Cause.CONNECTION_RESET or len(reports) != 1:
        return None
    return reports[0] if reports[0].cause is Cause.CONNECTION_REFUSED else None


def _from_report(
    cause: Cause | None,
    report: EndpointReport,
    reports: Sequence[EndpointReport],
    image: str,
    platform: str,
    hosts_dir: str,
    detail: str = "",
    variant: str = "",
) -> Diagnosis:
    cause = cause or Cause.UNKNOWN
    return Diagnosis(
        cause,
        report.summary,
        remedy(
            cause,
            report,
            image,
            platform=platform,
            hosts_dir=hosts_dir,
            detail=detail,
            variant=variant,
        ),
        path_findings(reports, report),
    )


def _runtime_line(text: str) -> str:
    """The runtime's error without the ``failed to pull … / failed to resolve …`` preamble."""
    return _one_line(_RUNTIME_PREFIX.sub("", text))


def _deadline(
    seconds: float,
    reports: Sequence[EndpointReport],
    image: str,
    platform: str,
    hosts_dir: str,
) -> Diagnosis:
    """The test deadline cut the pull: say so once, and where the registry path stalls."""
    lead = f"the pull did not finish within the {seconds:g} s deadline"
    hung = _deciding([r for r in reports if r.cause is Cause.TIMEOUT])
    failed = _failed_probe(hung) if hung is not None else None
    if hung is not None and failed is not None:
        from agent.probes import step_text  # the probes load only when they run

        where = step_text(failed.probe, failed.target) + _address(hung, failed)
        return Diagnosis(
            Cause.TIMEOUT,
            f"{lead}; the registry path stalls at the {where}, which does not answer",
            remedy(Cause.TIMEOUT, hung, image, platform=platform, hosts_dir=hosts_dir),
            path_findings(reports, hung),
        )
    decided = _deciding(reports)
    if decided is not None and decided.summary:
        return Diagnosis(
            Cause.TIMEOUT,
            f"{lead}; the probes found: {decided.summary}",
            remedy(Cause.TIMEOUT, decided, image, platform=platform, hosts_dir=hosts_dir),
            path_findings(reports, decided),
        )
    if reports:
        return Diagnosis(
            Cause.TIMEOUT,
            f"{lead}; every endpoint answered the probes up to the manifest, so the pull "
            "stalled or crawled in the layer download (the blobs)",
            "The registry answers its ping and the manifest, so what does not finish is the "
            "layer download: check the registry's blob storage (a backend that hangs answers "
            "manifests and stalls blobs), any proxy on the path and the node's bandwidth; for a "
            "large image on a slow link, give the test a longer --timeout.",
            path_findings(reports),
        )
    return Diagnosis(
        Cause.TIMEOUT,
        lead,
        remedy(Cause.TIMEOUT, None, image, platform=platform, hosts_dir=hosts_dir),
    )


def _address(report: EndpointReport, failed: ProbeResult) -> str:
    """`` (127.0.0.1)``: the address the chain connected to, for steps named by host or URL."""
    if failed.probe in ("dns", "tcp") or not report.address:
        return ""
    return f" ({report.address})"


_LAYER = re.compile(r"failed to extract layer \(?(?:\S+ )?(sha256:[0-9a-f]{4,12})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_FULL_PATH = re.compile(r"(/\S+?): no space left on device")


def _text_summary(
    cause: Cause, text: str, image: str, platform: str, variant: str = "", fragment: str = ""
) -> str:
    """A one-line summary from the runtime text alone, for causes no probe can see."""
    decided = _one_line(fragment or text, 200)
    registry = _registry(image) or "the registry"
    if variant in VARIANTS:
        return f"{VARIANTS[variant]}: {decided}"
    if cause is Cause.LAYER_CORRUPT:
        layer = _LAYER.search(text)
        parts = [p for p in text.split(": ") if p.strip() not in {"unknown", "failed precondition"}]
        which = f"layer {layer.group(1)}… of " if layer else "a layer of "
        return f"{which}{image} cannot be unpacked: {_one_line(': '.join(parts[-2:]), 160)}"
    if cause is Cause.PLATFORM_MISMATCH:
        return f"{image} has no manifest for {platform or 'this node'} in its image index"
    if cause is Cause.BLOB_NOT_FOUND:
        digest = _DIGEST.search(text)
        blob = digest.group(0) if digest else "a blob"
        return f"{blob} of {image} is missing on the registry (the manifest resolves, the blob not)"
    if cause is Cause.DISK_FULL:
        path = _FULL_PATH.search(text)
        where = f" writing {path.group(1)}" if path else ""
        return f"no space left on the node's image filesystem{where}"
    if cause is Cause.REGISTRY_ERROR:
        status = _STATUS_5XX.search(text)
        answer = f"HTTP {status.group(0)}" if status else "a server-side error"
        return f"{registry} answered {answer}, a server-side error (runtime: {_runtime_line(text)})"
    if cause is Cause.CONNECTION_RESET:
        return f"the transfer from {registry} broke after it had started: {decided}"
    if cause is Cause.IMAGE_NEVER_PULL:
        return f"{image} is not on the node and the pod's imagePullPolicy is Never"
    return f"runtime: {_one_line(text)}"


def _server_error(report: EndpointReport | None, detail: str) -> str:
    """``500 to HEAD <url>`` when the evidence shows an HTTP 5xx from the registry, else ``""``."""
    failed = _failed_probe(report) if report is not None else None
    evidence = failed.evidence if failed is not None else None
    if evidence is not None and evidence.kind in ("http", "manifest", "token"):
        status = evidence.status
        if status is not None and 500 <= status < 600:
            if evidence.kind == "token":
                return f"{status} to the token request {evidence.realm}"
            return f"{status} to {evidence.method} {evidence.url}"
    found = _STATUS_5XX.search(detail)
    return found.group(0) if found is not None else ""


def _registry(image: str) -> str:
    """The registry part of a normalised reference, "" when ``image`` has none."""
    return image.split("/", 1)[0] if "/" in image else ""


def _where(report: EndpointReport | None, image: str) -> tuple[str, str]:
    """(host, host:port) for remedies: the failing endpoint, else the image's registry."""
    if report is None:
        registry = _registry(image)
        if not registry:
            return "the registry", "the registry port"
        split = split_go(registry)
        return (bracket(split[0]) if split else registry), registry
    ep = report.endpoint
    return bracket(ep.host), join(ep.host, ep.port)


def remedy(
    cause: Cause,
    report: EndpointReport | None,
    image: str,
    *,
    platform: str = "",
    hosts_dir: str = "/etc/containerd/certs.d",
    detail: str = "",
    variant: str = "",
) -> str:
    """An action an operator can take for ``cause``, naming the host/port from the evidence
    (``report``, and ``detail``: the runtime's error text, for what it alone shows; ``variant``:
    the mechanism the text names, :data:`agent.classify.VARIANTS`); the texts are
    :func:`agent.remedies.remedy_text`."""
    host, hostport = _where(report, image)
    server_error = (
        _server_error(report, detail) if cause in (Cause.UNKNOWN, Cause.REGISTRY_ERROR) else ""
    )
    return remedy_text(
        cause,
        host=host,
        hostport=hostport,
        registry=_registry(image) or hostport,
        platform=platform,
        hosts_dir=hosts_dir,
        variant=variant,
        server_error=server_error,
        plain_http=report is not None and report.endpoint.scheme == "http",
    )
