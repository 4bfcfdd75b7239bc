"""Human output of the CLI: short successes, full failures, nothing cut, nothing raw, words."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
from pathlib import Path

import click
import pytest
from rich.console import Console

from agent.cli import _render, cli, main
from agent.cli._interrupt import run_interruptible
from agent.cli.cluster import render_connectivity
from agent.cli.prepull import render_job
from agent.cluster.models import ConnectivityMatrix
from agent.cluster.prepull.models import JobStatus, NodeImageStatus
from agent.cluster.prepull.models import Phase as PrepullPhase
from agent.models import (
    Cause,
    Endpoint,
    EndpointReport,
    Finding,
    ImageResult,
    ManifestEvidence,
    Phase,
    ProbeReport,
    ProbeResult,
    PullTestResult,
    RuntimeInfo,
)

REF = "plain.pullcheck.test:15000/pullcheck/good:1.0"
DIGEST = "sha256:" + "5e" * 32
MIRROR = "http://refused.pullcheck.test:15098/v2"
UPSTREAM = "http://plain.pullcheck.test:15000/v2"
LONG_IMAGE = "plain.pullcheck.test:15000/" + "/".join(["a-rather-long-path-segment"] * 6) + ":1.0"


def _endpoint(url: str, role: str, ok: bool) -> EndpointReport:
    host_port = url.split("//")[1].split("/")[0]
    host, port = host_port.split(":")
    manifest = ProbeResult(
        probe="manifest",
        target=f"{url}/pullcheck/good/manifests/1.0",
        success=ok,
        duration_ms=4.5,
        evidence=ManifestEvidence(
            url=f"{url}/pullcheck/good/manifests/1.0", status=200, digest=DIGEST
        )
        if ok
        else None,
        error="" if ok else f"TCP connect to {host_port} refused",
    )
    return EndpointReport(
        endpoint=Endpoint(url=url, scheme="http", host=host, port=int(port), role=role),  # type: ignore[arg-type]
        success=ok,
        cause=None if ok else Cause.CONNECTION_REFUSED,
        summary="" if ok else f"TCP connect to {host_port} refused",
        duration_ms=7.9,
        probes=[manifest],
    )


def _result(**changes: object) -> PullTestResult:
    base = PullTestResult(
        pullcheck_version="0.1.0",
        node="node-1",
        image=REF,
        reference=REF,
        mode="pull",
        success=True,
        summary=f"pulled {REF} ({DIGEST}) via {UPSTREAM}",
        started_at="2026-01-01T00:00:00.000+00:00",
        duration_ms=88.3,
        phases=[
            Phase(name="parse", ok=True, duration_ms=0.1, detail=REF),
            Phase(name="pull", ok=True, duration_ms=64.3, detail="anonymous"),
            Phase(
                name="probe",
                ok=True,
                duration_ms=79.3,
                detail=f"{MIRROR} connection_refused, {UPSTREAM} ok",
            ),
        ],
        runtime=RuntimeInfo(
            endpoint="unix:///run/c.sock", api_version="v1", runtime_name="containerd"
        ),
        image_info=ImageResult(
            present_before=False,
            image_id="sha256:" + "61" * 32,
            repo_digest=f"plain.pullcheck.test:15000/pullcheck/good@{DIGEST}",
            size_bytes=1_572_864,
            removed=True,
        ),
        endpoints=[_endpoint(MIRROR, "mirror", False), _endpoint(UPSTREAM, "upstream", True)],
        findings=[
            Finding(
                cause=Cause.CONNECTION_REFUSED,
                summary="TCP connect to refused.pullcheck.test:15098 refused",
                endpoint=MIRROR,
            )
        ],
    )
    return base.model_copy(update=changes)


def _failed(**changes: object) -> PullTestResult:
    failure: dict[str, object] = {
        "success": False,
        "cause": Cause.TIMEOUT,
        "summary": "TLS handshake with blackhole.pullcheck.test:15099 timed out",
        "remedy": "allow egress to blackhole.pullcheck.test:15099",
        "runtime_error": "Deadline Exceeded",
        "image_info": ImageResult(present_before=False),
    }
    return _result(**{**failure, **changes})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- text from input or the network --------------------------------------------------------


def test_control_characters_and_markup_are_escaped() -> None:
    assert _render.printable("plain text: ok") == "plain text: ok"
    assert _render.printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert _render.printable("a\nb\rc\x00\x7f\x9b") == "a\\x0ab\\x0dc\\x00\\x7f\\x9b"
    assert _render.printable("evil\u202etxt.exe") == "evil\\u202etxt.exe"  # a bidi override
    assert _render.clean("[bold]not markup[/]") == "\\[bold]not markup\\[/]"
    assert _render.cell("\x1b]0;title\x07").plain == "\\x1b]0;title\\x07"


def test_hostile_names_and_errors_reach_the_report_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = "evil\x1b[2J/[red]x[/red]:1"
    _render.render_pull(
        _failed(image=image, reference="", runtime_error="boom\x1b]0;pwned\x07", node="n\r\x1b[1A")
    )
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "evil\\x1b[2J/[red]x[/red]:1" in out  # shown literally, markup not interpreted
    assert "boom\\x1b]0;pwned\\x07" in out and "n\\x0d\\x1b[1A" in out


# --- pull and probe ------------------------------------------------------------------------


def test_a_successful_pull_is_two_lines_plus_findings(capsys: pytest.CaptureFixture[str]) -> None:
    _render.render_pull(_result())
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 3, lines
    first, second, finding = lines
    assert first.startswith(f"OK  pulled {REF} via {UPSTREAM} in 88.3 ms")
    assert DIGEST in second and "1.5 MiB" in second and "removed after the test" in second
    assert finding == (
        f"also found: connection_refused at {MIRROR}: "
        "TCP connect to refused.pullcheck.test:15098 refused"
    )
    assert not any("phases" in line for line in lines)


def test_an_image_already_present_reads_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    info = ImageResult(present_before=True, image_id="sha256:" + "61" * 32, size_bytes=10)
    _render.render_pull(_result(image_info=info, findings=[], warnings=["a note"]))
    lines = _lines(capsys.readouterr().out)
    assert lines[0].startswith(f"OK  image is up to date for {REF}")
    assert "kept (present before)" in lines[1] and lines[2] == "warning a note"


def test_a_resolve_names_the_digest_and_downloads_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _render.render_pull(_result(mode="resolve", image_info=ImageResult(present_before=False)))
    lines = _lines(capsys.readouterr().out)
    assert lines[0].startswith(f"OK  resolved {REF} to {DIGEST} via {UPSTREAM}")
    assert lines[1].strip() == "no layers downloaded; the image is not on the node"


def test_a_failure_shows_verdict_tables_and_each_endpoint_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _render.render_pull(_failed())
    out = capsys.readouterr().out
    assert "FAILED  cause: timeout" in out and "remedy  allow egress" in out
    assert "runtime Deadline Exceeded" in out and "present before: no" in out
    assert "phases" in out and "endpoints (in the order the runtime tries them)" in out
    assert out.count(UPSTREAM + " ") + out.count(UPSTREAM + "\n") == 1  # not in the phase table
    assert f"also found: connection_refused at {MIRROR}" in out
    assert "total 88.3 ms" in out


def test_verbose_shows_the_tables_for_a_success(capsys: pytest.CaptureFixture[str]) -> None:
    _render.render_pull(_result(), verbose=True)
    out = capsys.readouterr().out
    assert f"OK  pulled {REF}" in out and "phases" in out and "endpoints" in out
    assert "node node-1" in out


def test_probe_success_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    report = ProbeReport(
        pullcheck_version="0.1.0",
        node="n",
        target=REF,
        registry="plain.pullcheck.test:15000",
        reference=REF,
        success=True,
        started_at="2026-01-01T00:00:00.000+00:00",
        duration_ms=12.0,
        endpoints=[_endpoint(UPSTREAM, "upstream", True)],
    )
    _render.render_probe(report)
    lines = _lines(capsys.readouterr().out)
    assert lines == [
        f"OK  plain.pullcheck.test:15000 reachable via {UPSTREAM}; {REF} is {DIGEST} in 12.0 ms"
    ]
    _render.render_probe(report, verbose=True)
    assert "endpoints" in capsys.readouterr().out


# --- tables ---------------------------------------------------------------------------------


def _job_body(running: bool) -> JobStatus:
    return JobStatus(
        name="warm-lab",
        schedule="0 3 * * *",
        timezone="UTC",
        on_new_node=False,
        policy="IfNotPresent",
        running=running,
        images_total=1,
        images_ready=1,
        nodes=[
            NodeImageStatus(
                node="node-1", image=LONG_IMAGE, phase=PrepullPhase.DONE, attempts=1, digest=DIGEST
            )
        ],
    )


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    render_job(_job_body(running=False))
    out = capsys.readouterr().out
    assert LONG_IMAGE in out and "…" not in out
    row = next(line for line in out.splitlines() if line.startswith("node-1"))
    assert LONG_IMAGE in row  # one row per line: greppable


def test_tables_fold_rather_than_cut_on_a_narrow_terminal() -> None:
    grid = _render.table("NODE", "IMAGE")
    grid.add_row(_render.cell("node-1"), _render.cell(LONG_IMAGE))
    buffer = io.StringIO()
    Console(file=buffer, width=40, force_terminal=True, color_system=None).print(grid)
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 40
    assert LONG_IMAGE.replace("/", "") in "".join(text.split()).replace("/", "")


def test_booleans_print_as_words(capsys: pytest.CaptureFixture[str]) -> None:
    render_job(_job_body(running=False))
    render_job(_job_body(running=True))
    out = capsys.readouterr().out
    assert "running: no" in out and "running: yes" in out
    assert "False" not in out and "True" not in out


def _matrix(failing: bool) -> ConnectivityMatrix:
    """The shape of the aggregator's GET /v1/connectivity (``connectivity_matrix``)."""
    cells = {UPSTREAM: {"success": True, "cause": None, "summary": ""}}
    if failing:
        cells[MIRROR] = {
            "success": False,
            "cause": "connection_refused",
            "summary": "refused\x1b[0m",
        }
    rows: list[dict[str, object]] = [{"node": "node-1", "reachable": True, "cells": cells}]
    if failing:
        rows.append(
            {
                "node": "node-down",
                "reachable": False,
                "cause": "agent_unreachable",
                "summary": "ConnectError: [Errno 111] Connection refused",
                "remedy": "",
                "status": None,
            }
        )
    return ConnectivityMatrix.model_validate(
        {
            "columns": [
                {"registry": "plain", "url": url, "role": role}
                for url, role in ((MIRROR, "mirror"), (UPSTREAM, "upstream"))
                if failing or role == "upstream"
            ],
            "rows": rows,
            "summary": {"nodes": len(rows), "unreachable": [], "failing": {}},
        }
    )


def test_connectivity_matrix_lists_every_node_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert render_connectivity(_matrix(failing=True)) is False
    out = capsys.readouterr().out
    assert f"{UPSTREAM} (upstream)" in out and f"{MIRROR} (mirror)" in out
    assert f"node-1: {MIRROR}: connection_refused: refused\\x1b[0m" in out
    assert "node-down: agent_unreachable: ConnectError: [Errno 111] Connection refused" in out
    assert render_connectivity(_matrix(failing=False)) is True
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("node-1"))
    assert row.split() == ["node-1", "ok"]


# --- usage errors ---------------------------------------------------------------------------


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main(argv)
    assert isinstance(exited.value.code, int)
    return exited.value.code, out.getvalue(), err.getvalue()


def _groups() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    ctx = click.Context(cli)  # lazy groups: list and load through click's API
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths += [(name, sub) for sub in command.list_commands(ctx)]
    return paths


@pytest.mark.parametrize("path", _groups(), ids=" ".join)
def test_usage_errors_name_the_whole_command(path: tuple[str, ...]) -> None:
    where = "pullcheck " + " ".join(path)
    code, _, err = _main([*path, "--bad"])
    assert code == 2 and err.startswith(f"{where}: error: ") and "--bad" in err
    assert f"Try '{where} --help'." in err
    code, out, _ = _main([*path, "--bad", "--json"])
    message = json.loads(out)["message"]
    assert code == 2 and message.startswith(f"{where}: ") and "--bad" in message


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (b"", "expected one token"),
        (b"x" * 20_000, "expected one token"),
        (b"secret-\x1b[2J-token", "characters a header cannot hold"),
        ("s\u00e9cret-token".encode(), "characters a header cannot hold"),
    ],
)
def test_a_bad_token_file_is_a_usage_error_that_never_shows_the_token(
    tmp_path: Path, token: bytes, why: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(token)
    code, out, _ = _main(["cluster", "connectivity", "--token-file", str(path), "--json"])
    body = json.loads(out)
    assert code == 2 and body["error"] == "usage" and why in body["message"]
    assert "secret" not in out and str(path) in body["message"]


def test_a_bad_aggregator_url_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t0ken\n")
    for url in ("ftp://aggregator:8480", "http://", "not a url"):
        code, _, err = _main(["cluster", "pull", "x", "--url", url, "--token-file", str(path)])
        assert code == 2 and "expected http(s)://HOST[:PORT]" in err, err
    missing = str(path) + ".missing"
    code, _, err = _main(["prepull", "jobs", "--token-file", missing])
    assert code == 2 and f"token file {missing}: No such file" in err


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_the_first_ctrl_c_cancels_the_work_which_still_returns_its_result() -> None:
    async def work() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "what was gathered so far"
        return "finished"

    assert run_interruptible(work()) == ("what was gathered so far", True)

    async def quick() -> str:
        return "finished"

    assert run_interruptible(quick()) == ("finished", False)


def test_work_that_does_not_catch_the_cancellation_aborts_with_keyboard_interrupt() -> None:
    async def work() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(30)

    with pytest.raises(KeyboardInterrupt):
        run_interruptible(work())
