"""Pure helpers of the probes: WWW-Authenticate, error bodies, resolv.conf, URLs (their redaction
is tested in test_redaction.py)."""

from __future__ import annotations

import errno
import ssl
from pathlib import Path

import httpx
import pytest

from agent import hostport
from agent.models import Cause
from agent.probes._addresses import url_for
from agent.probes._classify import classify
from agent.probes._parse import (
    error_codes,
    error_summary,
    parse_www_authenticate,
    select_challenge,
    status_text,
)
from agent.probes._resolvconf import hosts_file_lookup, parse_resolv_conf, search_names
from agent.probes._transport import UnresolvedHostError
from tests.unit.test_probes_support import endpoint

# --- WWW-Authenticate --------------------------------------------------------------------------


def test_bearer_challenge_docker_hub_style() -> None:
    [c] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert c.is_bearer and not c.is_basic
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scope == "repository:samalba/my-app:pull,push"  # quoted comma kept


def test_basic_challenge_with_comma_and_escaped_quote() -> None:
    [c] = parse_www_authenticate(r'Basic realm="Registry, \"Realm\""')
    assert c.is_basic and c.realm == 'Registry, "Realm"'


def test_several_challenges_and_lists() -> None:
    challenges = parse_www_authenticate(
        [
            'Negotiate abc123==, Basic realm="r1"',
            'bearer realm="https://t/x", error="insufficient_scope"',
        ]
    )
    assert [c.scheme for c in challenges] == ["Negotiate", "Basic", "bearer"]
    assert challenges[0].token68 == "abc123=="
    assert challenges[2].error == "insufficient_scope"
    assert select_challenge(challenges) is challenges[1]  # first Bearer or Basic, in order


def test_unquoted_values_spaces_and_case() -> None:
    [c] = parse_www_authenticate(
        "Bearer  Realm = https://a/token , Service=svc,scope=repository:a/b:pull"
    )
    assert c.realm == "https://a/token" and c.service == "svc" and c.scope == "repository:a/b:pull"


def test_bare_scheme_and_junk() -> None:
    assert [c.scheme for c in parse_www_authenticate("Basic")] == ["Basic"]
    assert parse_www_authenticate("") == []
    junk = parse_www_authenticate('@@ Bearer realm="x"')
    assert [c.scheme for c in junk] == ["Bearer"] and junk[0].realm == "x"
    assert select_challenge(parse_www_authenticate("Negotiate x")) is None


# --- error bodies and status text --------------------------------------------------------------


def test_error_codes_distribution_format() -> None:
    body = (
        b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."},'
        b'{"code":"DENIED","message":"no"}]}'
    )
    codes = error_codes(body)
    assert codes == [
        ("TOOMANYREQUESTS", "You have reached your pull rate limit."),
        ("DENIED", "no"),
    ]
    assert (
        error_summary(codes)
        == "toomanyrequests: You have reached your pull rate limit.; denied: no"
    )
    assert error_summary([("NAME_UNKNOWN", "")]) == "name unknown"


def test_error_codes_token_server_and_garbage() -> None:
    assert error_codes(b'{"details":"incorrect username or password"}') == [
        ("", "incorrect username or password")
    ]
    assert error_codes(b"<html>nope</html>") == []
    assert error_codes(b"[1,2]") == []
    assert error_codes(b"") == []


def test_status_text() -> None:
    assert status_text(429) == "429 Too Many Requests"
    assert status_text(401) == "401 Unauthorized"
    assert status_text(599) == "599"


# --- resolv.conf and hosts ---------------------------------------------------------------------


def test_resolv_conf_go_rules(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# comment\nnameserver 127.0.53.1\nnameserver not-an-ip\nnameserver ::1\n"
        "nameserver 127.0.0.2\nnameserver 127.0.0.3\n"
        "search a.test b.test\noptions ndots:3 timeout:0 attempts:9 rotate\n"
    )
    conf = parse_resolv_conf(str(path))
    assert conf.nameservers == ["127.0.53.1", "::1", "127.0.0.2"]  # first three IPs
    assert conf.search == ["a.test.", "b.test."]
    assert (conf.ndots, conf.timeout, conf.attempts, conf.rotate) == (3, 1.0, 5, True)
    missing = parse_resolv_conf(str(tmp_path / "nope"))
    assert missing.error.startswith("cannot read") and missing.nameservers == []


def test_search_names_ndots() -> None:
    conf = parse_resolv_conf("/nonexistent")
    conf.search = ["corp.test."]
    assert search_names("registry", conf) == ["registry.corp.test.", "registry."]
    assert search_names("a.b", conf) == ["a.b.", "a.b.corp.test."]
    assert search_names("abs.", conf) == ["abs."]
    conf.ndots = 5
    assert search_names("a.b.c", conf) == ["a.b.c.corp.test.", "a.b.c."]


def test_hosts_file_lookup(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "127.0.0.1 localhost reg.test # comment\n::1 reg.test\n10.0.0.1 other\n"
        "bogus reg.test\n127.0.0.1 REG.TEST\n"
    )
    assert hosts_file_lookup(str(path), "reg.test") == ["127.0.0.1", "::1"]
    assert hosts_file_lookup(str(path), "Reg.Test.") == ["127.0.0.1", "::1"]
    assert hosts_file_lookup(str(path), "absent") == []
    assert hosts_file_lookup(str(tmp_path / "missing"), "reg.test") == []


# --- URLs, classification ----------------------------------------------------------------------


def test_url_for_default_ports_and_ipv6() -> None:
    assert url_for(endpoint("r.test", 443, "https"), "/v2/") == "https://r.test/v2/"
    assert (
        url_for(endpoint("r.test", 5000), "/v2/", "ns=docker.io")
        == "http://r.test:5000/v2/?ns=docker.io"
    )
    assert url_for(endpoint("::1", 5000), "/v2/") == "http://[::1]:5000/v2/"
    assert hostport.join("::1", 80) == "[::1]:80"


def test_classify_chains() -> None:
    refused = httpx.ConnectError("x")
    refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert classify(refused) == (Cause.CONNECTION_REFUSED, "connection refused")
    unreachable = OSError(errno.EHOSTUNREACH, "No route to host")
    assert classify(unreachable)[0] == Cause.CONNECTION_REFUSED
    assert classify(httpx.ReadTimeout("x")) == (Cause.TIMEOUT, "timed out awaiting response")
    assert classify(TimeoutError())[0] == Cause.TIMEOUT
    assert classify(UnresolvedHostError("a.test was not resolved"))[0] == Cause.DNS_FAILURE
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    wrong.reason = "WRONG_VERSION_NUMBER"
    assert classify(wrong)[0] == Cause.HTTP_HTTPS_MISMATCH
    assert classify(httpx.RemoteProtocolError("bad"))[0] == Cause.UNKNOWN


@pytest.mark.parametrize("code", [2, 19, 20])
def test_x509_unknown_authority_text(code: int) -> None:
    from agent.probes._tls_context import x509_text

    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    exc.verify_message = "unable to get local issuer certificate"
    assert x509_text(exc) == (
        "x509: certificate signed by unknown authority (unable to get local issuer certificate)"
    )
