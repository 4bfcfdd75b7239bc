"""Registry credentials: crictl's ``--creds``/``--auth``, docker config files, kubelet's keyring.

Secrets live only in :class:`Credential` objects, whose ``repr`` and ``str`` never show them.
:class:`CredentialError` messages name the file, the registry key and the field at fault, never
a secret (not even part of one), and are raised without chaining so no traceback shows the input.

Public API::

    from_creds(value) -> Credential                  # crictl --creds USER[:PASS]
    from_auth(value) -> Credential                   # crictl --auth base64(USER[:PASS])
    from_cli(creds, auth) -> Credential | None       # both given -> CredentialError
    load_docker_config(path) -> Keyring              # .dockerconfigjson, .dockercfg, Secret JSON
    loads_docker_config(text, origin=...) -> Keyring
    Keyring().add(key, cred) / .lookup(image)        # kubelet's BasicDockerKeyring rules
    Keyring.explain(image) -> KeyringMatch           # which keys matched, and why the others not
    Keyring.merge(other) -> Keyring / .extend(other) # several configs, like several pull secrets
    key_matches(key, image) -> bool                  # kubelet's URLsMatchStr
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from agent import dockerhub, hostport
from agent.errors import InvalidInput
from agent.reference import InvalidReference, Reference, parse

__all__ = [
    "Credential",
    "CredentialError",
    "KeyCheck",
    "Keyring",
    "KeyringMatch",
    "from_auth",
    "from_cli",
    "from_creds",
    "key_matches",
    "load_docker_config",
    "loads_docker_config",
]

_SECRET_TYPES = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}
# top-level keys of a docker CLI config.json other than "auths" (none holds inline credentials)
_DOCKER_CLI_KEYS = frozenset(
    {"credsStore", "credHelpers", "HttpHeaders", "psFormat", "imagesFormat", "detachKeys",
     "proxies", "currentContext", "plugins", "experimental", "stackOrchestrator", "aliases"}
)  # fmt: skip
_AUTH_FORMAT = "must be base64(username:password)"


class CredentialError(InvalidInput, ValueError):
    """Unusable credential input. The message never contains a secret."""


@dataclass(frozen=True)
class Credential:
    """One set of registry credentials, as sent in a CRI ``AuthConfig``."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    # where it came from, safe to print: "--creds", "--auth", "docker-config:/path[quay.io]"
    source: str = ""

    def __repr__(self) -> str:
        return f"Credential(username={self.username!r}, source={self.source!r}, secret=<redacted>)"

    __str__ = __repr__


# --- crictl flags ---------------------------------------------------------------------------


def from_creds(value: str) -> Credential:
    """crictl ``--creds USER[:PASS]``: split at the first ``:``; a missing ``:PASS`` is empty."""
    if not value:
        raise CredentialError("--creds: credentials can't be empty")
    username, _, password = value.partition(":")
    if not username:
        raise CredentialError("--creds: username can't be empty (expected USER[:PASS])")
    return Credential(username=username, password=password, source="--creds")


def from_auth(value: str) -> Credential:
    """crictl ``--auth``: base64 (padded or not) of ``USER[:PASS]``."""
    if not value:
        raise CredentialError("--auth: value can't be empty")
    decoded = _decode_base64(value)
    if decoded is None:
        raise CredentialError(f"--auth: not valid base64; the value {_AUTH_FORMAT}")
    text = _utf8(decoded)
    if text is None:
        raise CredentialError("--auth: the decoded value is not UTF-8 text")
    username, _, password = text.partition(":")
    if not username:
        raise CredentialError(f"--auth: the decoded username is empty; the value {_AUTH_FORMAT}")
    return Credential(username=username, password=password, source="--auth")


def from_cli(creds: str | None, auth: str | None) -> Credential | None:
    """The credential crictl would send for ``--creds``/``--auth`` (``None`` = not given)."""
    if creds is not None and auth is not None:
        raise CredentialError("both --creds and --auth are specified")
    if creds is not None:
        return from_creds(creds)
    if auth is not None:
        return from_auth(auth)
    return None


# --- kubelet's keyring ------------------------------------------------------------------------


class Keyring:
    """kubelet's ``BasicDockerKeyring``: credentials indexed by registry key.

    Keys are normalised like kubelet (scheme and a leading ``/v1/``/``/v2/`` dropped) and kept in
    reverse lexical order, so ``quay.io/org`` is tried before ``quay.io``.
    """

    def __init__(self) -> None:
        self._creds: dict[str, list[Credential]] = {}
        self._index: list[str] = []
        self._ignored: list[str] = []
        self._sources: list[str] = []

    def add_source(self, name: str) -> None:
        """Record where entries were read from (``docker-config:/path``); never a secret."""
        if name not in self._sources:
            self._sources.append(name)

    def add(self, key: str, cred: Credential) -> str | None:
        """Index ``cred`` under ``key``; the normalised key, or ``None`` if kubelet ignores it."""
        normalized = _normalize_key(key)
        if normalized is None:
            self._ignored.append(key)
            return None
        if normalized not in self._creds:
            self._creds[normalized] = []
            self._index = sorted(self._creds, reverse=True)
        self._creds[normalized].append(cred)
        return normalized

    def extend(self, other: Keyring) -> None:
        """Add every entry of ``other`` (kubelet puts all pull secrets in one keyring)."""
        for key, creds in other._creds.items():
            self._creds.setdefault(key, []).extend(creds)
        self._index = sorted(self._creds, reverse=True)
        self._ignored.extend(other._ignored)
        for name in other._sources:
            self.add_source(name)

    def merge(self, other: Keyring) -> Keyring:
        """A new keyring holding this one's entries and then ``other``'s."""
        merged = Keyring()
        merged.extend(self)
        merged.extend(other)
        return merged

    def lookup(self, image: str | Reference) -> list[Credential]:
        """Credentials kubelet would try for ``image``, most specific key first, each once.

        ``image`` is the normalised repository name without tag (``docker.io/library/nginx``); a
        :class:`~agent.reference.Reference` is reduced to its ``name``. When no key matches and
        the image is on Docker Hub, the ``index.docker.io`` entries are used.
        """
        name = image if isinstance(image, str) else image.name
        keys, _ = self._matching_keys(name, self._compared(name))
        return _unique(cred for key in keys for cred in self._creds[key])

    def explain(self, image: str | Reference) -> KeyringMatch:
        """Why :meth:`lookup` finds what it finds for ``image``: per key, matched or why not.

        Pure and bounded by the number of keys; names keys and sources only, never a secret.
        """
        name = image if isinstance(image, str) else image.name
        registry = image.domain if isinstance(image, Reference) else _registry_of(name)
        compared = self._compared(name)
        keys, via_fallback = self._matching_keys(name, compared)
        hub = _is_default_registry_match(name)
        by_key = dict(compared)
        matched = [_matched(key, by_key[key], name, via_fallback) for key in keys]
        used = set(keys)
        misses = [
            _missed(key, c, hub=hub, found=bool(keys)) for key, c in compared if key not in used
        ]
        return KeyringMatch(
            image=name,
            registry=registry,
            sources=tuple(self._sources),
            keys=tuple(self._index),
            checks=(
                *matched,
                *(c for c in misses if c.near),
                *(c for c in misses if not c.near),
            ),
            ignored=tuple(self._ignored),
        )

    def _compared(self, name: str) -> list[tuple[str, _Comparison | None]]:
        """Each key beside ``name`` as kubelet's ``URLsMatch`` sees them (``name`` parsed once)."""
        image = _url(name)
        return [(key, _comparison(_url(key), image)) for key in self._index]

    def _matching_keys(
        self, name: str, compared: list[tuple[str, _Comparison | None]]
    ) -> tuple[list[str], bool]:
        """The keys kubelet uses for ``name``, and whether that is the Docker Hub fallback."""
        keys = [key for key, c in compared if c is not None and c.matched]
        hub_key = dockerhub.KEYRING_KEY
        if not keys and _is_default_registry_match(name) and hub_key in self._creds:
            return [hub_key], True
        return keys, False

    def keys(self) -> list[str]:
        """Normalised keys in matching order (reverse lexical)."""
        return list(self._index)

    def items(self) -> list[tuple[str, Credential]]:
        """``(normalised key, credential)`` pairs in matching order."""
        return [(key, cred) for key in self._index for cred in self._creds[key]]

    @property
    def ignored(self) -> tuple[str, ...]:
        """Keys kubelet would ignore because they do not parse as URLs (as written)."""
        return tuple(self._ignored)

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the entries were read from, in order (``docker-config:/path``, a Secret)."""
        return tuple(self._sources)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Keyring(keys={self._index!r})"


def key_matches(key: str, image: str) -> bool:
    """kubelet's ``URLsMatchStr``: does keyring ``key`` cover ``image`` (``host[:port]/path``)?

    Ports must be equal, host label counts equal, each label a glob match (Go's filepath.Match
    within the label) and the key's path a plain string prefix of the image's path. As in
    kubelet, keys are URLs: a ``?`` starts the query and ``^`` is not allowed in a host, so in
    practice only ``*`` and ``[a-z]`` classes work as wildcards.
    """
    compared = _comparison(_url(key), _url(image))
    return compared is not None and compared.matched


def _normalize_key(key: str) -> str | None:
    """kubelet's key normalisation in ``BasicDockerKeyring.Add``; ``None`` for a bad URL."""
    url = key if key.startswith(("https://", "http://")) else "https://" + key
    parsed = _parse_url(url)
    if parsed is None:
        return None
    host, path = parsed
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    return host + path if path not in ("", "/") else host


def _is_default_registry_match(image: str) -> bool:
    """kubelet's ``isDefaultRegistryMatch``: would ``image`` be pulled from Docker Hub?"""
    first, slash, _ = image.partition("/")
    if not first:
        return False
    if not slash or first in (dockerhub.DOMAIN, dockerhub.KEYRING_KEY):
        return True
    return "." not in first and ":" not in first


def _unique(creds: Iterable[Credential]) -> list[Credential]:
    """Drop repeated credentials (same username and secrets), keeping the first occurrence."""
    seen: set[tuple[str, str, str]] = set()
    result = []
    for cred in creds:
        identity = (cred.username, cred.password, cred.identity_token)
        if identity not in seen:
            seen.add(identity)
            result.append(cred)
    return result


# --- why a lookup matched or not, worded for an operator ----------------------------------------

# what a key did for an image: the first four are matches, the rest say why kubelet skipped it
MatchReason = Literal[
    "exact",
    "glob",
    "path_prefix",
    "docker_hub_fallback",
    "port",
    "path_prefix_miss",
    "path_form",
    "docker_hub_alias",
    "label_count",
    "host_case",
    "scheme",
    "unparsable",
    "fallback_unused",
    "other_host",
    "other_host_and_port",
]

_LIST_LIMIT = 8  # keys, sources and near misses named in a text; the rest are counted
_NAME_LIMIT = 160  # characters of one key or source shown in a text
_GLOB_CHARS = frozenset("*?[")
_HUB_KEYS = f'"{dockerhub.DOMAIN}" or "https://{dockerhub.KEYRING_KEY}/v1/"'
_HOW: dict[str, str] = {
    "exact": "exact host",
    "glob": "glob",
    "path_prefix": "path prefix",
    "docker_hub_fallback": "Docker Hub fallback",
}


@dataclass(frozen=True)
class KeyCheck:
    """One keyring key judged against one image under kubelet's rules."""

    key: str  # the normalised key, as kubelet indexes it
    matched: bool
    reason: MatchReason
    detail: str  # the reason in an operator's words (keys and image names only)
    near: bool = False  # a near miss: most likely meant for this image


@dataclass(frozen=True)
class KeyringMatch:
    """What :meth:`Keyring.explain` found: the keys matching an image, and why the rest do not."""

    image: str  # the repository name looked up (``docker.io/library/nginx``)
    registry: str  # its host[:port] (``docker.io``, ``10.0.0.5:5000``)
    sources: tuple[str, ...]  # where the keyring's entries came from
    keys: tuple[str, ...]  # every normalised key, in matching order
    checks: tuple[KeyCheck, ...]  # matched keys first, then near misses, then the rest
    ignored: tuple[str, ...]  # keys kubelet ignored (not URLs), as written

    @property
    def matched(self) -> tuple[KeyCheck, ...]:
        return tuple(c for c in self.checks if c.matched)

    @property
    def near_misses(self) -> tuple[KeyCheck, ...]:
        return tuple(c for c in self.checks if not c.matched and c.near)

    @property
    def others(self) -> tuple[KeyCheck, ...]:
        return tuple(c for c in self.checks if not c.matched and not c.near)

    @property
    def suggested_key(self) -> str:
        """The key that makes kubelet use an entry for this image: its registry host[:port]."""
        return self.registry

    @property
    def fix(self) -> str:
        """What to add to the pull secret, e.g. ``add an entry for "10.0.0.5:5000"``."""
        if dockerhub.is_hub(self.registry):
            return f"add an entry for {_HUB_KEYS} (Docker Hub)"
        return f'add an entry for "{self.suggested_key}"'

    def describe(self, limit: int = _LIST_LIMIT) -> str:
        """A bounded explanation: at most ``limit`` names per list, the rest counted."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        sources = _listing(self.sources, limit) if self.sources else "the keyring"
        if self.matched:
            used = [f"{_shown(c.key)} ({_HOW[c.reason]})" for c in self.matched]
            return f"{self.image} matches {_listing(used, limit)} in {sources}."
        verb = "has" if len(self.sources) <= 1 else "have"
        but = "so none matches" if not self.keys else "but none matches"
        sentences = [
            f"{sources} {verb} {_count(len(self.keys), 'entry', 'entries')}, {but} "
            f"{_shown(self.image)} under kubelet's rules (host, port, path prefix, glob)."
        ]
        near = self.near_misses
        if near:
            items = [f"{_shown(c.key)} — {c.detail}" for c in near[:limit]]
            if len(near) > limit:
                items.append(f"and {len(near) - limit} more")
            label = "Near miss" if len(near) == 1 else "Near misses"
            sentences.append(f"{label}: {'; '.join(items)}.")
        if self.others:
            label = "Other entries" if near else "Entries"
            names = _listing([c.key for c in self.others], limit)
            sentences.append(f"{label}: {names} — {self._others_note()}.")
        if self.ignored:
            names = _listing([repr(_clip(k)) for k in self.ignored], limit, quoted=True)
            sentences.append(f"Ignored because they do not parse as URLs: {names}.")
        return " ".join(sentences)

    def _others_note(self) -> str:
        reasons = {c.reason for c in self.others}
        hosts = "other hosts" if len(self.others) > 1 else "another host"
        if reasons == {"other_host"}:
            return hosts
        if reasons != {"other_host_and_port"}:
            return f"{hosts}, some with other ports too (ports must be equal)"
        port = _split_host(self.registry)[1]
        if port:
            without = "none with" if len(self.others) > 1 else "without"
            return f"{hosts}, {without} port :{port} (ports must be equal)"
        return f"{hosts} with a port, while {self.registry} has none (ports must be equal)"


def _registry_of(name: str) -> str:
    """The registry host[:port] of a repository name (``nginx`` → ``docker.io``)."""
    try:
        return parse(name).domain
    except InvalidReference:
        return name.partition("/")[0]


@dataclass(frozen=True)
class _Comparison:
    """A key and an image split the way kubelet's ``URLsMatch`` splits them."""

    key_host: str  # host[:port] as in the URL
    key_labels: tuple[str, ...]
    key_port: str
    key_path: str
    image_host: str
    image_labels: tuple[str, ...]
    image_port: str
    image_path: str

    @property
    def hosts_match(self) -> bool:
        """Equal label counts and every label a glob match (ports aside)."""
        return len(self.key_labels) == len(self.image_labels) and all(
            _glob_match(p, label)
            for p, label in zip(self.key_labels, self.image_labels, strict=False)
        )

    @property
    def path_covered(self) -> bool:
        return self.image_path.startswith(self.key_path)

    @property
    def matched(self) -> bool:
        return self.key_port == self.image_port and self.path_covered and self.hosts_match


# a key or image as a schemeless URL: (host[:port], host labels, port, unescaped path)
_Url = tuple[str, tuple[str, ...], str, str]


def _url(text: str) -> _Url | None:
    """``text`` parsed like kubelet parses keys and images; ``None`` if it is no URL."""
    parsed = _parse_url("https://" + text)
    if parsed is None:
        return None
    labels, port = _split_host(parsed[0])
    return parsed[0], tuple(labels), port, parsed[1]


def _comparison(key: _Url | None, image: _Url | None) -> _Comparison | None:
    """The two side by side; ``None`` if either failed to parse (never a match)."""
    if key is None or image is None:
        return None
    return _Comparison(*key, *image)


def _matched(key: str, compared: _Comparison | None, image: str, via_fallback: bool) -> KeyCheck:
    if via_fallback:
        detail = (
            f"no key matches {image}, so kubelet uses the Docker Hub entry {dockerhub.KEYRING_KEY}"
        )
        return KeyCheck(key, True, "docker_hub_fallback", _clip(detail))
    assert compared is not None  # it matched, so both parsed
    if compared.key_path not in ("", "/"):
        return KeyCheck(key, True, "path_prefix", f"{_clip(image)} starts with {_clip(key)}")
    if _GLOB_CHARS.intersection(compared.key_host):
        detail = f"the glob {_clip(key)} covers {compared.image_host}"
        return KeyCheck(key, True, "glob", detail)
    return KeyCheck(key, True, "exact", f"{_clip(key)} is the registry of {_clip(image)}")


def _missed(key: str, c: _Comparison | None, *, hub: bool, found: bool) -> KeyCheck:
    """Why ``key`` does not cover the image compared in ``c``, the closest reason first."""
    if key == dockerhub.KEYRING_KEY and hub and found:
        detail = "the index.docker.io entry is used only when no other key matches"
        return KeyCheck(key, False, "fallback_unused", detail)
    if c is None:
        detail = "kubelet cannot parse it as a URL when matching, so it never matches"
        return KeyCheck(key, False, "unparsable", detail, near=True)
    near = _near_miss(c, key, hub)
    if near is not None:
        return near
    detail = f"another host ({_clip(c.key_host)}, not {c.image_host})"
    if c.key_port != c.image_port:
        detail += f" and another port; {_ports(c)}"
        return KeyCheck(key, False, "other_host_and_port", detail)
    return KeyCheck(key, False, "other_host", detail)


def _near_miss(c: _Comparison, key: str, hub: bool) -> KeyCheck | None:
    """A key that was probably meant for this image, with what kubelet wants instead."""
    host = _clip(c.key_host)
    if "://" in key:
        detail = (
            f"kubelet strips only a lower-case https:// or http:// scheme, so it reads the host "
            f"{host!r}; write the key without the scheme"
        )
        return KeyCheck(key, False, "scheme", detail, near=True)
    if c.hosts_match and c.key_port != c.image_port:
        return KeyCheck(key, False, "port", f"same host, other port: {_ports(c)}", near=True)
    if c.hosts_match and c.key_path in ("/v1", "/v2"):
        detail = (
            f"kubelet reads {c.key_path} without a trailing slash as a repository path; write "
            f"{host} or https://{host}{c.key_path}/"
        )
        return KeyCheck(key, False, "path_form", detail, near=True)
    if c.hosts_match:
        image = _clip(c.image_host + c.image_path)
        detail = f"{_clip(key)} covers only names starting with {_clip(key)}, not {image}"
        return KeyCheck(key, False, "path_prefix_miss", detail, near=True)
    if hub:
        alias = _docker_hub_alias(c)
        if alias:
            return KeyCheck(key, False, "docker_hub_alias", alias, near=True)
    key_count, image_count = len(c.key_labels), len(c.image_labels)
    if key_count != image_count and _GLOB_CHARS.intersection(c.key_host):
        width = min(key_count, image_count)
        tail = zip(c.key_labels[-width:], c.image_labels[-width:], strict=True)
        if all(_glob_match(p, label) for p, label in tail):
            detail = (
                f"a glob stands for exactly one host label: {host} covers hosts of "
                f"{key_count} labels, {c.image_host} has {image_count}"
            )
            return KeyCheck(key, False, "label_count", detail, near=True)
    if key_count == image_count and all(
        _glob_match(p.lower(), label.lower())
        for p, label in zip(c.key_labels, c.image_labels, strict=True)
    ):
        detail = f"host names compare case-sensitively: {host} is not {c.image_host}"
        return KeyCheck(key, False, "host_case", detail, near=True)
    return None


def _docker_hub_alias(c: _Comparison) -> str:
    """Why a key naming a Docker Hub host misses a Docker Hub image; ``""`` if it names none."""
    hostname = ".".join(c.key_labels)
    if hostname == dockerhub.KEYRING_KEY and c.key_path not in ("", "/"):
        slash = " (write https://index.docker.io/v1/ with the trailing slash)"
        return (
            f"kubelet falls back to the Docker Hub entry only under the exact key "
            f"{dockerhub.KEYRING_KEY}; this key has the path {_clip(c.key_path)}"
            + (slash if c.key_path in ("/v1", "/v2") else "")
        )
    if hostname in dockerhub.ALIAS_HOSTS or hostname.endswith(".docker.io"):
        return (
            f"{_clip(c.key_host)} is a Docker Hub host, but Docker Hub images are matched as "
            f"docker.io ({len(c.key_labels)} labels vs 2), so it never matches: use {_HUB_KEYS}"
        )
    return ""


def _ports(c: _Comparison) -> str:
    key, image = (f":{port}" if port else "none" for port in (c.key_port, c.image_port))
    return f"ports must be equal (the key has {key}, the image has {image})"


def _clip(text: str, limit: int = _NAME_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(text: str) -> str:
    """A name as printed in a text: clipped, with control characters escaped."""
    clipped = _clip(text)
    return clipped if clipped.isprintable() else repr(clipped)


def _listing(names: Iterable[str], limit: int, *, quoted: bool = False) -> str:
    """``a, b, c and K more``: at most ``limit`` names, each clipped and printable."""
    items = list(names)
    shown = [name if quoted else _shown(name) for name in items[:limit]]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


def _count(number: int, one: str, many: str) -> str:
    return f"no {many}" if number == 0 else f"1 {one}" if number == 1 else f"{number} {many}"


# --- Go net/url and path/filepath semantics, as far as kubelet relies on them ---------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# ASCII characters Go's url.Parse accepts in a host (shouldEscape(c, encodeHost) is false)
_HOST_ASCII = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]<>\"%"
)


def _parse_url(url: str) -> tuple[str, str] | None:
    """(host[:port], unescaped path) of an ``http(s)://`` URL; ``None`` if Go's url.Parse fails."""
    if _CONTROL_RE.search(url):
        return None
    rest = url.split("://", 1)[1].partition("#")[0].partition("?")[0]
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    if not _valid_host(host) or _BAD_ESCAPE_RE.search(path):
        return None
    return unquote(host), unquote(slash + path)


def _valid_host(host: str) -> bool:
    if _BAD_ESCAPE_RE.search(host) or any(c < "\x80" and c not in _HOST_ASCII for c in host):
        return False
    if host.startswith("["):
        close = host.rfind("]")
        return close >= 0 and _valid_optional_port(host[close + 1 :])
    colon = host.rfind(":")
    return colon < 0 or _valid_optional_port(host[colon:])


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all(c in "0123456789" for c in port[1:]))


def _split_host(text: str) -> tuple[list[str], str]:
    """Host labels and port; Go's ``net.SplitHostPort`` failing means "no port"."""
    host, port = hostport.split_go(text) or (text, "")
    return host.split("."), port


# A glob token: None for "*", else (negated, ranges) matching one character. A literal c is
# (False, ((c, c),)) and "?" is (True, ()): a negated empty class matches anything.
_GlobToken = tuple[bool, tuple[tuple[str, str], ...]] | None


def _glob_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` on one host label; a malformed pattern matches nothing."""
    tokens = _glob_tokens(pattern)
    if tokens is None:
        return False
    positions = {0}  # indexes into name reachable after the tokens seen so far
    for token in tokens:
        if token is None:
            positions = set(range(min(positions), len(name) + 1))
            continue
        negated, ranges = token
        positions = {
            i + 1
            for i in positions
            if i < len(name) and any(lo <= name[i] <= hi for lo, hi in ranges) != negated
        }
        if not positions:
            return False
    return len(name) in positions


def _glob_tokens(pattern: str) -> list[_GlobToken] | None:
    """Tokenise ``*``, ``?``, ``[^a-z]``, ``\\x``; ``None`` where Go returns ErrBadPattern."""
    tokens: list[_GlobToken] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            tokens.append(None)
        elif char == "?":
            tokens.append((True, ()))
        elif char == "[":
            parsed = _glob_class(pattern, i + 1)
            if parsed is None:
                return None
            token, i = parsed
            tokens.append(token)
            continue
        else:
            if char == "\\":
                i += 1
                if i >= len(pattern):
                    return None
            tokens.append((False, ((pattern[i], pattern[i]),)))
        i += 1
    return tokens


def _glob_class(pattern: str, i: int) -> tuple[_GlobToken, int] | None:
    """Parse a class after its ``[``: (token, index after ``]``), ``None`` if malformed."""
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while not (pattern.startswith("]", i) and ranges):
        low = _glob_class_char(pattern, i)
        if low is None:
            return None
        lo, i = low
        hi = lo
        if pattern[i] == "-":
            high = _glob_class_char(pattern, i + 1)
            if high is None:
                return None
            hi, i = high
        ranges.append((lo, hi))
    return (negated, tuple(ranges)), i + 1


def _glob_class_char(pattern: str, i: int) -> tuple[str, int] | None:
    """Go's ``getEsc``: one class character (bare ``-``/``]`` rejected), more must follow."""
    if i >= len(pattern) or pattern[i] in "-]":
        return None
    if pattern[i] == "\\":
        i += 1
    if i + 1 >= len(pattern):
        return None
    return pattern[i], i + 1


# --- docker config files ------------------------------------------------------------------------


def load_docker_config(path: Path | str) -> Keyring:
    """Read a ``.dockerconfigjson``, a legacy ``.dockercfg`` or a Kubernetes Secret (JSON).

    Secrets may be of type ``kubernetes.io/dockerconfigjson`` or ``kubernetes.io/dockercfg``
    (as printed by ``kubectl get secret -o json``, also several in a ``List``).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CredentialError(f"cannot read docker config {path}: {reason}") from None
    return loads_docker_config(raw, origin=str(path))


def loads_docker_config(text: str | bytes, *, origin: str = "<string>") -> Keyring:
    """:func:`load_docker_config` for content already in memory; ``origin`` names it."""
    document = _load_json(text, origin, "")
    if not isinstance(document, dict):
        raise CredentialError(
            f"{origin}: expected a JSON object (.dockerconfigjson, .dockercfg or a Kubernetes "
            f"Secret), got {_json_type(document)}"
        )
    keyring = Keyring()
    kind = document.get("kind")
    if kind == "Secret":
        _add_secret(keyring, document, origin)
    elif kind == "List" and "items" in document:
        items = document["items"]
        if not isinstance(items, list) or not items:
            raise CredentialError(f"{origin}: the List has no items")
        for number, item in enumerate(items):
            if not isinstance(item, dict) or item.get("kind") != "Secret":
                raise CredentialError(f"{origin}: List item {number} is not a Secret")
            _add_secret(keyring, item, origin)
    elif "auths" in document:
        _add_entries(keyring, _auths(document, origin, ""), origin, "")
        keyring.add_source(f"docker-config:{origin}")
    elif isinstance(kind, str) and "apiVersion" in document:
        raise CredentialError(f"{origin}: a Kubernetes {kind} is not a Secret")
    else:
        _add_entries(keyring, _legacy_entries(document, origin, ""), origin, "")
        keyring.add_source(f"docker-config:{origin}")
    return keyring


def _add_secret(keyring: Keyring, secret: dict[str, Any], origin: str) -> None:
    metadata = secret.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    where = f"Secret {name}" if isinstance(name, str) and name else "Secret"
    secret_type = secret.get("type")
    data_key = _SECRET_TYPES.get(secret_type) if isinstance(secret_type, str) else None
    if data_key is None:
        raise CredentialError(
            f"{origin}: {where} has type {secret_type!r}; kubelet only uses secrets of type "
            + " or ".join(_SECRET_TYPES)
        )
    context = f"{where} data[{data_key}]: "
    content = _secret_data(secret, data_key, origin, where)
    document = _load_json(content, origin, context)
    if not isinstance(document, dict):
        raise CredentialError(f"{origin}: {context}expected a JSON object")
    if data_key == ".dockerconfigjson":
        if "auths" not in document:
            raise CredentialError(
                f'{origin}: {context}has no "auths" object, so kubelet finds no credentials '
                "in it (legacy .dockercfg content belongs in a kubernetes.io/dockercfg secret)"
            )
        entries = _auths(document, origin, context)
    else:
        entries = _legacy_entries(document, origin, context)
    _add_entries(keyring, entries, origin, context)
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    if isinstance(namespace, str) and namespace and isinstance(name, str) and name:
        where = f"Secret {namespace}/{name}"
    keyring.add_source(f"docker-config:{origin} ({where})")


def _secret_data(secret: dict[str, Any], data_key: str, origin: str, where: str) -> str | bytes:
    data = secret.get("data")
    if isinstance(data, dict) and isinstance(data.get(data_key), str):
        decoded = _decode_base64(data[data_key])
        if decoded is None:
            raise CredentialError(f"{origin}: {where} data[{data_key}] is not valid base64")
        return decoded
    string_data = secret.get("stringData")
    if isinstance(string_data, dict) and isinstance(string_data.get(data_key), str):
        value: str = string_data[data_key]
        return value
    raise CredentialError(f"{origin}: {where} has no data[{data_key}]")


def _auths(document: dict[str, Any], origin: str, context: str) -> dict[str, Any]:
    auths = document["auths"]
    if auths is None:
        return {}
    if not isinstance(auths, dict):
        raise CredentialError(
            f'{origin}: {context}"auths" must be an object, got {_json_type(auths)}'
        )
    return auths


def _legacy_entries(document: dict[str, Any], origin: str, context: str) -> dict[str, Any]:
    """A legacy ``.dockercfg``: a bare map of registry key -> entry."""
    if "auths" in document:  # kubelet would read "auths" as a registry name: nothing matches
        raise CredentialError(
            f'{origin}: {context}a legacy .dockercfg has no "auths" object '
            "(.dockerconfigjson content belongs in a kubernetes.io/dockerconfigjson secret)"
        )
    cli_keys = sorted(_DOCKER_CLI_KEYS.intersection(document))
    if cli_keys:
        raise CredentialError(
            f'{origin}: {context}docker CLI config without an "auths" object (has '
            f"{', '.join(cli_keys)}); credential helpers are not used by kubelet"
        )
    if not document:
        raise CredentialError(
            f'{origin}: {context}no "auths" object and no registry entries; expected '
            '{"auths": {"<registry>": {...}}} or a legacy .dockercfg map'
        )
    for key, entry in document.items():
        if not isinstance(entry, dict):
            raise CredentialError(
                f'{origin}: {context}not a docker config: no "auths" object, and key {key!r} '
                f"is not a registry entry ({_json_type(entry)}, expected an object)"
            )
    return document


def _add_entries(keyring: Keyring, entries: Mapping[str, Any], origin: str, context: str) -> None:
    for key, entry in entries.items():
        where = f"{origin}: {context}entry {key!r}"
        if not isinstance(entry, dict):
            raise CredentialError(f"{where} must be an object, got {_json_type(entry)}")
        cred = _decode_entry(entry, where, f"docker-config:{origin}[{key}]")
        keyring.add(key, cred)


def _decode_entry(entry: dict[str, Any], where: str, source: str) -> Credential:
    """kubelet's ``DockerConfigEntry.UnmarshalJSON`` (+ ``identitytoken``).

    Field names match case-insensitively and the last duplicate wins, as with Go's encoding/json.
    """
    fields: dict[str, str] = {}
    for name, value in entry.items():
        lowered = name.lower()
        if lowered not in ("username", "password", "email", "auth", "identitytoken"):
            continue
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise CredentialError(f"{where}: field {name!r} must be a string")
        fields[lowered] = value
    username, password = fields.get("username", ""), fields.get("password", "")
    auth = fields.get("auth", "")
    if auth:
        username, password = _decode_auth_field(auth, where)
    return Credential(
        username=username,
        password=password,
        identity_token=fields.get("identitytoken", ""),
        source=source,
    )


def _decode_auth_field(auth: str, where: str) -> tuple[str, str]:
    """kubelet's ``decodeDockerConfigFieldAuth``: base64 of ``user:password``, split at ``:``."""
    decoded = _decode_base64(auth)
    if decoded is None:
        raise CredentialError(f"{where}: auth field is not valid base64; auth field {_AUTH_FORMAT}")
    text = _utf8(decoded)
    if text is None:
        raise CredentialError(f"{where}: auth field does not decode to UTF-8 text")
    username, colon, password = text.partition(":")
    if not colon:
        raise CredentialError(f"{where}: decoded auth field has no ':'; auth field {_AUTH_FORMAT}")
    return username, password


_PADDED_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_UNPADDED_RE = re.compile(r"[A-Za-z0-9+/]*")


def _decode_base64(value: str) -> bytes | None:
    """Go's StdEncoding if ``value`` ends in ``=``, else RawStdEncoding; CR and LF are skipped."""
    compact = value.replace("\r", "").replace("\n", "")
    if value.strip().endswith("="):
        valid = _PADDED_RE.fullmatch(compact) is not None
    else:
        valid = _UNPADDED_RE.fullmatch(compact) is not None and len(compact) % 4 != 1
    if not valid:
        return None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - the patterns above rule it out
        return None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _load_json(text: str | bytes, origin: str, context: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
        return json.loads(text)
    except UnicodeDecodeError:
        raise CredentialError(f"{origin}: {context}not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # exc.msg and the position only; never exc.doc (the secrets)
        raise CredentialError(
            f"{origin}: {context}not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a number")
