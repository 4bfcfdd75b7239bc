"""The CLI as a user runs it: a subprocess against the lab, exit codes, JSON and human output."""

from __future__ import annotations

import json
import os
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


def pullcheck(lab: LabInfo, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env=_env(lab),
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


def test_sigint_cancels_the_pull_and_reports_cancelled(lab: LabInfo) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "pull",
            lab.images["blackhole"],
            "--json",
            "--timeout",
            "120",
        ],
        env=_env(lab),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    result = PullTestResult.model_validate_json(out)
    assert result.cause is Cause.CANCELLED


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
    human = pullcheck(lab, "images")
    assert "pullcheck/good" in human.stdout
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
