"""containerd registry host resolution: which endpoints containerd 1.6-2.x contacts for a registry.

This follows containerd's ``core/remotes/docker/config/hosts.go`` (``remotes/docker/config`` in 1.x)
and ``docs/hosts.md``:

* ``config_path`` may hold several roots separated by ``:``. For each root in order, the candidate
  directories are ``<host>_<port>_`` (only when the host has a ``:port``), ``<host>[:port]``, then
  ``_default``; the first **existing** directory of the first root that has one wins (so
  ``root1/_default`` beats ``root2/<host>``).
* In that directory, ``hosts.toml`` gives the ``[host."…"]`` mirrors in file order followed by the
  ``server`` (or, without ``server``, the registry itself) as upstream. Without ``hosts.toml`` (or
  with an empty one) the Docker ``certs.d`` layout applies: ``*.crt`` CA files, ``*.cert``/``*.key``
  client pairs, for the registry itself.
* No directory at all: the registry itself over HTTPS. ``docker.io`` means
  ``https://registry-1.docker.io``.
* A host different from the registry host gets ``?ns=<registry host>`` (``Endpoint.namespace``),
  except ``registry-1.docker.io`` serving ``docker.io``.
* Loopback registries (containerd's ``docker.IsLocalhost``: ``localhost`` or a loopback IP
  literal such as ``127.0.0.2`` or ``::1``, with any port; a *name* that resolves to 127.0.0.1 is
  not one) get a special default when the registry itself is the last entry (no hosts.toml, one
  without ``server``, or one the runtime ignores). It depends on the runtime version
  (:func:`loopback_rule`):

  ======================================  =====================================================
  containerd                              loopback registry without ``server``
  ======================================  =====================================================
  < 1.6.9                                 ``https``, verified, like any registry
  1.6.9 to 1.6.23, 1.7.0 to 1.7.6         ``http`` (seen on the lab's 1.6.20: a TLS registry
                                          there answers ``400 Bad Request``)
  1.6.24+, 1.7.7+, 2.0                    no port or port 80: ``http``; other ports: HTTPS first
                                          without verification, plain HTTP when the server
                                          answers plain HTTP (``Endpoint.http_fallback``)
  2.1+, and unknown or unparsable         no port or 443: ``https`` without verification;
  versions                                port 80: ``http``; other ports: as above
  ======================================  =====================================================

  An unknown version gets the newest family: it is what current runtimes do, and a plain-HTTP
  loopback registry (the kind/k3d/minikube set-up) is reachable under every family since 1.6.9.

Deliberate differences from containerd, which a diagnostic tool should surface rather than hide:

* containerd logs an invalid ``hosts.toml`` (bad TOML, unknown capability, wrong types) and falls
  back to the directory's certificate files; :func:`registry_endpoints` raises
  :class:`HostsConfigError` naming the file instead.
* An endpoint listed twice (containerd 1.x needs the ``server`` repeated as a ``[host]`` table)
  is returned once, where it first appears, with that entry's settings; it is the upstream when
  the ``server`` repeats it. containerd tries it twice, but it is the same endpoint: one probe.
* ``[header]`` tables and ``dial_timeout`` are accepted but not represented in :class:`Endpoint`.
* The HTTP fallback that containerd 1.6.24+/1.7.7+ also applies to an explicitly ``http://`` host
  with TLS settings (``ca``, ``client``, ``skip_verify``) is not modelled; such a host is probed
  over plain HTTP.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictStr,
    ValidationError,
)
from pydantic_core import ErrorDetails

from agent import dockerhub, hostport
from agent.errors import InvalidInput
from agent.models import Endpoint

__all__ = [
    "DEFAULT_CAPABILITIES",
    "HostDirLookup",
    "HostsConfigError",
    "LoopbackRule",
    "host_dir_lookup",
    "is_loopback_registry",
    "loopback_rule",
    "registry_endpoints",
]

DEFAULT_CAPABILITIES: tuple[str, ...] = ("pull", "resolve", "push")
_KNOWN_CAPABILITIES = frozenset(DEFAULT_CAPABILITIES)

_Version = tuple[int, int, int]
_VERSION = re.compile(r"v?(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?")

#: How containerd reaches a loopback registry that has no ``server`` (module docstring's table):
#: like any registry, plain HTTP, or HTTPS first with a plain-HTTP fallback (two port rules).
LoopbackRule = Literal["https", "http", "fallback", "fallback-2.1"]


class HostsConfigError(InvalidInput, ValueError):
    """A ``hosts.toml`` (or host directory) that containerd could not use.

    containerd logs such a file and falls back to the directory's certificate files, i.e. to the
    registry itself without mirrors; pullcheck reports it instead of guessing.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        self.fallback: list[Endpoint] = []  # what containerd uses instead (filled by the caller)
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class HostDirLookup:
    """Where containerd looked for a registry's host directory, for evidence."""

    registry_host: str
    roots: list[str]
    tried: list[str] = field(default_factory=list)  # candidate directories, in order, up to `found`
    found: str | None = None  # the directory containerd uses, None when none exists

    @property
    def hosts_toml(self) -> str | None:
        """The ``hosts.toml`` in the found directory, when it exists and is not empty."""
        if self.found is None:
            return None
        path = Path(self.found) / "hosts.toml"
        try:
            return str(path) if path.stat().st_size > 0 else None
        except OSError:
            return None


@dataclass
class _HostConfig:
    """One parsed host entry, before it becomes an :class:`Endpoint`."""

    scheme: str = ""
    netloc: str = ""  # host[:port] exactly as configured, "" = the registry itself
    path: str = ""
    capabilities: list[str] = field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    ca_files: list[str] = field(default_factory=list)
    client_certs: list[tuple[str, str]] = field(default_factory=list)
    skip_verify: bool = False
    override_path: bool = False
    role: str = "upstream"
    http_fallback: bool = False  # HTTPS first, plain HTTP when the server answers plain HTTP


# --- public API ---------------------------------------------------------------------------------


def host_dir_lookup(registry_host: str, config_path: str) -> HostDirLookup:
    """Find the host directory containerd would use for ``registry_host`` under ``config_path``."""
    roots = _roots(config_path)
    tried: list[str] = []
    for root in roots:
        for candidate in _host_paths(root, registry_host):
            tried.append(candidate)
            if Path(candidate).exists():
                return HostDirLookup(registry_host, roots, tried, candidate)
    return HostDirLookup(registry_host, roots, tried, None)


def registry_endpoints(
    registry_host: str, config_path: str, *, containerd_version: str | None = None
) -> list[Endpoint]:
    """The endpoints containerd contacts for ``registry_host``, in the order it tries them.

    ``registry_host`` is the reference's registry part: ``docker.io``, ``quay.io``,
    ``plain.pullcheck.test:15000``, ``[::1]:5000``. ``containerd_version`` (e.g. ``"1.6.20"``, as
    the CRI Version RPC reports it) enables version quirks: containerd 1.x rejects a hosts.toml
    without any ``[host."…"]`` table ("invalid `host` tree"). Without it, 2.x parsing applies.

    Raises :class:`HostsConfigError` when the hosts.toml in use is invalid; its ``fallback`` holds
    the endpoints containerd uses instead (it logs the error and reads the certificate files).
    """
    rule = loopback_rule(containerd_version)
    lookup = host_dir_lookup(registry_host, config_path)
    if lookup.found is None:
        return _endpoints(registry_host, [_HostConfig()], "", rule)
    directory = Path(lookup.found)
    if not directory.is_dir():
        raise HostsConfigError(str(directory), "is not a directory")
    hosts_toml = directory / "hosts.toml"
    data = _read_bytes(hosts_toml)
    if not data:
        return _endpoints(registry_host, [_cert_files_config(directory)], "", rule)
    try:
        configs = _parse_hosts_toml(hosts_toml, data, _needs_host_table(containerd_version))
        return _endpoints(registry_host, configs, str(hosts_toml), rule)
    except HostsConfigError as exc:
        try:
            exc.fallback = _endpoints(registry_host, [_cert_files_config(directory)], "", rule)
        except HostsConfigError:
            exc.fallback = []
        raise


def is_loopback_registry(registry_host: str) -> bool:
    """containerd's ``docker.IsLocalhost``: ``localhost`` or a loopback IP literal, any port.

    Only the literal name ``localhost`` counts; a name that merely resolves to 127.0.0.1 (such as
    ``registry.localtest.me``) does not. Like Go's ``net.ParseIP``, an IPv4-mapped IPv6 loopback
    (``::ffff:127.0.0.1``) counts, a bracketed address without a port does not.
    """
    host, _ = _host_and_port(registry_host)
    if host == "localhost":
        return True
    if "%" in host:  # a zone: Go's ParseIP rejects it
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def loopback_rule(containerd_version: str | None) -> LoopbackRule:
    """The loopback family of a runtime version (``"1.6.20~ds1"``, ``"v2.1.3"``); an unknown or
    unparsable version gets the newest family (see the module docstring)."""
    version = _version(containerd_version)
    if version is None or version >= (2, 1, 0):
        return "fallback-2.1"
    if version >= (1, 7, 0):
        return "fallback" if version >= (1, 7, 7) else "http"
    if version >= (1, 6, 24):
        return "fallback"
    return "http" if version >= (1, 6, 9) else "https"


def _endpoints(
    registry_host: str, configs: list[_HostConfig], config_file: str, rule: LoopbackRule
) -> list[Endpoint]:
    """The endpoints in the runtime's order, each distinct (scheme, host, port, path) once."""
    filled = _fill_default(registry_host, configs, rule)
    unique: dict[tuple[str, str, int, str], Endpoint] = {}
    for config in filled:
        endpoint = _to_endpoint(registry_host, config, config_file)
        key = (endpoint.scheme, endpoint.host.lower(), endpoint.port, endpoint.path)
        kept = unique.get(key)
        if kept is None:
            unique[key] = endpoint
        elif endpoint.role == "upstream" and kept.role == "mirror":
            unique[key] = kept.model_copy(update={"role": "upstream"})  # the server repeats it
    return list(unique.values())


def _version(text: str | None) -> _Version | None:
    """(major, minor, patch) from a runtime version string, None when it has none."""
    match = _VERSION.match(text.strip()) if text else None
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _needs_host_table(containerd_version: str | None) -> bool:
    """containerd < 2.0 (go-toml v1) fails a hosts.toml that has no ``[host]`` table."""
    version = _version(containerd_version)
    return version is not None and version < (2, 0, 0)


# --- directory lookup ---------------------------------------------------------------------------


def _roots(config_path: str) -> list[str]:
    return [root for root in config_path.split(":") if root]


def _host_directory(host: str) -> str:
    """containerd's ``hostDirectory``: the last ``:port`` becomes ``_port_``."""
    idx = host.rfind(":")
    if idx > 0:
        return f"{host[:idx]}_{host[idx + 1 :]}_"
    return host


def _host_paths(root: str, host: str) -> list[str]:
    paths = []
    converted = _host_directory(host)
    if converted != host:
        paths.append(str(Path(root) / converted))
    paths.append(str(Path(root) / host))
    paths.append(str(Path(root) / "_default"))
    return paths


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise HostsConfigError(str(path), f"cannot read: {exc.strerror or exc}") from exc


# --- hosts.toml parsing -------------------------------------------------------------------------


def _capabilities(values: list[str]) -> list[str]:
    """Lower-cased, each once; containerd rejects a capability it does not know."""
    found: list[str] = []
    for value in values:
        lowered = value.lower()
        if lowered not in _KNOWN_CAPABILITIES:
            raise ValueError(f"unknown capability {_shown(value)}")
        if lowered not in found:
            found.append(lowered)
    return found


class _HostTable(BaseModel):
    """The keys a ``[host."<url>"]`` table and the file's top level share (containerd's
    ``hostFileConfig``). Types are strict like go-toml's; unknown keys are ignored like it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    capabilities: Annotated[list[StrictStr], AfterValidator(_capabilities)] | None = None
    ca: StrictStr | list[StrictStr] | None = None
    client: StrictStr | list[StrictStr | tuple[StrictStr, StrictStr]] | None = None
    skip_verify: StrictBool = False
    override_path: StrictBool = False
    header: dict[str, Any] | None = None  # accepted, not represented in Endpoint
    dial_timeout: StrictStr | None = None  # accepted, not represented in Endpoint


class _HostsFile(_HostTable):
    """A whole ``hosts.toml``: the upstream's settings, ``server``, and the ``[host]`` tables in
    file order."""

    server: StrictStr = ""
    host: dict[str, _HostTable] = {}


# what a key must be, for the error message when it is not
_EXPECTED: dict[str, str] = {
    "server": "must be a string",
    "skip_verify": "must be true or false",
    "override_path": "must be true or false",
    "capabilities": "must be a list of strings",
    "header": "must be a table",
    "dial_timeout": 'must be a duration string such as "30s"',
    "host": 'must be a table of [host."<url>"] entries',
}
_PAIR_ERRORS = frozenset({"missing", "too_short", "too_long"})
_SHOWN_VALUE = 80  # characters of a bad value quoted in a message


def _parse_hosts_toml(path: Path, data: bytes, needs_host_table: bool) -> list[_HostConfig]:
    where = str(path)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise HostsConfigError(where, f"not UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise HostsConfigError(where, f"invalid TOML: {exc}") from exc
    try:
        parsed = _HostsFile.model_validate(doc)
    except ValidationError as exc:
        raise HostsConfigError(where, _problems(exc.errors())) from None
    if needs_host_table and not parsed.host:
        raise HostsConfigError(
            where,
            'invalid `host` tree: containerd 1.x needs at least one [host."<url>"] table '
            "(repeat the server as one)",
        )
    base_dir = path.parent
    configs = [_host_config(where, url, base_dir, table) for url, table in parsed.host.items()]
    for config in configs:
        config.role = "mirror"
    configs.append(_host_config(where, parsed.server, base_dir, parsed))  # the upstream
    return configs


def _problems(errors: Iterable[ErrorDetails]) -> str:
    """pydantic's errors as today's words, one per key: the deepest error of each key (a union
    reports one per member) names what was wrong; host tables are named by their URL."""
    deepest: dict[tuple[str | int, ...], ErrorDetails] = {}
    for error in errors:
        loc = error["loc"]
        key = loc[:3] if loc[:1] == ("host",) else loc[:1]
        if key not in deepest or _depth(error) > _depth(deepest[key]):
            deepest[key] = error
    return "; ".join(_problem(error) for error in deepest.values())


def _depth(error: ErrorDetails) -> tuple[int, bool]:
    """How precisely an error names the fault: its location's depth, a pair's length first."""
    return len(error["loc"]), error["type"] in _PAIR_ERRORS


def _problem(error: ErrorDetails) -> str:
    loc, prefix = error["loc"], ""
    if loc[:1] == ("host",) and len(loc) > 1:
        url, loc = _shown(loc[1]), loc[2:]
        if not loc:
            return f"host {url} must be a table"
        prefix = f"host {url}: "
    key = str(loc[0])
    value = _shown(error["input"])
    if error["type"] == "value_error":
        return prefix + str(error.get("ctx", {}).get("error", error["msg"]))
    if key == "client" and error["type"] in _PAIR_ERRORS:
        return f"{prefix}invalid pair {value} for 'client' (expected [cert, key])"
    if key in ("ca", "client"):
        return f"{prefix}invalid type for {key!r}: {value}"
    return f"{prefix}{key!r} {_EXPECTED.get(key, 'is invalid')}"


def _shown(value: object) -> str:
    """``repr(value)``, clipped: a message quotes what was wrong, not a whole file."""
    text = repr(value)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 1] + "…"


def _host_config(where: str, server: str, base_dir: Path, table: _HostTable) -> _HostConfig:
    result = _HostConfig(override_path=table.override_path, skip_verify=table.skip_verify)
    if server:
        if not server.startswith("http"):
            server = "https://" + server
        try:
            parts = urlsplit(server)
        except ValueError as exc:
            raise HostsConfigError(where, f"unable to parse server {server!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HostsConfigError(where, f"unable to parse server {server!r}")
        try:
            hostport.split(parts.netloc, 443)
        except ValueError as exc:
            raise HostsConfigError(where, f"unable to parse server {server!r}: {exc}") from exc
        result.scheme = parts.scheme
        result.netloc = parts.netloc
        result.path = _api_path(parts.path, table.override_path)
    if table.capabilities:
        result.capabilities = table.capabilities
    if table.ca is not None:
        cas = [table.ca] if isinstance(table.ca, str) else table.ca
        result.ca_files = [_abs(ca, base_dir) for ca in cas]
    if table.client is not None:
        clients = [table.client] if isinstance(table.client, str) else table.client
        result.client_certs = [_client_pair(item, base_dir) for item in clients]
    return result


def _api_path(path: str, override_path: bool) -> str:
    """The API root: the URL path plus ``/v2`` unless it already ends so or override_path is set."""
    if path:
        cleaned = posixpath.normpath(path)
        if cleaned in (".", "/"):
            cleaned = ""
        if cleaned.startswith("//"):
            cleaned = "/" + cleaned.lstrip("/")
        if not cleaned.endswith("/v2") and not override_path:
            cleaned += "/v2"
        return cleaned
    return "" if override_path else "/v2"


def _client_pair(item: str | tuple[str, str], base_dir: Path) -> tuple[str, str]:
    """A client certificate (its key inside) or a (cert, key) pair, paths made absolute."""
    if isinstance(item, str):
        return _abs(item, base_dir), ""
    cert, key = item
    return _abs(cert, base_dir), _abs(key, base_dir) if key else ""


def _abs(path: str, base_dir: Path) -> str:
    return path if Path(path).is_absolute() else str(base_dir / path)


# --- certs.d fallback ---------------------------------------------------------------------------


def _cert_files_config(directory: Path) -> _HostConfig:
    """Docker's certs.d layout: ``*.crt`` CAs, ``*.cert`` client certs with an optional ``.key``."""
    config = _HostConfig()
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise HostsConfigError(str(directory), f"cannot list: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.is_dir():
            continue
        if entry.name.endswith(".crt"):
            config.ca_files.append(str(entry))
        if entry.name.endswith(".cert"):
            key = entry.with_name(entry.name[: -len(".cert")] + ".key")
            config.client_certs.append((str(entry), str(key) if key.exists() else ""))
    return config


# --- defaults and conversion --------------------------------------------------------------------


def _fill_default(
    registry_host: str, configs: list[_HostConfig], rule: LoopbackRule
) -> list[_HostConfig]:
    """Give the last entry the registry itself when no ``server`` named one."""
    last = configs[-1]
    if not last.netloc:
        if dockerhub.is_hub(registry_host):
            last.scheme, last.netloc = "https", dockerhub.API_HOST
        else:
            last.scheme, last.netloc = "https", registry_host
            if is_loopback_registry(registry_host):
                _loopback_default(last, _host_and_port(registry_host)[1], rule)
        last.path = "/v2"
        last.capabilities = list(DEFAULT_CAPABILITIES)
        last.role = "upstream"
    return configs


def _loopback_default(config: _HostConfig, port: str, rule: LoopbackRule) -> None:
    """containerd's ``ConfigureHosts`` default for a loopback registry (``port`` as written)."""
    if rule == "https":
        return
    if rule == "http" or port == "80" or (rule == "fallback" and not port):
        config.scheme = "http"
        config.skip_verify = rule != "fallback-2.1"  # containerd sets it; no TLS is spoken
        return
    config.scheme = "https"
    config.skip_verify = True
    config.http_fallback = not (rule == "fallback-2.1" and port in ("", "443"))


def _is_registry_itself(registry_host: str, config: _HostConfig) -> bool:
    """A ``[host]`` entry naming the registry itself is not a mirror (containerd 1.x needs one)."""
    return config.netloc == registry_host or dockerhub.is_hub_api(registry_host, config.netloc)


def _to_endpoint(registry_host: str, config: _HostConfig, config_file: str) -> Endpoint:
    scheme: Literal["http", "https"] = "http" if config.scheme == "http" else "https"
    try:
        host, port = hostport.split(config.netloc, 80 if scheme == "http" else 443)
    except ValueError as exc:
        raise HostsConfigError(config_file or registry_host, str(exc)) from exc
    return Endpoint(
        url=f"{scheme}://{config.netloc}{config.path}",
        scheme=scheme,
        host=host,
        port=port,
        path=config.path,
        role="mirror"
        if config.role == "mirror" and not _is_registry_itself(registry_host, config)
        else "upstream",
        capabilities=config.capabilities,
        ca_files=config.ca_files,
        client_certs=config.client_certs,
        skip_verify=config.skip_verify,
        http_fallback=config.http_fallback,
        override_path=config.override_path,
        namespace=registry_host if _is_proxy(registry_host, config.netloc) else "",
        config_file=config_file,
    )


def _is_proxy(registry_host: str, netloc: str) -> bool:
    """containerd's ``isProxy``: a different host serves this registry (so send ``?ns=``)."""
    return registry_host != netloc and not dockerhub.is_hub_api(registry_host, netloc)


def _host_and_port(netloc: str) -> tuple[str, str]:
    """containerd splits with Go's ``net.SplitHostPort``; where it fails: (``netloc``, ``""``)."""
    return hostport.split_go(netloc) or (netloc, "")
