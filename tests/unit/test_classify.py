"""The text classifier over the corpus of real error texts (tests/unit/data/real_errors.toml).

Every case, dev and heldout, is asserted. The texts the classifier still gets wrong are listed
once, in KNOWN_MISSES, with why; each is asserted to still give the documented wrong cause, so
the list stays honest (a fix makes its test fail until the entry is removed).
"""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from agent.causes import Cause
from agent.classify import classify, normalize
from agent.explain import explain

CORPUS = tomllib.loads((Path(__file__).parent / "data" / "real_errors.toml").read_text())["case"]

#: id -> (the cause given today, why it differs from the label)
KNOWN_MISSES: dict[str, tuple[Cause, str]] = {
    "crio-hub-denied-unauthorized-missing-repo": (
        Cause.UNAUTHORIZED,
        "Docker Hub answers 'denied … authentication required' for a missing repository and "
        "for a private one; only the thread's resolution (crio/busybox does not exist) tells",
    ),
    "k9s-pull-denied-wrong-org": (
        Cause.UNAUTHORIZED,
        "Hub's ambiguous 'pull access denied' for pf/…, a wrong organisation: missing or private "
        "cannot be told from the text",
    ),
    "eks-dockershim-local-image-pull-denied": (
        Cause.UNAUTHORIZED,
        "Hub's ambiguous 'pull access denied' for local/dummy, a name outside the official "
        "library/ namespace: missing or private cannot be told from the text",
    ),
}


def _cause(text: str) -> Cause:
    """The cause explain gives a pasted text: its first explained finding's (a corpus text is
    about one failure), unknown when it explains none."""
    findings = explain(text).findings
    assert findings, "no pull error found"
    known = [f.cause for f in findings if f.cause is not Cause.UNKNOWN]
    return known[0] if known else Cause.UNKNOWN


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_real_text(case: dict[str, str]) -> None:
    got = _cause(case["text"])
    if case["id"] in KNOWN_MISSES:
        assert got is KNOWN_MISSES[case["id"]][0], "a known miss changed: update KNOWN_MISSES"
    else:
        assert got is Cause(case["cause"]), case.get("note", "")


def test_known_misses_are_corpus_cases() -> None:
    assert set(KNOWN_MISSES) <= {c["id"] for c in CORPUS}


def test_accuracy_per_split() -> None:
    """≥ 95 % over the corpus and on the held-out split (the figures in docs/explain.md)."""
    total: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for case in CORPUS:
        total[case["split"]] += 1
        right[case["split"]] += _cause(case["text"]) is Cause(case["cause"])
    assert sum(right.values()) / sum(total.values()) >= 0.95
    assert right["heldout"] / total["heldout"] >= 0.9


def test_every_cause_has_real_texts() -> None:
    labelled = {Cause(c["cause"]) for c in CORPUS}
    assert labelled == set(Cause), set(Cause) - labelled


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        # the quoted image name never decides
        (
            'Failed to pull image "r.example/denied/x509:1": r.example/denied/x509:1: not found',
            "manifest_not_found",
        ),
        # the innermost failure wins over wrappers
        (
            "(HTTP code 500) server error - failed to fetch oauth token: 401 Unauthorized",
            "unauthorized",
        ),
        (
            "API error (500): Get https://r.example/v2/: dial tcp 10.0.0.1:443: i/o timeout",
            "timeout",
        ),
        # DNS context wins over socket words
        (
            "dial tcp: lookup r.example on [::1]:53: read udp [::1]:1->[::1]:53: read: "
            "connection refused",
            "dns_failure",
        ),
        # kubelet's one error per credential: the attempt that got furthest decides
        (
            "[rpc error: code = NotFound desc = r.example/a:1: not found, "
            "rpc error: code = Unknown desc = 401 Unauthorized]",
            "manifest_not_found",
        ),
        (
            "failed to copy: read tcp 10.0.0.1:1->10.0.0.2:443: read: connection reset by peer",
            "connection_reset",
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", "registry_error"),
        ("Requesting bearer token: invalid status code from registry 403 (Forbidden)", "forbidden"),
        ("pull QPS exceeded", "rate_limited"),
        ('Back-off pulling image "nginx"', "unknown"),
    ],
)
def test_rules_follow_message_structure(text: str, cause: str) -> None:
    assert classify(text).cause is Cause(cause)


def test_escaped_quotes_and_wraps_are_undone() -> None:
    assert normalize('err="a \\"b\\"\n   c"') == 'err="a "b" c"'


def test_variant_names_the_mechanism() -> None:
    short = classify('short-name "busybox:latest" did not resolve to an alias')
    assert (short.cause, short.variant) == (Cause.INVALID_REFERENCE, "short_name")
    qps = classify("pull QPS exceeded")
    assert (qps.cause, qps.variant) == (Cause.RATE_LIMITED, "kubelet_qps")
    policy = classify("Source image rejected: A signature was required, but no signature exists")
    assert (policy.cause, policy.variant) == (Cause.FORBIDDEN, "signature_policy")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Socket closed", "UNAVAILABLE"),  # grpcio, the runtime killed mid-PullImage
        ("recvmsg:Connection reset by peer", "UNAVAILABLE"),
        ("rpc error: code = Unavailable desc = error reading from server: EOF", None),  # kubelet
        (
            'rpc error: code = Unavailable desc = connection error: desc = "transport is closing"',
            None,
        ),
    ],
)
def test_a_runtime_lost_mid_call_is_named_as_such(text: str, code: str | None) -> None:
    verdict = classify(text, code)
    assert (verdict.cause, verdict.variant) == (Cause.RUNTIME_UNAVAILABLE, "runtime_lost")


def test_a_runtime_never_reached_and_a_registry_reset_are_not_a_lost_runtime() -> None:
    dial = classify(
        'rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
        'dialing dial unix /run/containerd/containerd.sock: connect: no such file or directory"'
    )
    assert (dial.cause, dial.variant) == (Cause.RUNTIME_UNAVAILABLE, "")
    reset = classify(
        'failed to pull and unpack image "r.example/a:1": failed to copy: read tcp '
        "10.0.0.1:1->10.0.0.2:443: read: connection reset by peer",
        "UNKNOWN",
    )
    assert (reset.cause, reset.variant) == (Cause.CONNECTION_RESET, "")


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        ("503 Service Temporarily Unavailable", Cause.REGISTRY_ERROR),  # nginx's phrase
        ("504 Gateway Time-out", Cause.REGISTRY_ERROR),
        ("429 Slow Down", Cause.RATE_LIMITED),  # a phrase no rule knows: the code decides
        ("401 Authorization Required", Cause.UNAUTHORIZED),
    ],
)
def test_containerd_16_status_form_decides_by_code_not_phrase(status: str, cause: Cause) -> None:
    """1.6's resolve-stage form puts ``[manifests <tag>]`` between "status code" and the code."""
    text = (
        'failed to pull and unpack image "r.example:5000/a/b:1.0": failed to resolve reference '
        '"r.example:5000/a/b:1.0": pulling from host r.example:5000 failed with status code '
        f"[manifests 1.0]: {status}"
    )
    assert classify(text, "UNKNOWN").cause is cause
