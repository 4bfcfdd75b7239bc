"""A real Prometheus (Debian's ``prometheus`` package) for the lab, and the shipped alert rules.

The rules are the groups of the shipped PrometheusRule
(``manifests/components/prometheus-operator/prometheusrule.yaml``), written unchanged as a plain
Prometheus rules file: the Prometheus Operator does the same when it loads the object.

:func:`running` starts a Prometheus on demand (never the packaged service) that scrapes the lab
nodes' agents on their bridge addresses (``10.99.0.x:8479``, job ``pullcheck-agent``, a ``node``
label as the ServiceMonitor's relabeling gives it) and, optionally, an aggregator (job
``pullcheck-aggregator``), with the bearer token from a file, and evaluates the shipped rules.
The scrape and evaluation intervals are small so a test sees an alert within seconds; each rule's
``for:`` stays what the manifest says.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from lab import nodes
from lab.errors import LabError, log_tail
from lab.servers import free_port, stop

__all__ = [
    "AGENT_JOB",
    "AGGREGATOR_JOB",
    "PROMETHEUS_RULE",
    "Prometheus",
    "alert_rules",
    "config",
    "promtool",
    "rule_groups",
    "running",
    "write_rules",
]

T = TypeVar("T")
AGENT_JOB = "pullcheck-agent"  # the Service name, as the shipped rules expect
AGGREGATOR_JOB = "pullcheck-aggregator"
MAX_INTERVAL = 60.0
READY_TIMEOUT = 30.0

PROMETHEUS_RULE = (
    Path(__file__).resolve().parents[1]
    / "manifests/components/prometheus-operator/prometheusrule.yaml"
)
_MISSING = "{tool} not found on PATH: install Debian's prometheus package (scripts/setup.sh)"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LabError(_MISSING.format(tool=name))
    return path


def promtool() -> str:
    """The path of ``promtool``; a :class:`LabError` naming the package when it is missing."""
    return _tool("promtool")


def rule_groups(source: Path = PROMETHEUS_RULE) -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule at ``source`` (``spec.groups``), unchanged."""
    doc = yaml.safe_load(source.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "PrometheusRule":
        raise LabError(f"{source}: not a PrometheusRule")
    groups = doc.get("spec", {}).get("groups")
    if not isinstance(groups, list) or not groups:
        raise LabError(f"{source}: no spec.groups")
    return groups


def alert_rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The alerting rules of ``groups`` by alert name."""
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def write_rules(dest: Path, source: Path = PROMETHEUS_RULE) -> Path:
    """Write the groups of ``source`` to ``dest`` as a Prometheus rules file; return ``dest``."""
    dest.write_text(yaml.safe_dump({"groups": rule_groups(source)}, sort_keys=False))
    return dest


@dataclass(frozen=True)
class Prometheus:
    """A running lab Prometheus: its URL, process and log."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        reply = httpx.get(f"{self.url}{path}", params=params, timeout=10, trust_env=False)
        reply.raise_for_status()
        body = reply.json()
        if body.get("status") != "success":
            raise LabError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        data = self._get("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts, those named ``name`` only if given."""
        found: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return [a for a in found if name is None or a["labels"].get("alertname") == name]

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups with their rules, health and last evaluation."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def wait_until(self, what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
        """Poll ``check`` until it returns something other than None/empty; LabError naming
        ``what`` (and the log's tail) if it does not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"prometheus exited {self.proc.returncode}:\n{log_tail(self.log)}")
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise LabError(f"prometheus: not within {timeout:g} s: {what}")
            time.sleep(0.2)

    def wait_evaluated(self, group: str, timeout: float = 30.0) -> None:
        """Return once every rule of ``group`` has been evaluated after this call began."""
        start = self._get("/api/v1/query", {"query": "time()"})["result"][0]
        since = float(start)

        def evaluated() -> bool:
            for g in self.rules():
                if g["name"] == group:
                    return all(_rfc3339(r["lastEvaluation"]) > since for r in g["rules"])
            raise LabError(f"prometheus: no rule group {group!r}")

        self.wait_until(f"rule group {group} evaluated", evaluated, timeout)


def _rfc3339(text: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, ``Z``) as Unix seconds."""
    return datetime.fromisoformat(text).timestamp()


def _interval(seconds: float) -> str:
    if not math.isfinite(seconds) or not 0.1 <= seconds <= MAX_INTERVAL:
        raise LabError(f"prometheus interval must be 0.1 .. {MAX_INTERVAL:g} s, not {seconds!r}")
    return f"{round(seconds * 1000)}ms"


def config(
    rules: Path,
    token_file: Path,
    node_names: list[str],
    aggregator: str | None = None,
    interval: float = 1.0,
) -> dict[str, Any]:
    """The configuration: the nodes' agents, the aggregator (``host:port``), the rules."""
    step = _interval(interval)
    auth = {"type": "Bearer", "credentials_file": str(token_file)}
    agents = [
        {"targets": [nodes.agent_url(n).removeprefix("http://")], "labels": {"node": n}}
        for n in node_names
    ]
    jobs: list[dict[str, Any]] = [
        {"job_name": AGENT_JOB, "authorization": auth, "static_configs": agents}
    ]
    if aggregator:
        jobs.append(
            {
                "job_name": AGGREGATOR_JOB,
                "authorization": auth,
                "static_configs": [{"targets": [aggregator]}],
            }
        )
    return {
        "global": {"scrape_interval": step, "scrape_timeout": step, "evaluation_interval": step},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


@contextmanager
def running(
    workdir: Path,
    token_file: Path,
    node_names: list[str],
    *,
    aggregator: str | None = None,
    interval: float = 1.0,
) -> Iterator[Prometheus]:
    """A Prometheus scraping ``node_names``' agents (and ``aggregator``) with the shipped rules,
    its data and log in ``workdir``; stopped (SIGTERM, then SIGKILL) when the block ends."""
    binary = _tool("prometheus")
    rules = write_rules(workdir / "pullcheck.rules.yaml")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(config(rules, token_file, node_names, aggregator, interval))
    )
    check = subprocess.run(
        [promtool(), "check", "config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        raise LabError(f"promtool check config {config_file}:\n{check.stdout}{check.stderr}")
    port = free_port()
    log = workdir / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        prom.wait_until("ready", lambda: _ready(prom.url), READY_TIMEOUT)
        yield prom
    finally:
        stop(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False
