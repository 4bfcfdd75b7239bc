"""The CLI as a user runs it: a subprocess against the lab, exit codes, JSON and human output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.models import Cause, ProbeReport, PullTestResult
from lab.info import LabInfo

pytestmark = pytest.mark.lab


def _env(lab: LabInfo) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRICTL_", "PULLCHECK_"))}
    env.update(lab.env())
    env["COLUMNS"] = "200"
    return env


def pullcheck(
    lab: LabInfo, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**_env(lab), **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_pull_json_is_one_object_and_exit_0(lab: LabInfo) -> None:
    proc = pullcheck(lab, "pull", lab.images["good"], "--json")
    assert proc.returncode == 0, proc.stderr
    result = PullTestResult.model_validate_json(proc.stdout)
    assert result.success and result.mode == "pull"


def test_pull_human_report_shows_cause_summary_remedy_and_phases(lab: LabInfo) -> None:
    proc = pullcheck(lab, "pull", lab.images["refused"])
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAILED" in out and "connection_refused" in out
    assert "remedy" in out and "phases" in out and "refused.pullcheck.test:15098" in out
    assert "pulling" in proc.stderr  # progress went to stderr, not into the report


def test_invalid_reference_exit_2_with_json(lab: LabInfo) -> None:
    proc = pullcheck(lab, "pull", "UPPER/Case:tag", "--json")
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["cause"] == Cause.INVALID_REFERENCE and "lowercase" in result["summary"]


def test_usage_errors_exit_2_and_json_when_asked(lab: LabInfo) -> None:
    proc = pullcheck(lab, "pull", "--mode", "sideways", lab.images["good"], "--json")
    assert proc.returncode == 2
    body = json.loads(proc.stdout)
    assert body["error"] == "usage" and "--mode" in body["message"]
    proc = pullcheck(lab, "pull", lab.images["good"], "--creds", "a:b", "--auth", "YTpi")
    assert proc.returncode == 2 and "both --creds and --auth" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_docker_config_is_a_clear_input_error(lab: LabInfo, tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    proc = pullcheck(lab, "pull", lab.images["good"], "--docker-config", str(bad), "--json")
    assert proc.returncode == 2
    body = json.loads(proc.stdout)
    assert body["error"] == "invalid_input" and str(bad) in body["message"]
    proc = pullcheck(lab, "pull", lab.images["good"], "--docker-config", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_credentials_never_reach_output(lab: LabInfo) -> None:
    secret = "Very-Secret-Passw0rd-42"
    proc = pullcheck(
        lab, "pull", lab.images["private"], "--creds", f"{lab.username}:{secret}", "--json"
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["cause"] == Cause.UNAUTHORIZED
    assert secret not in proc.stdout and secret not in proc.stderr
    proc = pullcheck(
        lab, "pull", lab.images["private"], "--creds", f"{lab.username}:{lab.password}"
    )
    assert proc.returncode == 0, proc.stdout
    assert lab.password not in proc.stdout and lab.password not in proc.stderr


def _interrupted(lab: LabInfo, *args: str) -> tuple[int, str, str]:
    """Ctrl-C (SIGINT) three seconds into a pull from the silent registry."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "pull", lab.images["blackhole"], "--timeout", "120", *args],
        env=_env(lab),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_sigint_cancels_the_pull_exits_130_and_keeps_the_evidence(lab: LabInfo) -> None:
    code, out, err = _interrupted(lab, "--json")
    assert code == 130, err
    result = PullTestResult.model_validate_json(out)  # still exactly one JSON object
    assert result.cause is Cause.CANCELLED
    # the probes had reached the silent registry before the Ctrl-C: that evidence is kept
    assert [e.endpoint.host for e in result.endpoints] == ["blackhole.pullcheck.test"]
    assert [p.probe for p in result.endpoints[0].probes][:2] == ["dns", "tcp"]


def test_sigint_in_human_mode_prints_the_report_and_exits_130(lab: LabInfo) -> None:
    code, out, err = _interrupted(lab)
    assert code == 130, err
    assert "FAILED  cause: cancelled" in out and "phases" in out
    assert "Traceback" not in err


def test_a_success_reads_like_crictl_and_verbose_shows_the_tables(lab: LabInfo) -> None:
    image = lab.images["good"]
    proc = pullcheck(lab, "pull", image)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    # "pulled", or crictl's "up to date" when an earlier test kept the image
    assert re.match(
        rf"OK  (pulled|image is up to date for) {re.escape(image)} "
        r"via http://plain\.pullcheck\.test:15000/v2 in [0-9.]+ m?s$",
        lines[0],
    ), lines[0]
    assert "digest sha256:" in lines[1] and "MiB" in lines[1] and "image id sha256:" in lines[1]
    verbose = pullcheck(lab, "pull", image, "-v")
    assert verbose.returncode == 0
    assert verbose.stdout.startswith(f"pullcheck pull {image}")
    assert "phases" in verbose.stdout
    assert "not run: the pull proved the registry path" in verbose.stdout
    mirrored = pullcheck(lab, "pull", lab.images["mirrored"])
    assert mirrored.returncode == 0
    assert "refused.pullcheck.test:15098" in mirrored.stdout  # the dead mirror, in one line
    assert len(mirrored.stdout.splitlines()) == 3 and "phases" not in mirrored.stdout


def test_nan_and_inf_are_usage_errors_not_a_false_ok(lab: LabInfo) -> None:
    proc = pullcheck(
        lab, "pull", "--mode", "resolve", "--timeout", "nan", lab.images["missing_tag"]
    )
    assert proc.returncode == 2 and "--timeout" in proc.stderr and "OK" not in proc.stdout
    proc = pullcheck(lab, "pull", "--timeout", "nan", lab.images["good"], "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "usage"
    proc = pullcheck(lab, "probe", "--probe-timeout", "nan", lab.images["nxdomain"])
    assert proc.returncode == 2 and "--probe-timeout" in proc.stderr
    proc = pullcheck(lab, "runtime", "--cri-timeout", "inf", "--json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"] == "usage"


def test_control_characters_in_input_are_escaped(lab: LabInfo) -> None:
    proc = pullcheck(lab, "pull", "evil\x1b]0;pwned\x07/x:1")
    assert proc.returncode == 2
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout
    assert "evil\\x1b]0;pwned\\x07/x:1" in proc.stdout


def test_probe_registry_and_image(lab: LabInfo) -> None:
    proc = pullcheck(lab, "probe", lab.registries["tls"], "--json")
    assert proc.returncode == 0, proc.stdout
    report = ProbeReport.model_validate_json(proc.stdout)
    assert report.success and report.reference == ""
    kinds = [p.probe for p in report.endpoints[0].probes]
    assert kinds[:4] == ["dns", "tcp", "tls", "http"]
    proc = pullcheck(lab, "probe", lab.images["untrusted"], "--json")
    assert proc.returncode == 1
    assert ProbeReport.model_validate_json(proc.stdout).cause is Cause.TLS_ERROR


def test_images_and_runtime_commands(lab: LabInfo) -> None:
    assert pullcheck(lab, "pull", lab.images["good"], "--keep").returncode == 0
    proc = pullcheck(lab, "images", "--json")
    assert proc.returncode == 0
    tags = [t for i in json.loads(proc.stdout)["images"] for t in i["repo_tags"]]
    assert lab.images["good"] in tags
    human = pullcheck(lab, "images", env={"COLUMNS": "30"})
    assert "plain.pullcheck.test:15000/pullcheck/good " in human.stdout  # not cut to 30 columns
    assert "…" not in human.stdout
    proc = pullcheck(lab, "runtime", "--json")
    assert proc.returncode == 0
    body = json.loads(proc.stdout)
    assert body["version"]["runtime_name"] == "containerd"
    assert body["image_filesystems"] and body["api_version"] == "v1"


def test_runtime_unavailable_names_every_path(lab: LabInfo, tmp_path: Path) -> None:
    sock = tmp_path / "gone.sock"
    proc = pullcheck(lab, "runtime", "--endpoint", f"unix://{sock}", "--json")
    assert proc.returncode == 1
    body = json.loads(proc.stdout)
    assert body["cause"] == "runtime_unavailable" and str(sock) in body["summary"]
