"""The text classifier: one pull-error message in, its cause, the deciding fragment and a summary.

It follows the structure the runtimes give their messages rather than memorised strings:

* **quoting** — kubectl, klog and journald print the error quoted (``err="…"``, ``\\"`` and
  ``\\\\\\"``); the quoting is undone and line wraps, k9s borders and runs of spaces collapse;
* **names never decide** — quoted tokens without spaces (image references, URLs, paths) are
  blanked wherever they recur, and URLs keep only their kind (``<url/blobs>``), so an image
  called ``denied/x509`` reads as nothing;
* **wrappers carry no cause** — ``rpc error: code = X desc =``, ``Error response from daemon:``,
  ``(HTTP code 500) server error -``, ``API error (500):``, ``failed to pull and unpack image``,
  ``failed to authorize: failed to fetch … token:`` … are dropped, so the innermost failure
  decides (a 401 inside a Docker API 500 is ``unauthorized``);
* **several attempts** — kubelet's one-error-per-credential ``[e1, e2]``, podman's ``Trying to
  pull …`` per search registry, CRI-O's ``(Mirrors also failed: […] […])``, dockerd's
  ``Attempting next endpoint`` — are split, each classified, and the attempt that got furthest
  decides (resolved < connected < TLS < the registry answered < about the content < transfer);
* **rules in stage order** within one attempt: the runtime endpoint and kubelet's own reasons,
  node-side failures, DNS context (anything inside ``lookup host on resolver:``), the TLS layer,
  the registry's HTTP status (explicit codes before words), transfer breaks, socket errors,
  cancellation; a gRPC status name decides only when no wording does.

Pure standard library (the offline ``explain`` command imports it); every pattern is anchored
on a literal with bounded repeats, and the input is capped, so hostile text costs linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from agent.causes import Cause

__all__ = ["MAX_MESSAGE", "Classification", "classify", "normalize", "stage"]

#: characters of one message that are classified (the rest is cut: errors are short)
MAX_MESSAGE: Final = 16_384
_FRAGMENT: Final = 200  # characters of deciding fragment shown


@dataclass(frozen=True)
class Classification:
    """What the text alone says: the cause, the fragment that decided it and, where the wording
    names a specific mechanism, its ``variant`` (see :data:`VARIANTS`)."""

    cause: Cause
    fragment: str = ""
    variant: str = ""
    grpc_code: str = ""


#: mechanisms inside one cause that change the summary and remedy
VARIANTS: Final = {
    "short_name": "the runtime cannot resolve a short (unqualified) image name",
    "kubelet_qps": "kubelet's own pull rate limit (registryPullQPS/registryBurst) was exceeded",
    "signature_policy": "the node's image signature policy rejected the image",
    "hub_ambiguous": (
        "the registry denied the pull: the repository does not exist, or it is private and no "
        "working credentials were sent (Docker Hub answers both the same way)"
    ),
    "hub_library": (
        "the registry denied a name in Docker Hub's official (library/) namespace, whose images "
        "are all public: the repository does not exist"
    ),
    "reason_only": "only kubelet's reason is shown, not the runtime's error",
    "runtime_lost": (
        "the container runtime went away in the middle of the call (the CRI connection "
        "dropped: the runtime stopped, crashed or restarted)"
    ),
}

_ESCAPES: Final = re.compile(r"\\+\"|\\+n|\\+t")
_BORDERS: Final = re.compile(r"[│┃║|]\s*$|^\s*[│┃║|]", re.MULTILINE)
_SPACE: Final = re.compile(r"\s+")
_QUOTED_TOKEN: Final = re.compile(r"[\"'](?P<t>[^\s\"']{3,512}+)[\"']")
_URL: Final = re.compile(r"\b(?:https?|docker)://[^\s\"'<>]{1,2048}+")
_URL_KIND: Final = re.compile(r"/(blobs|manifests|token|_ping)\b")
_GRPC: Final = re.compile(r"code = (\w{1,20})")

# Wrappers: text that only says where the failure surfaced.
_WRAPPERS: Final = re.compile(
    r"rpc error: code = \w{1,20} desc = ?"
    r"|\(HTTP code \d{3}\) server error -"
    r"|API error \(\d{3}\):"
    r"|Error response from daemon:"
    r"|failed to authorize:|failed to fetch (?:oauth|anonymous) token:"
    r"|error from registry:|CannotPullContainerError:",
    re.IGNORECASE,
)

# Separators between attempts (each attempt is classified on its own).
_ATTEMPTS: Final = re.compile(
    r"\[(?=rpc error|failed to|Error)|, (?=rpc error: code)|\(Mirrors also failed:|\] \["
    r"|(?-i:Trying to pull )|Attempting next endpoint|trying next host|Download failed, retrying:",
    re.IGNORECASE,
)

# The registry's HTTP status as the runtimes print it ("403 Forbidden", "status: 502",
# "Status 429 trying …", "HTTP 403 response body", "unexpected status from GET request to …: 401",
# containerd 1.6's "failed with status code [manifests 1.0]: 503 <any reason phrase>").
_STATUS: Final = re.compile(
    r"\b(?P<a>[1-5]\d\d) (?:unauthorized|forbidden|not found|too many requests"
    r"|internal server error|bad gateway|service unavailable|gateway time-?out|bad request"
    r"|request timeout|conflict|method not allowed|not implemented)\b"
    r"|(?:(?-i:HTTP|Status)|status code|unexpected status)\b[^\d\n]{0,80}?"
    r"\b(?P<b>[1-5]\d\d)\b(?![.:\d])"
    r"|\bstatus code \[[^\]\n]{1,300}\]: (?P<c>[1-5]\d\d)\b",
    re.IGNORECASE,
)

_R = re.IGNORECASE

# A CRI connection that dropped in the middle of a call, as gRPC reports it: Go's client
# (kubelet, crictl) and grpcio (pullcheck). Read only as the runtime's own error (status
# UNAVAILABLE, or a pasted text without a registry failure around it), never in a registry's.
_RUNTIME_LOST: Final = re.compile(
    r"error reading from server|transport is closing|\bsocket closed\b|recvmsg:"
    r"|goaway received|connection reset by peer",
    _R,
)
_RUNTIME_LOST_GO: Final = r"error reading from server|transport is closing"


def _rule(cause: Cause, pattern: str, variant: str = "") -> tuple[Cause, re.Pattern[str], str]:
    return cause, re.compile(pattern, _R), variant


# (cause, pattern, variant) in stage order: the first match in an attempt wins.
_RULES: Final = (
    # the client cannot talk to the runtime (CRI socket, Docker daemon endpoint)
    _rule(Cause.RUNTIME_UNAVAILABLE, _RUNTIME_LOST_GO, "runtime_lost"),
    _rule(
        Cause.RUNTIME_UNAVAILABLE,
        r"unknown service runtime\.v1|\bdial unix\b|error during connect:"
        r"|//\./pipe/docker_engine|cannot connect to the docker daemon"
        r"|unable to determine (?:image|runtime) API version|connection error: desc = \"?transport"
        r"|failed to connect to all addresses|code = unimplemented",
    ),
    # kubelet's own reasons
    _rule(Cause.IMAGE_NEVER_PULL, r"ErrImageNeverPull|is not present with pull policy of Never"),
    _rule(
        Cause.INVALID_REFERENCE,
        r"did not resolve to an alias|short name mode is enforcing"
        r"|no unqualified-search registries are defined|pull an unqualified image",
        "short_name",
    ),
    _rule(
        Cause.INVALID_REFERENCE,
        r"invalid reference format|must be lowercase|failed to parse (?:image )?reference"
        r"|couldn't parse image (?:name|reference)|failed to parse image\b"
        r"|failed to apply default image tag",
    ),
    _rule(Cause.INVALID_REFERENCE, r"\bInvalidImageName\b", "reason_only"),
    _rule(Cause.RATE_LIMITED, r"pull QPS exceeded", "kubelet_qps"),
    _rule(
        Cause.FORBIDDEN,
        r"source image rejected|rejected by policy|SignatureValidationFailed"
        r"|signature was required|invalid policy in|openpgp: invalid signature"
        r"|signature verification failed|policy requirements? (?:not|were not) (?:met|satisfied)",
        "signature_policy",
    ),
    # node-side, after the transfer
    _rule(
        Cause.DISK_FULL,
        r"no space left on device|disk quota exceeded|write \S{1,4096}: input/output error",
    ),
    _rule(
        Cause.PLATFORM_MISMATCH,
        r"no match for platform in manifest"
        r"|no matching manifest for [^\n]{1,80}? in the manifest list"
        r"|no image found in (?:manifest list|image index) for architecture"
        r"|was found but does not match the specified platform",
    ),
    _rule(
        Cause.LAYER_CORRUPT,
        r"invalid tar header|failed to extract layer|apply layer error|failed to register layer"
        r"|ApplyLayer|failed to unpack image|error processing tar file|gzip: invalid header"
        r"|zstd: |unexpected commit digest|digest mismatch|invalid checksum digest format"
        r"|failed size validation",
    ),
    # name resolution: anything inside "lookup host [on resolver]: …"
    _rule(
        Cause.DNS_FAILURE,
        r"\blookup [^\s:]{1,255}(?: on \S{1,64})?: |temporary failure in name resolution"
        r"|name or service not known|no such host|server misbehaving|dial tcp: i/o timeout"
        r"|no answer from dns server|resolving host ",
    ),
    # TLS layer (a plain-HTTP answer first; a broken record mid-transfer is a reset)
    _rule(
        Cause.HTTP_HTTPS_MISMATCH,
        r"server gave http response to https client|first record does not look like a tls"
        r"|wrong version number",
    ),
    _rule(Cause.CONNECTION_RESET, r"bad record MAC"),
    _rule(
        Cause.TLS_ERROR,
        r"x509:|tls: failed to verify certificate|certificate signed by unknown"
        r"|tls: bad certificate|tls: handshake failure|certificate has expired"
        r"|certificate is not valid|certificate verify failed|remote error: tls: ",
    ),
    # the registry answered: an explicit status decides here (_STATUS_AT), then its words
    _rule(Cause.RATE_LIMITED, r"toomanyrequests|too many requests|pull rate limit|rate.?limited"),
    _rule(
        Cause.REGISTRY_ERROR,
        r"internal server error|bad gateway|service unavailable|gateway time-?out",
    ),
    _rule(
        Cause.FORBIDDEN,
        r"not authorized to perform|\bpermission \S{1,128} denied|DENIED: permission",
    ),
    _rule(
        Cause.UNAUTHORIZED,
        r"pull access denied|requested access to the resource is denied|insufficient_scope",
        "hub_ambiguous",
    ),
    _rule(Cause.FORBIDDEN, r"\bforbidden\b|\bdenied: |access denied"),
    _rule(
        Cause.UNAUTHORIZED,
        r"\bunauthorized\b|authentication required|no basic auth credentials"
        r"|authorization failed|incorrect username or password",
    ),
    _rule(
        Cause.BLOB_NOT_FOUND,
        r"<url/blobs> not found|blob unknown|blob_unknown|unknown blob"
        r"|content at \S{1,64} not found"
        r"|could not fetch content descriptor|reading blob \S{1,128}: fetching blob: not found",
    ),
    _rule(
        Cause.REPOSITORY_NOT_FOUND,
        r"name unknown|name_unknown|repository name not known|repo not found"
        r"|repository \S{1,256} not found|repository does not exist(?! or may require)",
    ),
    _rule(
        Cause.MANIFEST_NOT_FOUND,
        r"manifest unknown|manifest_unknown|manifest for \S{1,256} not found"
        r"|\btag \S{1,128} not found|image not known|\bimage \S{1,256} not found"
        r"|: not found\W{0,3}$|code = notfound|reading manifest \S{1,128} in \S{1,256} not found",
    ),
    # an established transfer broke
    _rule(
        Cause.CONNECTION_RESET,
        r"connection reset|unexpected EOF|: EOF\b|^EOF$|broken pipe|stream reset|RST_STREAM"
        r"|Reset\(StreamId|http2: server sent GOAWAY|stream error: stream ID \d{1,10}",
    ),
    # the socket
    _rule(
        Cause.CONNECTION_REFUSED,
        r"connection refused|no route to host|network is unreachable|actively refused",
    ),
    _rule(
        Cause.TIMEOUT,
        r"i/o timeout|connection timed out|tls handshake timeout|deadline exceeded"
        r"|client\.timeout|timeout awaiting response headers|because of no progress"
        r"|did not properly respond after a period of time|code = (?:4|DeadlineExceeded)\b",
    ),
    _rule(
        Cause.CANCELLED,
        r"context canceled|code = canceled|request canceled|operation was canceled",
    ),
)

# the registry's status is read right before its words
_STATUS_AT: Final = next(
    i for i, (cause, _, variant) in enumerate(_RULES) if cause is Cause.RATE_LIMITED and not variant
)

# How far an attempt got: the stage its cause is met at (higher = further).
_STAGE: Final = {
    Cause.UNKNOWN: -2,  # any known cause beats it
    Cause.CANCELLED: -1,
    Cause.RUNTIME_UNAVAILABLE: -1,
    Cause.DNS_FAILURE: 0,
    Cause.CONNECTION_REFUSED: 1,
    Cause.TIMEOUT: 1,
    Cause.TLS_ERROR: 2,
    Cause.HTTP_HTTPS_MISMATCH: 2,
    Cause.UNAUTHORIZED: 3,
    Cause.RATE_LIMITED: 3,
    Cause.REGISTRY_ERROR: 3,
    Cause.FORBIDDEN: 4,
    Cause.MANIFEST_NOT_FOUND: 5,
    Cause.REPOSITORY_NOT_FOUND: 6,  # more specific than a manifest not found
    Cause.BLOB_NOT_FOUND: 7,
    Cause.CONNECTION_RESET: 7,
}
_NODE_SIDE: Final = 8  # every other cause: after the transfer, or decided by the node itself


def stage(cause: Cause) -> int:
    """How far an attempt that failed with ``cause`` got (higher = further): the furthest of
    several attempts decides (kubelet's one error per credential, several findings of a paste)."""
    return _STAGE.get(cause, _NODE_SIDE)


_CODE_CAUSE: Final = {
    "NOTFOUND": Cause.MANIFEST_NOT_FOUND,
    "NOT_FOUND": Cause.MANIFEST_NOT_FOUND,
    "5": Cause.MANIFEST_NOT_FOUND,
    "DEADLINEEXCEEDED": Cause.TIMEOUT,
    "DEADLINE_EXCEEDED": Cause.TIMEOUT,
    "4": Cause.TIMEOUT,
    "CANCELED": Cause.CANCELLED,
    "CANCELLED": Cause.CANCELLED,
    "1": Cause.CANCELLED,
    "UNAVAILABLE": Cause.RUNTIME_UNAVAILABLE,
    "UNIMPLEMENTED": Cause.RUNTIME_UNAVAILABLE,
}


def _status_cause(status: int) -> Cause:
    if status == 401:
        return Cause.UNAUTHORIZED
    if status == 403:
        return Cause.FORBIDDEN
    if status == 429:
        return Cause.RATE_LIMITED
    if status >= 500:
        return Cause.REGISTRY_ERROR
    return Cause.UNKNOWN


def normalize(text: str) -> str:
    """Undo kubectl/journald quoting and line wrapping: one line, quotes plain."""
    text = _ESCAPES.sub(lambda m: " " if m.group(0)[-1] in "nt" else '"', text[:MAX_MESSAGE])
    text = _BORDERS.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


_HUB_PREFIX: Final = re.compile(r"^(?:(?:index|registry-1)\.)?docker\.io/")


def _hub_library(name: str) -> bool:
    """Whether ``name`` is in Docker Hub's ``library/`` namespace (official images: all public)."""
    name = _HUB_PREFIX.sub("", name.split("@", 1)[0])
    first = name.split("/", 1)[0]
    if name.startswith("library/"):
        return True
    return "/" not in name and "." not in first and first != "localhost" and bool(first)


def _blank_names(text: str) -> str:
    """Blank quoted names (wherever they recur) and reduce URLs to their kind. A name in Docker
    Hub's official namespace keeps that fact (``<library-name>``): access to it is never denied
    for privacy, so a denial means the repository does not exist."""
    names = {m.group("t") for m in _QUOTED_TOKEN.finditer(text)}
    for name in sorted(names, key=len, reverse=True)[:64]:
        text = text.replace(name, "<library-name>" if _hub_library(name) else "<name>")

    def url(match: re.Match[str]) -> str:
        kind = _URL_KIND.search(match.group(0))
        return f"<url/{kind.group(1)}>" if kind else "<url>"

    return _URL.sub(url, text)


# the image a Hub-style denial names: "pull access denied for X," / "X: requested access …"
_DENIED_NAME: Final = re.compile(
    r"pull access denied for (?P<a>[^\s,]{1,256}),"
    r"|(?:^|\s)(?P<b>[^\s\[\]/]{1,256}/[^\s\[\]]{1,256}?)(?:\.\.\.|:) (?:denied: )?"
    r"requested access to the"
)


def _denied_library(segment: str) -> bool:
    named = _DENIED_NAME.search(segment)
    name = (named.group("a") or named.group("b")) if named else ""
    return name == "<library-name>" or (name not in {"", "<name>"} and _hub_library(name))


def _status(segment: str) -> tuple[Cause, re.Match[str]] | None:
    """The innermost explicit HTTP status in ``segment`` (the last one printed); None for none
    and for 404, whose wording says what is missing (manifest, blob, repository)."""
    found = None
    for found in _STATUS.finditer(segment):  # noqa: B007 - the last one is wanted
        continue
    if found is None:
        return None
    code = int(found.group("a") or found.group("b") or found.group("c"))
    return None if code == 404 else (_status_cause(code), found)


def _classify_attempt(segment: str) -> tuple[Cause, int, int, str]:
    """(cause, match start, match end, variant) for one attempt, UNKNOWN when nothing matches."""
    for index, (cause, pattern, variant) in enumerate(_RULES):
        if index == _STATUS_AT:
            status = _status(segment)
            if status is not None:
                return status[0], status[1].start(), status[1].end(), ""
        found = pattern.search(segment)
        if found is None:
            continue
        if variant == "hub_ambiguous" and _denied_library(segment):
            return Cause.REPOSITORY_NOT_FOUND, found.start(), found.end(), "hub_library"
        return cause, found.start(), found.end(), variant
    return Cause.UNKNOWN, 0, 0, ""


def _fragment(segment: str, start: int, end: int) -> str:
    """The words around the deciding match, starting at a clause boundary."""
    lo = max(0, start - 120)
    clause = segment.rfind(": ", lo, max(lo, start - 40))
    if clause >= 0 and start - clause < 120:
        lo = clause + 2
    hi = min(len(segment), max(end + 40, lo + 60), lo + _FRAGMENT)
    cut = segment[lo:hi].strip(" :,;")
    return cut if len(cut) <= _FRAGMENT else cut[: _FRAGMENT - 1] + "…"


def _original(plain: str, segment: str, start: int, end: int) -> str:
    """The deciding fragment in the text's own words (names and URLs as written) when the
    matched words occur there, else in the classified form."""
    words = segment[start:end]
    if ">" in words:  # a blanked name or URL: the words after it
        words = words.rsplit(">", 1)[1].strip(" :")
    at = plain.rfind(words) if words else -1
    if at < 0:
        return _fragment(segment, start, end)
    return _fragment(plain, at, at + len(words))


def classify(text: str, grpc_code: str | None = None) -> Classification:
    """Classify one pull-error message (the runtime's text, with any wrappers around it).

    ``grpc_code`` is the CRI status name when known (a live pull test); otherwise a ``code = X``
    in the text serves, and either decides only when no wording does.
    """
    plain = normalize(text)
    code = (grpc_code or "").upper().replace("_", "")
    if code in {"UNAVAILABLE", "UNIMPLEMENTED"} and "failed to pull" not in plain:
        lost = code == "UNAVAILABLE" and _RUNTIME_LOST.search(plain) is not None
        variant = "runtime_lost" if lost else ""
        return Classification(Cause.RUNTIME_UNAVAILABLE, _fragment(plain, 0, 80), variant, code)
    if not code:
        named = _GRPC.search(plain)
        code = named.group(1).upper() if named else ""
    best: tuple[int, Cause, str, str] | None = None
    blanked = _blank_names(plain)
    for attempt in _ATTEMPTS.split(blanked):
        segment = _SPACE.sub(" ", _WRAPPERS.sub(" ", attempt)).strip(" [](),;")
        if not segment:
            continue
        cause, start, end, variant = _classify_attempt(segment)
        if cause is Cause.UNKNOWN:
            continue
        reached = stage(cause)
        if best is None or reached > best[0]:
            best = (reached, cause, _original(plain, segment, start, end), variant)
    if best is not None:
        return Classification(best[1], best[2], best[3], code)
    by_code = _CODE_CAUSE.get(code)
    if by_code is Cause.MANIFEST_NOT_FOUND and "<url/blobs>" in blanked:
        by_code = Cause.BLOB_NOT_FOUND
    if by_code is Cause.RUNTIME_UNAVAILABLE and "failed to pull" in plain:
        by_code = None
    return Classification(by_code or Cause.UNKNOWN, _fragment(plain, 0, 80), "", code)
