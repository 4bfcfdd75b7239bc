"""Image references, parsed the way kubelet and containerd parse them.

The grammar is distribution/reference's (``name[:tag][@digest]``); :func:`parse` follows
``ParseNormalizedNamed``: familiar names get ``docker.io/`` and ``library/``, ``index.docker.io``
becomes ``docker.io``, and the first path component is a registry only when it is ``localhost``,
contains ``.`` or ``:``, or has upper-case letters.

Public API::

    parse(text) -> Reference                 # raises InvalidReference
    is_registry_only(text) -> bool           # "quay.io", "localhost:5000", "https://host"
    parse_registry(text) -> str              # "https://index.docker.io/v1/" -> "docker.io"

:class:`InvalidReference` carries two texts: ``reason``, a precise diagnosis in distribution's
vocabulary ("invalid tag format"), and ``upstream``, the exact error distribution itself returns
(what kubelet shows after ``couldn't parse image name "X": ``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent import dockerhub
from agent.errors import InvalidInput

__all__ = [
    "InvalidReference",
    "Reference",
    "is_registry_only",
    "parse",
    "parse_registry",
]

_DEFAULT_TAG = "latest"
_MAX_PATH_LENGTH = 255

# --- grammar (distribution/reference regexp.go), compiled once ---------------------------------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN_AND_PORT = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

# re.ASCII: Go's \w is ASCII-only. Always used with fullmatch (Go's $ never matches before "\n").
_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME})"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
_NAME_RE = re.compile(rf"(?:(?P<domain>{_DOMAIN_AND_PORT})/)?(?P<path>{_REMOTE_NAME})", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT, re.ASCII)
_REGISTRY_RE = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[0-9]+))?", re.ASCII)
_WHITESPACE_RE = re.compile(r"\s")

# go-digest: registered algorithms and the lower-case hex length each one requires.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_GO_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)

# distribution's and go-digest's error texts
_ERR_INVALID_FORMAT = "invalid reference format"
_ERR_NAME_EMPTY = "repository name must have at least one component"
_ERR_NAME_UPPERCASE = "repository name must be lowercase"
_ERR_NAME_TOO_LONG = f"repository name must not be more than {_MAX_PATH_LENGTH} characters"
_ERR_TAG = "invalid tag format"
_ERR_DIGEST = "invalid digest format"
_ERR_CHECKSUM_FORMAT = "invalid checksum digest format"
_ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"
_ERR_HEX_ID = "cannot specify 64-byte hexadecimal strings"


class InvalidReference(InvalidInput, ValueError):
    """An image reference (or registry) that kubelet/containerd would refuse to parse.

    ``reference`` is the text as given, ``reason`` a precise diagnosis ("invalid tag format",
    "repository name (Foo/bar) must be lowercase"), and ``upstream`` the exact text
    distribution/reference returns for the same input (kubelet reports it as
    ``couldn't parse image name "<reference>": <upstream>``).
    """

    def __init__(self, reference: str, reason: str, upstream: str | None = None) -> None:
        self.reference = reference
        self.reason = reason
        self.upstream = upstream if upstream is not None else reason
        super().__init__(f"invalid image reference {reference!r}: {reason}")

    @property
    def kubelet_message(self) -> str:
        """The message kubelet wraps in its ``InvalidImageName`` event."""
        return f'couldn\'t parse image name "{self.reference}": {self.upstream}'


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference.

    Equality ignores ``original``: ``parse("nginx") == parse("docker.io/library/nginx")``.
    """

    domain: str  # "docker.io", "plain.pullcheck.test:15000", "[::1]:5000"
    path: str  # "library/nginx"
    tag: str | None = None
    digest: str | None = None
    original: str = field(default="", compare=False)  # as given to parse()

    def __post_init__(self) -> None:
        if not self.original:
            object.__setattr__(self, "original", self.name + self._suffix(self.tag, self.digest))

    # --- names ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Fully qualified repository name without tag or digest: ``docker.io/library/nginx``."""
        return f"{self.domain}/{self.path}"

    @property
    def normalized(self) -> str:
        """containerd's ``ParseDockerRef`` form: ``:latest`` added, tag dropped when digested."""
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or _DEFAULT_TAG}"

    @property
    def kubelet_image(self) -> str:
        """kubelet's ``applyDefaultImageTag``: the original text, ``:latest`` appended if untagged.

        It is deliberately not expanded to ``docker.io/...``: this is what the CRI receives.
        """
        if self.tag is None and self.digest is None:
            return f"{self.original}:{_DEFAULT_TAG}"
        return self.original

    def __str__(self) -> str:
        return self.normalized

    # --- registry ------------------------------------------------------------------------

    @property
    def registry_host(self) -> str:
        """The host containerd looks up in ``certs.d/<host>/hosts.toml`` (the domain as written)."""
        return self.domain

    @property
    def hostname(self) -> str:
        """The domain without port; IPv6 literals without brackets."""
        return _split_domain(self.domain)[0]

    @property
    def port(self) -> int | None:
        """The explicit port of the domain, ``None`` when absent."""
        return _split_domain(self.domain)[1]

    @property
    def object(self) -> str:
        """What follows ``/manifests/`` in the registry API: digest, else tag, else ``latest``."""
        return self.digest or self.tag or _DEFAULT_TAG

    @staticmethod
    def _suffix(tag: str | None, digest: str | None) -> str:
        return (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# --- parsing --------------------------------------------------------------------------------


def parse(text: str) -> Reference:
    """Parse an image reference like kubelet (``ParseNormalizedNamed``); raise InvalidReference."""
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            text,
            _ERR_HEX_ID,
            f"invalid repository name ({text}), {_ERR_HEX_ID}",
        )
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        upstream = f"{_ERR_INVALID_FORMAT}: repository name ({remote}) must be lowercase"
        repository = remote.partition("@")[0]
        if repository.lower() == repository:  # "name@SHA256:...": the digest is at fault
            raise InvalidReference(text, f"{_ERR_DIGEST}: algorithm must be lower-case", upstream)
        raise InvalidReference(text, f"repository name ({repository}) must be lowercase", upstream)

    candidate = f"{domain}/{remainder}"
    match = _REFERENCE_RE.fullmatch(candidate)
    if match is None:
        if _go_lower(candidate) != candidate and _REFERENCE_RE.fullmatch(_go_lower(candidate)):
            raise InvalidReference(text, _ERR_NAME_UPPERCASE)
        raise InvalidReference(text, _diagnose(text), _ERR_INVALID_FORMAT)

    name_match = _NAME_RE.fullmatch(match["name"])
    if name_match is None or not name_match["domain"]:  # pragma: no cover - grammar guarantees
        raise InvalidReference(text, _ERR_INVALID_FORMAT)
    path = name_match["path"]
    if len(path) > _MAX_PATH_LENGTH:
        raise InvalidReference(text, _ERR_NAME_TOO_LONG)

    digest = match["digest"]
    if digest is not None:
        _check_digest(text, digest)
    return Reference(name_match["domain"], path, match["tag"], digest, text)


def is_registry_only(text: str) -> bool:
    """Whether ``text`` names a registry rather than an image (for ``pullcheck probe``).

    True for ``https://host[...]`` (any scheme), and for a bare ``host[:port]`` (a trailing
    ``/`` allowed) whose host is ``localhost``, an IPv6 literal or contains a dot. ``redis:7`` or
    ``myregistry:5000`` stay images, exactly as distribution parses them; pass a scheme to force.
    """
    if "://" in text:
        return True
    bare = text.rstrip("/")
    if not bare or "/" in bare or "@" in bare:
        return False
    match = _REGISTRY_RE.fullmatch(bare)
    if match is None:
        return False
    host = match["host"]
    return host.startswith("[") or host.lower() == "localhost" or "." in host


def parse_registry(text: str) -> str:
    """Normalise a registry given as ``host[:port]`` or ``http(s)://host[:port][/v1/|/v2/]``.

    Returns the host as containerd names it (``index.docker.io``/``docker.io`` -> ``docker.io``).
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in text:
        # user:secret@host: never echo what may be a password
        prefix = f"{scheme}{sep}" if "@" not in scheme else ""
        shown = f"{prefix}<redacted>@{text.rsplit('@', 1)[1]}"
        raise InvalidReference(shown, "a registry address must not contain credentials")
    if sep and scheme.lower() not in ("http", "https"):
        raise InvalidReference(text, f"unsupported scheme {scheme!r} (use http or https)")
    host, slash, path = rest.rstrip("/").partition("/")
    if not host:
        raise InvalidReference(text, "empty registry host")
    if slash and path not in ("v1", "v2"):
        raise InvalidReference(text, f"a registry is host[:port] without a path (got /{path})")
    if not _DOMAIN_RE.fullmatch(host):
        raise InvalidReference(text, f"invalid registry host ({host})")
    return dockerhub.canonical(host)


# --- helpers --------------------------------------------------------------------------------


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution's ``splitDockerDomain``: (domain, remainder with tag/digest)."""
    first, slash, rest = name.partition("/")
    if not slash:
        return dockerhub.DOMAIN, dockerhub.OFFICIAL_PREFIX + name
    if first == "localhost":
        domain, remainder = first, rest
    elif first == dockerhub.LEGACY_DOMAIN:
        domain, remainder = dockerhub.DOMAIN, rest
    elif "." in first or ":" in first or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = dockerhub.DOMAIN, name
    if dockerhub.is_hub(domain) and "/" not in remainder:
        remainder = dockerhub.OFFICIAL_PREFIX + remainder
    return domain, remainder


def _go_lower(text: str) -> str:
    """Go's rune-wise ``strings.ToLower`` (Python maps U+0130 to two code points)."""
    return text.replace("\u0130", "i").lower()


def _check_digest(text: str, digest: str) -> None:
    """go-digest's ``Parse``: the algorithm must be registered and the hex the right length."""
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        if _GO_DIGEST_RE.fullmatch(digest):
            raise InvalidReference(
                text, f"{_ERR_DIGEST_UNSUPPORTED} ({algorithm})", _ERR_DIGEST_UNSUPPORTED
            )
        raise InvalidReference(text, _ERR_DIGEST, _ERR_CHECKSUM_FORMAT)
    if len(encoded) != length or encoded.lower() != encoded:
        raise InvalidReference(
            text,
            f"{_ERR_DIGEST}: {algorithm} needs {length} lower-case hex digits",
            _ERR_CHECKSUM_FORMAT,
        )


def _diagnose(text: str) -> str:
    """Name the part of ``text`` that made the grammar fail (only called on failure)."""
    if not text:
        return "empty image reference"
    if _WHITESPACE_RE.search(text):
        return "image reference must not contain whitespace"
    if "://" in text:
        return "image reference must not include a URL scheme"
    name_and_tag, at, digest = text.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        return _ERR_DIGEST
    if "/" not in name_and_tag and is_registry_only(name_and_tag):
        return f"{_ERR_NAME_EMPTY} ({name_and_tag} is a registry, not an image)"
    name = name_and_tag
    colon = name_and_tag.rfind(":")
    if colon > name_and_tag.rfind("/"):
        name, tag = name_and_tag[:colon], name_and_tag[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            return _ERR_TAG
    domain, remainder = _split_docker_domain(name)
    if not dockerhub.is_hub(domain) and not _DOMAIN_RE.fullmatch(domain):
        return f"invalid domain ({domain})"
    if remainder in ("", dockerhub.OFFICIAL_PREFIX):
        return _ERR_NAME_EMPTY
    for component in remainder.split("/"):
        if not component:
            return "repository name must not contain empty path components"
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return f"invalid repository name component ({component})"
    return _ERR_INVALID_FORMAT


def _split_domain(domain: str) -> tuple[str, int | None]:
    match = _REGISTRY_RE.fullmatch(domain)
    if match is None:  # pragma: no cover - parse() only builds valid domains
        return domain, None
    host = match["host"]
    if host.startswith("["):
        host = host[1:-1]
    port = match["port"]
    return host, int(port) if port is not None else None
