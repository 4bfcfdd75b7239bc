"""Schemathesis against the served OpenAPI schemas: no input yields a 500, every answer is one
the schema documents (status, content type, headers, body), and the token is never ignored."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, merge, server

pytestmark = pytest.mark.lab

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",  # the same request without the token must be refused
    "unsupported_method",  # a method the schema does not list gets 405
)


@pytest.fixture(scope="module")
def agent(lab: LabInfo, workdir: Path) -> Iterator[Server]:
    # short test deadlines so fuzzed pull tests of allowed lab images stay quick
    config = agent_config(lab, workdir / "token", lab.endpoint, limits={"max_timeout": 20})
    with server("agent", config, workdir, node="fuzzed") as srv:
        yield srv


def _schemathesis(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe is not None, "schemathesis is a dev dependency: pip install -e .[dev]"
    return subprocess.run(
        [
            exe,
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "60",
            "--report-dir",
            str(workdir / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=workdir,
    )


def test_agent_never_answers_500(agent: Server, workdir: Path) -> None:
    run = _schemathesis(agent.url, workdir)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "/v1/pulltest" in run.stdout


def test_aggregator_never_answers_500(agent: Server, lab: LabInfo, workdir: Path) -> None:
    config = merge(
        agent_config(lab, workdir / "token", lab.endpoint, limits={"max_timeout": 20}),
        {
            "aggregator": {
                "node_timeout": 30,
                "discovery": {
                    "mode": "static",
                    "agents": [f"fuzzed={agent.url.removeprefix('http://')}"],
                },
            }
        },
    )
    with server("aggregator", config, workdir, name="fuzz-agg") as agg:
        run = _schemathesis(agg.url, workdir)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "/v1/pulltest" in run.stdout
