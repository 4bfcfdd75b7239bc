"""resolv.conf and hosts-file parsing with the Go resolver's rules (what containerd uses)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ResolvConf", "hosts_file_lookup", "parse_resolv_conf", "search_names"]

_MAX_NAMESERVERS = 3  # Go and glibc use the first three


@dataclass
class ResolvConf:
    path: str
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    timeout: float = 5.0  # seconds per query
    attempts: int = 2
    rotate: bool = False
    error: str = ""  # set when the file could not be read


def parse_resolv_conf(path: str) -> ResolvConf:
    """Parse ``path`` like Go's ``dnsReadConfig``: nameserver (IP only, first three), domain,
    search (last wins), options ndots (≤15), timeout (1-30 s), attempts (1-5), rotate."""
    conf = ResolvConf(path=path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        conf.error = f"cannot read {path}: {exc.strerror or exc}"
        return conf
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        fields = line.split()
        if len(fields) < 2:
            continue
        key, args = fields[0], fields[1:]
        if key == "nameserver":
            if len(conf.nameservers) < _MAX_NAMESERVERS and _is_ip(args[0]):
                conf.nameservers.append(args[0])
        elif key == "domain":
            conf.search = [_fqdn(args[0])]
        elif key == "search":
            conf.search = [_fqdn(s) for s in args if s != "."]
        elif key == "options":
            for option in args:
                _apply_option(conf, option)
    return conf


def _apply_option(conf: ResolvConf, option: str) -> None:
    name, _, value = option.partition(":")
    try:
        number = int(value) if value else None
    except ValueError:
        number = None
    if name == "ndots" and number is not None:
        conf.ndots = max(0, min(number, 15))
    elif name == "timeout" and number is not None:
        conf.timeout = float(max(1, min(number, 30)))
    elif name == "attempts" and number is not None:
        conf.attempts = max(1, min(number, 5))
    elif name == "rotate":
        conf.rotate = True


def search_names(name: str, conf: ResolvConf) -> list[str]:
    """The absolute names to query for ``name``, in order (Go's ``nameList``)."""
    if name.endswith("."):
        return [name]
    has_ndots = name.count(".") >= conf.ndots
    names = [name + "."] if has_ndots else []
    names.extend(f"{name}.{suffix}" for suffix in conf.search)
    if not has_ndots:
        names.append(name + ".")
    return names


def hosts_file_lookup(path: str, name: str) -> list[str]:
    """Addresses for ``name`` in a hosts file, in file order; [] when absent or unreadable."""
    wanted = name.lower().rstrip(".")
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = fields[0].split("%", 1)[0]
        if not _is_ip(address):
            continue
        if any(alias.lower().rstrip(".") == wanted for alias in fields[1:]):
            normalised = str(ipaddress.ip_address(address))
            if normalised not in found:
                found.append(normalised)
    return found


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."
