"""``pullcheck pull`` prints the words of the runtime's error that decided the cause."""

from __future__ import annotations

import pytest

from agent.cli import _render
from agent.diagnosis import diagnose
from agent.models import Cause, PullTestResult

TEXT = (
    'failed to pull and unpack image "r.test/a:1": failed to copy: read tcp 10.0.0.1:1->'
    "10.0.0.2:443: read: connection reset by peer"
)


def test_the_pull_test_result_carries_and_prints_the_deciding_fragment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = diagnose(image="r.test/a:1", runtime_error=TEXT, grpc_code="UNKNOWN", reports=[])
    assert found is not None and found.cause is Cause.CONNECTION_RESET
    assert found.fragment.endswith("connection reset by peer")
    result = PullTestResult(
        pullcheck_version="0.1.0",
        node="node-1",
        image="r.test/a:1",
        reference="r.test/a:1",
        mode="pull",
        success=False,
        cause=found.cause,
        summary=found.summary,
        remedy=found.remedy,
        runtime_error=TEXT,
        deciding_fragment=found.fragment,
        started_at="2026-01-01T00:00:00.000+00:00",
        duration_ms=1.0,
    )
    _render.render_pull(result)
    out = capsys.readouterr().out
    assert "decided by" in out and "connection reset by peer…" in out
