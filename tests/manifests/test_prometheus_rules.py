"""The shipped PrometheusRule under Prometheus's own tools: `promtool check rules` and `promtool
test rules` (Debian's ``prometheus`` package, installed by scripts/setup.sh).

The rule groups of manifests/components/prometheus-operator/prometheusrule.yaml are written
unchanged to a rules file (``lab.prometheus.write_rules``). The unit tests in
tests/manifests/promtool/*.yaml feed series to those rules; every alert must have a case where it
fires (with its full labels and annotations, which promtool compares exactly) and one where it does
not (before its ``for:``, below its threshold, or on series it must ignore). A missing promtool
fails these tests; it never skips them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import prometheus
from lab.errors import LabError

FIXTURES = Path(__file__).resolve().parent / "promtool"
UNIT_TESTS = sorted(FIXTURES.glob("*.yaml"))
RULES_NAME = "pullcheck.rules.yaml"  # what every fixture's rule_files names
GROUPS = prometheus.rule_groups()
ALERTS = prometheus.alert_rules(GROUPS)


def _promtool() -> str:
    try:
        return prometheus.promtool()
    except LabError as exc:
        pytest.fail(str(exc))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the shipped rules as pullcheck.rules.yaml and a copy of each unit test."""
    prometheus.write_rules(tmp_path / RULES_NAME)
    for path in UNIT_TESTS:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _cases() -> list[tuple[str, dict[str, Any]]]:
    """(fixture name, alert_rule_test entry) for every case of every unit test file."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            out.extend((path.name, case) for case in test.get("alert_rule_test", []))
    return out


def test_fixtures_exist_and_load_the_shipped_rules() -> None:
    assert UNIT_TESTS, f"no promtool unit tests in {FIXTURES}"
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == [RULES_NAME], path.name
        assert doc["tests"], path.name


def test_check_rules(workdir: Path) -> None:
    proc = _run("check", "rules", "--lint=all", "--lint-fatal", RULES_NAME, cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rules = sum(len(group["rules"]) for group in GROUPS)
    assert f"SUCCESS: {rules} rules found" in out


@pytest.mark.parametrize("unit_test", [p.name for p in UNIT_TESTS])
def test_unit_tests_pass(workdir: Path, unit_test: str) -> None:
    proc = _run("test", "rules", unit_test, cwd=workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_every_alert_fires_and_stays_quiet_somewhere() -> None:
    cases = _cases()
    unknown = {case["alertname"] for _, case in cases} - ALERTS.keys()
    assert not unknown, f"unit tests name alerts the rules do not have: {sorted(unknown)}"
    for name, rule in ALERTS.items():
        mine = [case for _, case in cases if case["alertname"] == name]
        firing = [alert for case in mine for alert in case.get("exp_alerts") or []]
        assert firing, f"{name}: no unit test where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: never tested quiet"
        for alert in firing:
            # promtool compares labels and annotations exactly; these keep the fixtures complete
            assert rule["labels"].items() <= alert["exp_labels"].items(), name
            assert alert["exp_annotations"].keys() == rule["annotations"].keys(), name


def test_a_wrong_expectation_fails(workdir: Path) -> None:
    """The harness can fail: with every firing expectation removed, each fixture fails."""
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text())
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                case["exp_alerts"] = []
        (workdir / f"quiet-{path.name}").write_text(yaml.safe_dump(doc))
        proc = _run("test", "rules", f"quiet-{path.name}", cwd=workdir)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{path.name}: {out}"
        assert "FAILED" in out, out


def test_missing_promtool_is_a_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match=r"promtool not found.*prometheus package"):
        prometheus.promtool()
