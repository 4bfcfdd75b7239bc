"""``pullcheck explain``: find the image-pull failures in pasted text and explain each one.

Offline: no runtime, no network, no credentials; standard library and :mod:`agent.classify`
only, so it runs on a laptop as well as on a node.

The text may be one message or a whole paste: ``kubectl describe pod`` (``Events:`` rows and
``State: Waiting / Reason / Message``), ``kubectl get events`` rows, kubelet and containerd
journal lines (klog ``err="…"``, logfmt ``error="…"``, quoted and escaped), crictl, kubeadm
preflight, docker/podman CLI output or a ticket. It is cut into records (a new record starts at
a line that starts a log entry, an event row, a prompt or an error line; other lines continue the
record before them, as wrapped lines do), the records that report a pull failure are
classified, and the records about the same image are merged into one finding: the record whose
failure got furthest decides, the others are counted (kubelet repeats a failure many times).

Bounds: at most :data:`MAX_INPUT` characters and :data:`MAX_LINES` lines are read, a record
holds at most :data:`agent.classify.MAX_MESSAGE` characters, at most :data:`MAX_FINDINGS`
findings are kept; every pattern is linear. Pasted credentials never come back out: fragments
and names go through :func:`agent.redaction.redact_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from agent.causes import Cause
from agent.classify import MAX_MESSAGE, VARIANTS, classify, stage
from agent.redaction import redact_text
from agent.remedies import remedy_text, where

__all__ = ["MAX_INPUT", "MAX_LINES", "Explanation", "Finding", "explain", "remedy", "summary"]

MAX_INPUT: Final = 4 * 1024 * 1024  # characters read
MAX_LINES: Final = 100_000
MAX_FINDINGS: Final = 200

# A line that starts a record (everything else continues the record before it).
_STARTS: Final = re.compile(
    r"^\s*(?:[│|>]\s*)?(?:"
    r"(?:Normal|Warning)\s"  # describe event row
    r"|\d+(?:\.\d+)?[smhd]\w*\s+(?:Normal|Warning)\s"  # get events row
    r"|<?\w+>?\s+(?:\(x\d+ over [^)]{1,20}\)\s+)?(?:Normal|Warning)\s"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"  # journald / syslog
    r"|[IWEF]\d{4} \d\d:"  # klog
    r"|\d{4}-\d\d-\d\d[T ]\d\d:"  # ISO timestamps
    r"|time=|level=|[A-Z]{4}\[\d{4}\]"  # logfmt, crictl FATA[0000]
    r"|\[ERROR|\[preflight\]|ERROR:|Error:|error:|docker:|ctr:|Events:"
    r"|Type\s+Reason|State:|Reason:|Message:|Last State:|[$#]\s|PS [A-Z]:"
    r"|Failed to pull|Back-off pulling|Warning:|Normal:"
    r")"
)
# A record that reports a pull failure, even when its wording is not classified.
_PULL_FAILURE: Final = re.compile(
    r"ErrImagePull|ImagePullBackOff|Back-off pulling image|failed to pull|PullImage\b"
    r"|pulling image(?: failed)?:|InspectFailed|failed to inspect image|ErrImageNeverPull"
    r"|InvalidImageName|ImageInspectError|unable to pull|error pulling image|pull access denied"
    r"|SignatureValidationFailed|\bpull QPS exceeded|failed to resolve (?:image|reference)"
    r"|unexpected status",
    re.IGNORECASE,
)
_NORMAL_ROW: Final = re.compile(r"^\s*(?:[│|>]\s*)?(?:\S+\s+){0,3}Normal\s++(?!BackOff)")
# The image a record names, in the wordings of kubelet, containerd, CRI-O, Docker and kubeadm.
_IMAGE: Final = re.compile(
    r"(?:(?:Failed to pull|Back-off pulling|Failed to inspect|pulling|Pulling|Pull|Container)"
    r" image|PullImage|failed to pull and unpack image|failed to resolve reference"
    r"|cancel pulling image|image pull failed for|pull access denied for|Unable to find image"
    r"|\bimage=|\bimage:)"
    r"\s?\\*[\"']?(?P<image>[^\s\"'\\,;()\[\]{}]{1,512})",
    re.IGNORECASE,
)
_NODES: Final = (
    re.compile(r"\bkubelet,\s+(?P<node>[\w.-]{1,253})"),
    re.compile(r"\{kubelet (?P<node>[\w.-]{1,253})\}"),
    re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? (?P<node>[\w.-]{1,253}) \S+\["),
)
_ASSIGNED: Final = re.compile(r"Successfully assigned \S{1,300} to (?P<node>[\w.-]{1,253})")
_CONTAINER: Final = re.compile(
    r"spec\.containers\{(?P<a>[\w.-]{1,253})\}|for \\*\"(?P<b>[\w.-]{1,253})\\*\" with"
    r"|container \\*\"(?P<c>[\w.-]{1,253})\\*\""
)
_REPEAT: Final = re.compile(r"\(x(?P<n>\d{1,9}) over")
_RUNTIMES: Final = (
    (
        "cri-o",
        r"initializing source docker://|reading manifest \S+ in |short.name|unqualified-search"
        r"|Source image rejected|\bcrio\b|CRI-O",
    ),
    ("podman", r"\bpodman\b|Trying to pull \S+\.\.\."),
    (
        "docker",
        r"Error response from daemon|\bdockerd\b|\(HTTP code \d{3}\)|API error \(\d{3}\)"
        r"|\bdocker (?:pull|run)\b",
    ),
    (
        "containerd",
        r"failed to pull and unpack image|failed to resolve (?:reference|image)"
        r"|httpRead(?:er)?Seeker|\bcontainerd\b|\bctr:",
    ),
)
_RUNTIME_PATTERNS: Final = tuple((name, re.compile(p, re.IGNORECASE)) for name, p in _RUNTIMES)


@dataclass
class Finding:
    """One image's pull failure as the text tells it."""

    cause: Cause
    summary: str
    remedy: str
    fragment: str  # the words that decided (redacted)
    confirm: str  # the command that confirms it on the node
    image: str = ""
    node: str = ""
    runtime: str = ""
    container: str = ""
    count: int = 1  # how many times the text reports it
    variant: str = ""  # the mechanism within the cause, when the wording names one

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["cause"] = str(self.cause)
        return found


@dataclass
class Explanation:
    """Everything :func:`explain` found; ``pull_errors`` counts the findings."""

    findings: list[Finding] = field(default_factory=list)
    truncated: bool = False  # the input was longer than the bounds and was cut

    @property
    def unknown(self) -> int:
        return sum(1 for f in self.findings if f.cause is Cause.UNKNOWN)

    def as_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.as_dict() for f in self.findings],
            "pull_errors": len(self.findings),
            "explained": len(self.findings) - self.unknown,
            "unknown": self.unknown,
            "truncated": self.truncated,
        }


_SUMMARIES: Final = {
    Cause.INVALID_REFERENCE: "the image reference is not valid",
    Cause.MANIFEST_NOT_FOUND: "the tag or digest does not exist in the repository",
    Cause.REPOSITORY_NOT_FOUND: "the repository does not exist on the registry",
    Cause.UNAUTHORIZED: "the registry wants credentials that were not given or were refused",
    Cause.FORBIDDEN: "the pull was denied for this identity",
    Cause.RATE_LIMITED: "the registry is rate-limiting pulls",
    Cause.DNS_FAILURE: "the node cannot resolve a host name on the registry path",
    Cause.CONNECTION_REFUSED: "nothing accepts connections on the registry's address",
    Cause.TIMEOUT: "the registry path did not answer in time",
    Cause.TLS_ERROR: "the registry's TLS certificate is not trusted or not valid",
    Cause.HTTP_HTTPS_MISMATCH: "one side speaks plain HTTP, the other HTTPS",
    Cause.PLATFORM_MISMATCH: "the image has no variant for the node's platform",
    Cause.LAYER_CORRUPT: "a layer of the image cannot be unpacked or does not match its digest",
    Cause.BLOB_NOT_FOUND: "the manifest resolves but content it references is missing",
    Cause.DISK_FULL: "the node's image filesystem is full",
    Cause.RUNTIME_UNAVAILABLE: "the client cannot talk to the container runtime",
    Cause.CANCELLED: "the pull was cancelled before it finished",
    Cause.REGISTRY_ERROR: "the registry (or its proxy or token service) failed with an HTTP 5xx",
    Cause.CONNECTION_RESET: "an established transfer from the registry broke off",
    Cause.IMAGE_NEVER_PULL: "imagePullPolicy is Never and the image is not on the node",
    Cause.UNKNOWN: "a pull failed, but the text does not say why",
}
_UNKNOWN_REMEDY: Final = (
    "The text does not name the failure: run the pull test on the node (below) to see the "
    "runtime's error and what the registry path answers."
)


def summary(cause: Cause, variant: str = "") -> str:
    """The one-line meaning of ``cause`` (of its ``variant`` when the wording names one)."""
    return VARIANTS.get(variant) or _SUMMARIES[cause]


def remedy(cause: Cause, image: str, variant: str = "") -> str:
    """The remedy for ``cause`` from the diagnosis module's table, without probe evidence."""
    if cause is Cause.UNKNOWN:
        return _UNKNOWN_REMEDY
    host, hostport = where(image)
    return remedy_text(cause, host=host, hostport=hostport, registry=hostport, variant=variant)


def _records(text: str) -> Iterator[str]:
    """Cut ``text`` into records (see the module docstring)."""
    record: list[str] = []
    size = 0
    for line in text.splitlines()[:MAX_LINES]:
        if not line.strip() or _STARTS.match(line):
            if record:
                yield " ".join(record)
            record, size = ([line] if line.strip() else []), len(line)
            continue
        if size < MAX_MESSAGE:
            record.append(line)
            size += len(line)
    if record:
        yield " ".join(record)


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> str:
    for pattern in patterns:
        found = pattern.search(text)
        if found is not None:
            return found.group("node")
    return ""


def _image(record: str) -> str:
    for found in _IMAGE.finditer(record):
        name = found.group("image").rstrip(".:")
        if name and name not in {"from", "failed", "image"}:
            return redact_text(name)
    return ""


def _runtime(record: str) -> str:
    return next((name for name, pattern in _RUNTIME_PATTERNS if pattern.search(record)), "")


def _container(record: str) -> str:
    found = _CONTAINER.search(record)
    return (found.group("a") or found.group("b") or found.group("c") or "") if found else ""


def _confirm(image: str, node: str) -> str:
    if not image:
        return "pullcheck cluster pull IMAGE  (the image is not named in the text)"
    if node:
        return f"pullcheck pull {image}  (on node {node})"
    return f"pullcheck cluster pull {image}  (or `pullcheck pull {image}` on the node)"


def _better(new: Cause, old: Cause) -> bool:
    return stage(new) > stage(old)


def explain(text: str) -> Explanation:
    """The pull failures in ``text``, one finding per image (see the module docstring)."""
    result = Explanation(truncated=len(text) > MAX_INPUT)
    text = text[:MAX_INPUT]
    default_node = ""
    assigned = {m.group("node") for m in _ASSIGNED.finditer(text[:MAX_INPUT])}
    if len(assigned) == 1:
        default_node = assigned.pop()
    by_image: dict[str, Finding] = {}
    for record in _records(text):
        if _NORMAL_ROW.match(record):
            continue
        verdict = classify(record)
        if verdict.cause is Cause.UNKNOWN and not _PULL_FAILURE.search(record):
            continue
        image = _image(record)
        repeat = _REPEAT.search(record)
        count = int(repeat.group("n")) if repeat else 1
        key = image or f"<{verdict.cause}>"  # records naming no image: one finding per cause
        known = by_image.get(key)
        if known is not None:
            known.count = min(known.count + count, 10**9)
            if not _better(verdict.cause, known.cause):
                continue
        elif len(by_image) >= MAX_FINDINGS:
            result.truncated = True
            continue
        node = _first(_NODES, record) or default_node
        by_image[key] = Finding(
            cause=verdict.cause,
            summary=summary(verdict.cause, verdict.variant),
            remedy=remedy(verdict.cause, image, verdict.variant),
            fragment=redact_text(verdict.fragment),
            confirm=_confirm(image, node),
            image=image,
            node=node,
            runtime=_runtime(record) or (known.runtime if known else ""),
            container=_container(record) or (known.container if known else ""),
            count=known.count if known else count,
            variant=verdict.variant,
        )
    result.findings = _merge_unnamed(list(by_image.values()))
    return result


def _merge_unnamed(findings: list[Finding]) -> list[Finding]:
    """A record that names no image (``Error: ErrImagePull``) belongs to the named ones: drop it
    when it adds nothing (unknown, or a cause already found)."""
    named = [f for f in findings if f.image]
    unnamed = [f for f in findings if not f.image]
    if not named:
        return unnamed
    causes = {f.cause for f in named}
    extra = [f for f in unnamed if f.cause is not Cause.UNKNOWN and f.cause not in causes]
    if len(named) == 1 and named[0].cause is Cause.UNKNOWN and extra:
        # one image failing for a reason its own records do not give: the others give it
        only = named[0]
        best = max(extra, key=lambda f: stage(f.cause))
        best.image, best.confirm, best.count = only.image, only.confirm, only.count + best.count
        best.node = best.node or only.node
        return [best, *(f for f in extra if f is not best)]
    return named + extra
