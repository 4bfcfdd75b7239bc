"""Diagnosis: turn a runtime error and probe evidence into one cause, a summary and a remedy.

Two sources are combined:

* the runtime's own error text (containerd 1.4 … 2.x and CRI-O wordings, with or without kubelet's
  ``rpc error: code = … desc =`` prefix), matched by :func:`classify_error`;
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

from agent.hostport import bracket, join, split_go
from agent.models import Cause, EndpointReport, Finding, ProbeName, ProbeResult
from agent.redaction import redact_text

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

_QUOTED = re.compile(r'"[^"]*"')
_URL = re.compile(r"\bhttps?://[^\s\"]+?(?=:\s|[\s\"]|$)")

# (cause, pattern) in priority order: the first match wins. Texts overlap, so order matters:
# disk-full beats unpack errors, HTTP/HTTPS mismatch beats generic TLS, DNS beats timeouts,
# rate limits beat 4xx, and "not found" forms come last.
_RULES: tuple[tuple[Cause, re.Pattern[str]], ...] = tuple(
    (cause, re.compile(pattern, re.IGNORECASE))
    for cause, pattern in (
        (
            Cause.INVALID_REFERENCE,
            r"invalid reference format|must be lowercase"
            r"|failed to parse image reference|couldn't parse image name",
        ),
        (Cause.DISK_FULL, r"no space left on device|disk quota exceeded"),
        (
            Cause.PLATFORM_MISMATCH,
            r"no match for platform in manifest"
            r"|no image found in (manifest list|image index) for architecture"
            r"|image with reference .* was found but does not match the specified platform",
        ),
        (
            Cause.LAYER_CORRUPT,
            r"invalid tar header|failed to extract layer|apply layer error"
            r"|failed to unpack image|error processing tar file|gzip: invalid header"
            r"|zstd: |unexpected commit digest|digest mismatch|invalid checksum digest format"
            r"|failed size validation",
        ),
        (
            Cause.RATE_LIMITED,
            r"toomanyrequests|429 too many requests|pull rate limit"
            r"|too many requests",
        ),
        (
            Cause.HTTP_HTTPS_MISMATCH,
            r"server gave http response to https client"
            r"|first record does not look like a tls handshake|wrong version number"
            r"|http: server gave http response",
        ),
        (
            Cause.TLS_ERROR,
            r"x509:|tls: failed to verify certificate|certificate signed by unknown"
            r"|tls: bad certificate|tls: handshake failure|certificate has expired"
            r"|certificate is not valid|certificate verify failed",
        ),
        (
            Cause.DNS_FAILURE,
            r"lookup \S+( on \S+)?: (no such host|server misbehaving"
            r"|temporary failure in name resolution|no answer from dns server"
            r"|read udp [^:]+:\d+->\S+: i/o timeout|i/o timeout|dial udp)"
            r"|temporary failure in name resolution|name or service not known"
            r"|no such host",
        ),
        (
            Cause.CONNECTION_REFUSED,
            r"connection refused|no route to host|network is unreachable"
            r"|connection reset by peer",
        ),
        (
            Cause.TIMEOUT,
            r"i/o timeout|connection timed out|tls handshake timeout"
            r"|deadline exceeded|client\.timeout|timeout awaiting response headers"
            r"|cancel pulling image .* because of no progress",
        ),
        (Cause.CANCELLED, r"context canceled|code = canceled"),
        (Cause.FORBIDDEN, r"403 forbidden|\bdenied: |requested access to the resource is denied"),
        (
            Cause.BLOB_NOT_FOUND,
            r"/blobs/[^\s]*\bnot found|blob unknown|blob_unknown"
            r"|content at \S+ not found|fetching blob"
            r"|could not fetch content descriptor .* from remote: not found",
        ),
        (Cause.REPOSITORY_NOT_FOUND, r"name unknown|name_unknown|repository name not known"),
        (
            Cause.UNAUTHORIZED,
            r"401 unauthorized|failed to fetch (oauth|anonymous) token"
            r"|no basic auth credentials|authorization failed|unauthorized: "
            r"|authentication required|pull access denied",
        ),
        (
            Cause.MANIFEST_NOT_FOUND,
            r"manifest unknown|manifest_unknown"
            r"|failed to resolve (reference|image)[^\n]*: not found|: not found\s*$|code = notfound"
            r"|reading manifest .* not found",
        ),
        (
            Cause.RUNTIME_UNAVAILABLE,
            r"code = unavailable|connection error: desc = \"transport"
            r"|unknown service runtime\.v1",
        ),
    )
)


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    summary: str
    remedy: str
    findings: list[Finding] = field(default_factory=list)  # other failures on the path


def sanitize_error(text: str) -> str:
    """Remove anything credential-like from an error text before it is stored or shown
    (:func:`agent.redaction.redact_text`)."""
    return redact_text(text)


def _strip_names(text: str) -> str:
    """Drop quoted strings and URLs: image names and hosts may contain words like "denied".

    containerd also repeats the quoted reference unquoted (``"R": R: not found``), so every
    quoted name is removed wherever it appears.
    """
    for name in sorted({m.strip('"') for m in _QUOTED.findall(text)}, key=len, reverse=True):
        if len(name) > 2:
            text = text.replace(name, "…")
    return _URL.sub("<url>", text)


def classify_error(text: str, grpc_code: str | None = None) -> Cause:
    """Classify a runtime pull error by its text (and gRPC status code name, if known).

    The text is what containerd or CRI-O returned (optionally with kubelet's prefix). Causes in
    :data:`AMBIGUOUS_CAUSES` should be refined with probe evidence by :func:`diagnose`.
    """
    code = (grpc_code or "").upper()
    if code == "DEADLINE_EXCEEDED":
        return Cause.TIMEOUT
    if code in {"UNAVAILABLE", "UNIMPLEMENTED"} and "failed to pull" not in text:
        return Cause.RUNTIME_UNAVAILABLE
    # Blob URLs are informative (…/blobs/sha256:… not found), so match them before stripping.
    if code == "NOT_FOUND" and "/blobs/" in text and "platform" not in text:
        return Cause.BLOB_NOT_FOUND
    stripped = _strip_names(text)
    for cause, pattern in _RULES:
        if pattern.search(stripped) or (cause is Cause.BLOB_NOT_FOUND and pattern.search(text)):
            return cause
    if code == "CANCELLED":
        return Cause.CANCELLED
    if code == "NOT_FOUND":
        return Cause.MANIFEST_NOT_FOUND
    return Cause.UNKNOWN


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
    if cause is Cause.UNAUTHORIZED and "token" in lowered:
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


def _report_with(reports: Sequence[EndpointReport], cause: Cause) -> EndpointReport | None:
    return next((r for r in reports if r.cause is cause), None)


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
    cause = _refine(classify_error(text, grpc_code), text, reports)
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
    evidence = decided if decided is not None and decided.cause is cause else None
    evidence = evidence or _report_with(reports, cause)
    if evidence is not None and evidence.summary:
        return _from_report(cause, evidence, reports, image, platform, hosts_dir, text)
    return Diagnosis(
        cause,
        _text_summary(cause, text, image, platform),
        remedy(cause, None, image, platform=platform, hosts_dir=hosts_dir, detail=text),
        path_findings(reports),
    )


def _from_report(
    cause: Cause,
    report: EndpointReport,
    reports: Sequence[EndpointReport],
    image: str,
    platform: str,
    hosts_dir: str,
    detail: str = "",
) -> Diagnosis:
    return Diagnosis(
        cause,
        report.summary,
        remedy(cause, report, image, platform=platform, hosts_dir=hosts_dir, detail=detail),
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
            f"{lead}; every endpoint answered the probes, so the download itself is slow",
            "The registry answers, so the transfer is what takes long: give the test a longer "
            "--timeout for a large image or a slow link, and check the node's bandwidth and any "
            "proxy on the path.",
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


def _text_summary(cause: Cause, text: str, image: str, platform: str) -> str:
    """A one-line summary from the runtime text alone, for causes no probe can see."""
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
    server_error = _STATUS_5XX.search(text)
    if cause is Cause.UNKNOWN and server_error is not None:
        registry = _registry(image) or "the registry"
        return (
            f"{registry} answered HTTP {server_error.group(0)}, a server-side error "
            f"(runtime: {_runtime_line(text)})"
        )
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
) -> str:
    """An action an operator can take for ``cause``, naming the host/port from the evidence
    (``report``, and ``detail``: the runtime's error text, for what it alone shows)."""
    host, hostport = _where(report, image)
    server_error = _server_error(report, detail) if cause is Cause.UNKNOWN else ""
    if server_error:
        return (
            f"Registry {hostport} is failing on its side (HTTP {server_error}): check the "
            "registry's health and logs, its storage backend (disk space, object-store "
            "credentials and reachability) and any proxy or load balancer in front of it (a "
            "502, 503 or 504 often comes from the proxy, not the registry); if the outage "
            "passes, retry later."
        )
    if (
        cause is Cause.HTTP_HTTPS_MISMATCH
        and report is not None
        and report.endpoint.scheme == "http"
    ):
        return (
            f"The endpoint {hostport} speaks TLS but the runtime uses plain HTTP: declare it in "
            f'{hosts_dir}/{hostport}/hosts.toml with `server = "https://{hostport}"` (and its '
            "`ca`, or `skip_verify = true`), or serve plain HTTP there."
        )
    registry = _registry(image) or hostport
    node_platform = platform or "the node's platform"
    remedies: dict[Cause, str] = {
        Cause.INVALID_REFERENCE: (
            "Fix the image reference in the pod spec; it must follow the "
            "name[:tag][@digest] grammar with a lowercase repository."
        ),
        Cause.MANIFEST_NOT_FOUND: (
            f"The tag or digest does not exist in the repository on {hostport}: pin an existing "
            "tag (list them with `skopeo list-tags`) or push the missing one."
        ),
        Cause.REPOSITORY_NOT_FOUND: (
            f"The repository does not exist on {hostport}: check the image name and registry "
            "host for typos, or push the image there."
        ),
        Cause.UNAUTHORIZED: (
            f"Registry {hostport} wants credentials that were not given or were refused: fix or "
            "create the imagePullSecret (type kubernetes.io/dockerconfigjson) with a key matching "
            f"{registry}, and reference it from the pod or its service account."
        ),
        Cause.FORBIDDEN: (
            f"Registry {hostport} accepted the identity but denies pull access: grant that "
            "account pull permission on the repository, or use a pull secret for one that has it."
        ),
        Cause.RATE_LIMITED: (
            f"Registry {hostport} is rate-limiting pulls from this node's address: authenticate "
            "pulls with an imagePullSecret (higher limits), or pull through a cache or mirror "
            "(containerd hosts.toml) instead of the upstream registry."
        ),
        Cause.DNS_FAILURE: (
            f"The node cannot resolve {host}: fix the node's DNS (the resolver in its "
            "/etc/resolv.conf and its upstreams) or correct the registry host name."
        ),
        Cause.CONNECTION_REFUSED: (
            f"Nothing accepts connections on {hostport} from this node: allow egress to "
            f"{hostport} (firewall, security group, NetworkPolicy, proxy) and check that the "
            "registry is up on that port."
        ),
        Cause.TIMEOUT: (
            f"The endpoint {hostport} did not answer in time: allow egress to {hostport} "
            "(packets are being dropped), check any proxy on the path, or the registry's health."
        ),
        Cause.TLS_ERROR: (
            f"The TLS certificate of {host} is not trusted by the node: add its CA with "
            f'`ca = "/path/ca.crt"` in {hosts_dir}/{hostport}/hosts.toml (or the '
            "node trust store), or fix the certificate's names and validity."
        ),
        Cause.HTTP_HTTPS_MISMATCH: (
            f"The endpoint {hostport} speaks plain HTTP but the runtime uses HTTPS: declare it in "
            f'{hosts_dir}/{hostport}/hosts.toml with `server = "http://{hostport}"`, '
            "or serve the registry over TLS."
        ),
        Cause.PLATFORM_MISMATCH: (
            f"The image has no variant for {node_platform}: build and push it for that platform "
            "(a multi-arch index), or keep the pod off these nodes with a kubernetes.io/arch "
            "nodeSelector."
        ),
        Cause.LAYER_CORRUPT: (
            "A layer of the image is not a valid archive or does not match its digest: rebuild "
            "and re-push the image with valid layers."
        ),
        Cause.BLOB_NOT_FOUND: (
            f"Registry {hostport} serves the manifest but not one of its blobs (storage loss or "
            "an over-eager garbage collection): re-push the image."
        ),
        Cause.DISK_FULL: (
            "The node's image filesystem is full: free space (remove unused images with "
            "`crictl rmi --prune`, tune kubelet image GC thresholds) or enlarge the disk."
        ),
        Cause.RUNTIME_UNAVAILABLE: (
            "No container runtime answered on the CRI socket: start containerd or CRI-O, pass "
            "--endpoint, or mount the runtime socket into the agent."
        ),
        Cause.CANCELLED: (
            "The pull was cancelled before it finished (by the client, or by containerd's "
            "image_pull_progress_timeout on a stalled download): retry, and if it recurs check "
            "the network path to the registry for stalls."
        ),
        Cause.UNKNOWN: (
            "The failure matched no known cause: read the runtime error in the evidence and the "
            "probe results for each endpoint."
        ),
    }
    return remedies[cause]
