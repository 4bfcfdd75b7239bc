"""agent.hostport: the one host:port helper (strict split/join, and Go's SplitHostPort)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.hostport import InvalidHostPort, bracket, join, split, split_go


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("a.example:5000", 443, ("a.example", 5000)),
        ("a.example", 443, ("a.example", 443)),
        ("[::1]:5000", 443, ("::1", 5000)),
        ("[fe80::1]", 80, ("fe80::1", 80)),
        ("::1", 80, ("::1", 80)),  # a bare IPv6 literal carries no port
        ("0.0.0.0:8479", None, ("0.0.0.0", 8479)),
        ("[::]:8480", None, ("::", 8480)),
        (":8480", None, ("", 8480)),
        ("h:65535", None, ("h", 65535)),
    ],
)
def test_split(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split(text, default) == expected


def test_split_host_port() -> None:
    """Moved from test_hosts.py with agent.hosts.split_host_port (now :func:`split`)."""
    assert split("a.example:5000", 443) == ("a.example", 5000)
    assert split("a.example", 443) == ("a.example", 443)
    assert split("[::1]:5000", 443) == ("::1", 5000)
    assert split("[fe80::1]", 80) == ("fe80::1", 80)
    with pytest.raises(ValueError):
        split("a.example:http", 443)


@pytest.mark.parametrize(
    ("text", "default", "fragment"),
    [
        ("a.example:http", 443, "invalid port in 'a.example:http'"),
        ("a.example:0", 443, "invalid port"),
        ("a.example:65536", 443, "invalid port"),
        ("a.example:-1", 443, "invalid port"),
        ("a.example:", 443, "invalid port"),
        ("[::1", 443, "missing ']'"),
        ("[::1]x", 443, "invalid host '[::1]x'"),
        ("a.example", None, "missing port in 'a.example'"),
        ("::1:8080", None, "missing port"),  # unbracketed IPv6 with a port: ambiguous
        ("a:99999999999999999999", None, "invalid port"),
    ],
)
def test_split_rejects_with_a_clear_message(text: str, default: int | None, fragment: str) -> None:
    with pytest.raises(InvalidHostPort, match=fragment.replace("[", r"\[")):
        split(text, default)


def test_join_and_bracket() -> None:
    assert join("a.example", 80) == "a.example:80"
    assert join("::1", "5000") == "[::1]:5000"
    assert join("fe80::1%eth0", 80) == "[fe80::1%eth0]:80"
    assert join("fe80::1%eth0", 80, in_url=True) == "[fe80::1%25eth0]:80"  # RFC 6874
    assert bracket("10.0.0.1") == "10.0.0.1" and bracket("::1") == "[::1]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:5000", ("localhost", "5000")),
        ("[::1]:5000", ("::1", "5000")),
        ("[::1%lo]:5000", ("::1%lo", "5000")),
        ("host:", ("host", "")),  # Go: an empty port is no error
        ("host:99999", ("host", "99999")),  # nor is a port out of range
        ("localhost", None),  # missing port
        ("[::1]", None),
        ("::1", None),  # too many colons
        ("a:b:c", None),
        ("[a]b:80", None),
        ("a]:80", None),
        ("[a:80", None),
        ("", None),
    ],
)
def test_split_go_is_net_split_host_port(text: str, expected: tuple[str, str] | None) -> None:
    assert split_go(text) == expected


_labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_hosts = st.one_of(
    st.lists(_labels, min_size=1, max_size=4).map(".".join),
    st.ip_addresses().map(str),
)


@given(host=_hosts, port=st.integers(1, 65535))
def test_join_then_split_round_trips(host: str, port: int) -> None:
    text = join(host, port)
    assert split(text) == (host, port)
    assert split(text, 443) == (host, port)
    assert split_go(text) == (host, str(port))
    if isinstance(ipaddress.ip_address(host) if ":" in host else None, ipaddress.IPv6Address):
        assert text.startswith("[")
