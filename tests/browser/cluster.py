"""A small real cluster on the lab for the dashboard: agents on the lab's nodes, each seeing the
registries differently, a hostile registry, and aggregators in front of them.

Shared by the browser tests (``tests/browser``) and ``scripts/screenshots.py``. Each node's view
is real, made by its own configuration:

``node-1``  the lab's hosts.toml: the plain and the TLS registry work;
``node-2``  no hosts.toml at all: the plain registry is ``http_https_mismatch``, the TLS one
            ``tls_error`` (the lab CA is only named in hosts.toml);
``node-3``  also probes a port nothing listens on (``connection_refused``) and the hostile
            registry, whose 500 answers carry HTML and script in their error message
            (``registry_error``: the page must show that text, never run it);
``node-down`` a closed port (``agent_unreachable``); with ``slow``, ``node-slow``: the lab's
            silent listener, answering never (its entry comes at the node timeout, last).
"""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from lab import access, control
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, free_port, loopback_http, merge, server

#: text a registry error and an image name carry in the tests: it must never run
PAYLOAD: Final = (
    '<script>window.__xss = 1; alert("xss")</script>'
    '<img src=x onerror="window.__xss = 2; alert(2)">'
)
NODES: Final = 3
JOB: Final = "warm-dashboard"


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A registry whose every answer is HTTP 500 with :data:`PAYLOAD` as its error message."""

    def _answer(self, *, body: bool) -> None:
        payload = json.dumps({"errors": [{"code": "UNKNOWN", "message": PAYLOAD}]}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def hostile_registry() -> Iterator[str]:
    """A plain-HTTP registry on loopback answering 500 with :data:`PAYLOAD`; yields host:port."""
    with loopback_http(_Hostile) as address:
        yield address


@dataclass
class Cluster:
    lab: LabInfo
    workdir: Path
    agents: dict[str, Server]
    hostile: str  # host:port of the hostile registry
    jobs_file: Path
    job_image: str

    def static(self, *, slow: bool) -> list[str]:
        found = [f"{name}={srv.url.removeprefix('http://')}" for name, srv in self.agents.items()]
        found.append(f"node-down=127.0.0.1:{free_port()}")  # nothing listens there
        if slow:
            found.append("node-slow=127.0.0.1:15099")  # the lab's silent listener
        return found

    def aggregator_config(self, *, read_only: bool = False, slow: bool = True) -> dict[str, Any]:
        return merge(
            self._agent_config(self.lab.endpoint),
            {
                "read_only": read_only,
                "aggregator": {
                    "node_timeout": 5,
                    "discovery": {"mode": "static", "agents": self.static(slow=slow)},
                    "prepull": {
                        "jobs_file": str(self.jobs_file),
                        "poll_interval": 0.5,
                        "tick": 0.5,
                    },
                },
            },
        )

    def _agent_config(self, endpoint: str, **extra: Any) -> dict[str, Any]:
        config = agent_config(self.lab, self.workdir / "token", endpoint, **extra)
        config["allow"] = [*config["allow"], "127.0.0.1:*/*"]
        return config

    def node_config(self, name: str, endpoint: str) -> dict[str, Any]:
        registries = [self.lab.registries["plain"], self.lab.registries["tls"]]
        if name == "node-2":  # a node without containerd's hosts.toml
            empty = self.workdir / "certs.d-empty"
            empty.mkdir(exist_ok=True)
            return self._agent_config(
                endpoint, registries=registries, agent={"registry_config_path": str(empty)}
            )
        if name == "node-3":
            registries += [self.lab.registries["refused"], self.hostile]
        return self._agent_config(endpoint, registries=registries)


def write_jobs(path: Path, image: str) -> None:
    """One warm-cache job, run on demand, one node at a time (its progress is seen to move)."""
    job = {
        "name": JOB,
        "images": [image],
        "schedule": "0 3 1 1 *",  # far away: run from the page
        "retries": {"attempts": 1, "initial": 0.5, "maximum": 1},
        "pacing": {"max_parallel_nodes": 1, "per_registry": 1, "jitter": 0},
    }
    path.write_text(yaml.safe_dump({"jobs": [job]}))


@contextmanager
def lab_cluster(lab: LabInfo, workdir: Path) -> Iterator[Cluster]:
    """Agents on :data:`NODES` lab nodes and the hostile registry (aggregators: :func:`started`)."""
    (workdir / "token").write_text(TOKEN + "\n")
    endpoints = control.ensure_nodes(lab, NODES)
    image = access.fresh_reference(lab)  # a tag no node has: the job pulls it
    jobs = workdir / "jobs.yaml"
    write_jobs(jobs, image)
    with ExitStack() as stack:
        hostile = stack.enter_context(hostile_registry())
        cluster = Cluster(lab, workdir, {}, hostile, jobs, image)
        for name, endpoint in sorted(endpoints.items()):
            config = cluster.node_config(name, endpoint)
            cluster.agents[name] = stack.enter_context(server("agent", config, workdir, node=name))
        yield cluster


def started(cluster: Cluster, name: str, **options: bool) -> AbstractContextManager[Server]:
    """An aggregator over ``cluster`` (``read_only``, ``slow``) as a context manager."""
    return server("aggregator", cluster.aggregator_config(**options), cluster.workdir, name=name)
