"""``python -m lab verify``'s expectations: per-runtime alternatives and the target's resolver."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import verify
from lab.errors import LabError
from lab.info import LabInfo

_CASES = {c.name: c for c in verify.CASES}


def _result(name: str, code: str, message: str, runtime: str, dns: str = "") -> verify.Result:
    case = _CASES[name]
    return verify.Result(case, "ref", code, message, 0.0, runtime, dns)


def test_a_newer_runtime_is_held_to_its_own_wording() -> None:
    v16 = "failed to fetch anonymous token: unexpected status: 503 Service Temporarily Unavailable"
    v2 = (
        "failed to fetch anonymous token: unexpected status from GET request to "
        "http://token-down.pullcheck.test:15080/token?scope=repository%3Apullcheck%2Fgood%3Apull"
        "&service=token-down.pullcheck.test%3A15080: 503 Service Temporarily Unavailable"
    )
    assert _result("token_unavailable", "UNKNOWN", v16, "1.6").passed
    assert _result("token_unavailable", "UNKNOWN", v2, "2").passed
    assert not _result("token_unavailable", "UNKNOWN", v16, "2").passed  # not the old text
    assert not _result("token_unavailable", "UNKNOWN", v2, "1.6").passed
    assert not _result("token_unavailable", "NOT_FOUND", v2, "1.7").passed  # the code counts


def test_a_case_without_alternatives_holds_on_every_runtime() -> None:
    text = 'failed to do request: Head "https://x/v2/": net/http: TLS handshake timeout'
    for runtime in ("1.6", "1.7", "2"):
        assert _result("blackhole", "UNKNOWN", text, runtime).passed
        assert not _result("blackhole", "OK", "sha256:0", runtime).passed
    assert _result("good", "OK", "sha256:0", "2").passed
    assert not _result("good", "UNKNOWN", "failed", "2").passed


def test_the_resolver_in_an_expectation_is_the_targets() -> None:
    text = "dial tcp: lookup nxdomain.pullcheck.test on 10.99.0.1:53: no such host"
    assert _result("nxdomain", "UNKNOWN", text, "1.7", "10.99.0.1:53").passed
    assert not _result("nxdomain", "UNKNOWN", text, "1.6", "127.0.53.1:53").passed
    assert _result("nxdomain", "UNKNOWN", text, "1.7", "10.99.0.1:53").expected == (
        "lookup nxdomain.pullcheck.test on 10.99.0.1:53: no such host",
        "UNKNOWN",
    )


def test_case_names_are_unique_and_alternatives_name_known_runtimes() -> None:
    assert len(_CASES) == len(verify.CASES)
    for case in verify.CASES:
        assert set(case.by_runtime) <= set(verify.NEWER), case.name


def test_no_node_on_the_runtime_is_a_clear_error(tmp_path: Path) -> None:
    info = LabInfo(str(tmp_path), "unix:///none", "", "", "", "127.0.53.1", "")
    with pytest.raises(
        LabError, match=r"no lab node without faults runs containerd 2; .*--runtime 2"
    ):
        verify.node_target(info, "2")
    with pytest.raises(LabError, match="unknown containerd runtime '3'"):
        verify.node_target(info, "3")
