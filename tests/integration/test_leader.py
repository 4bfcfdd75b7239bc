"""One leader for scheduled work: two real aggregator replicas, a Lease, real agents on lab nodes.

Both replicas serve the API and elect a leader through a ``coordination.k8s.io/v1`` Lease on the
fake kube-apiserver (HTTPS, a service-account-like token); only the leader runs the pre-pull
jobs, and the other forwards job status and "run now" to it. Killing the leader with SIGKILL in
the middle of a wave must hand the wave to the other replica once the lease has expired, without
any node pulling any image twice (counted in the registry's access log). The agents sit behind
a proxy that holds each pre-pull for a moment, like a slow node, so the wave lasts long enough
to be cut in the middle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lab import access
from lab.info import LabInfo
from lab.servers import Server, agent_config, merge, server
from tests.fakes.kube_api import FakeKubeApi, make_kube_tls, serve_kube_api
from tests.integration.conftest import NODES
from tests.polling import until

pytestmark = pytest.mark.lab

NAMESPACE, LEASE = "pullcheck", "pullcheck-aggregator"
KUBE_TOKEN = "aggregator-sa-token"
KUBE_USER = "system:serviceaccount:pullcheck:pullcheck-aggregator"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4, 3.0, 0.5
IMAGES = 8  # fresh tags: every node pulls each once, one node at a time
PULL_DELAY = 0.3  # seconds the proxy holds each pre-pull before passing it on
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _SlowHandler(BaseHTTPRequestHandler):
    server: _SlowProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "POST" and self.path.startswith("/v1/prepull"):
            time.sleep(PULL_DELAY)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        with httpx.Client(trust_env=False, timeout=120) as client:
            reply = client.request(
                self.command, self.server.upstream + self.path, content=body, headers=headers
            )
        self.send_response(reply.status_code)
        for key, value in reply.headers.items():
            if key.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)


class _SlowProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _SlowHandler)


@contextmanager
def _slow(upstream: str) -> Iterator[str]:
    """``host:port`` of a proxy to ``upstream`` that delays each ``POST /v1/prepull``."""
    proxy = _SlowProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture(scope="module")
def kube_api(workdir: Path) -> Iterator[FakeKubeApi]:
    tls = make_kube_tls(workdir / "kube-pki")
    with serve_kube_api(tls) as api:
        api.add_user(KUBE_TOKEN, KUBE_USER)
        api.grant_leases(KUBE_USER, NAMESPACE)
        (workdir / "kube-token").write_text(KUBE_TOKEN + "\n")
        (workdir / "kube-ca.crt").write_bytes(tls.ca_file.read_bytes())
        yield api


def _config(
    lab: LabInfo, workdir: Path, api: FakeKubeApi, static: list[str], jobs: Path, me: str
) -> dict[str, Any]:
    return merge(
        agent_config(lab, workdir / "token", lab.endpoint),
        {
            "aggregator": {
                "discovery": {
                    "mode": "static",
                    "agents": static,
                    "refresh": 1,
                    # the Lease is read and written with discovery's API client settings
                    "api_url": api.url,
                    "api_token_file": str(workdir / "kube-token"),
                    "api_ca_file": str(workdir / "kube-ca.crt"),
                },
                "prepull": {"jobs_file": str(jobs), "poll_interval": 0.5, "tick": 0.3},
                "leader_election": {
                    "mode": "lease",
                    "lease_namespace": NAMESPACE,
                    "lease_name": LEASE,
                    "identity": me,
                    "lease_duration": LEASE_DURATION,
                    "renew_deadline": RENEW_DEADLINE,
                    "retry_period": RETRY_PERIOD,
                },
            }
        },
    )


def _holder(api: FakeKubeApi) -> tuple[str, int]:
    lease = api.lease(NAMESPACE, LEASE)
    spec = (lease or {}).get("spec", {})
    return str(spec.get("holderIdentity", "")), int(spec.get("leaseTransitions", 0))


def _job_status(srv: Server) -> dict[str, Any] | None:
    try:
        reply = srv.client().get("/v1/prepull/jobs/wave")
    except httpx.HTTPError:
        return None
    return reply.json() if reply.status_code == 200 else None


@pytest.fixture
def replicas(
    lab: LabInfo, workdir: Path, kube_api: FakeKubeApi, agents: dict[str, Server]
) -> Iterator[tuple[dict[str, Server], list[str]]]:
    images = [access.fresh_reference(lab) for _ in range(IMAGES)]
    jobs = workdir / "leader-jobs.yaml"
    job = {
        "name": "wave",
        "images": images,
        "schedule": "0 3 1 1 *",  # far away: the test runs it now
        "retries": {"attempts": 3, "initial": 0.5, "maximum": 1},
        "pacing": {"max_parallel_nodes": 1, "per_registry": 1, "jitter": 0},
    }
    jobs.write_text(yaml.safe_dump({"jobs": [job]}))
    with ExitStack() as stack:
        static = [f"{name}={stack.enter_context(_slow(srv.url))}" for name, srv in agents.items()]
        started = {
            me: stack.enter_context(
                server(
                    "aggregator",
                    _config(lab, workdir, kube_api, static, jobs, me),
                    workdir,
                    name=me,
                )
            )
            for me in ("agg-a", "agg-b")
        }
        yield started, images


def test_a_follower_forwards_job_status_and_run_now_to_the_leader(
    kube_api: FakeKubeApi, replicas: tuple[dict[str, Server], list[str]]
) -> None:
    started, _images = replicas
    leader = until(lambda: _holder(kube_api)[0], 20, "a replica leads")
    follower = next(me for me in started if me != leader)
    lease = kube_api.lease(NAMESPACE, LEASE)
    assert lease is not None
    assert lease["metadata"]["annotations"]["pullcheck.dev/leader-url"] == started[leader].url

    listing = started[follower].client().get("/v1/prepull/jobs")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["leader"] == leader and body["forwarded_by"] == follower
    assert [j["name"] for j in body["jobs"]] == ["wave"]
    own = started[leader].client().get("/v1/prepull/jobs").json()
    assert own["leader"] == leader and "forwarded_by" not in own
    one = started[follower].client().get("/v1/prepull/jobs/wave").json()
    assert one["leader"] == leader and one["images_total"] == NODES * IMAGES
    missing = started[follower].client().get("/v1/prepull/jobs/nope")
    assert missing.status_code == 404 and missing.json()["leader"] == leader
    # a name is forwarded as the one path segment it was, whatever it holds
    odd = started[follower].client().get("/v1/prepull/jobs/no%20such%3Fjob%25")
    assert odd.status_code == 404 and odd.json()["forwarded_by"] == follower
    assert odd.json()["message"] == "no pre-pull job named 'no such?job%'"
    # the follower's token check still applies before anything is forwarded
    assert started[follower].client(token="wrong").get("/v1/prepull/jobs").status_code == 401
    run = started[follower].client().post("/v1/prepull/jobs/wave/run")
    assert run.status_code == 202 and run.json()["leader"] == leader
    again = started[follower].client().post("/v1/prepull/jobs/wave/run")
    assert again.status_code == 409 and again.json()["error"] == "running"
    # the readiness detail and the metric say who leads
    for me, srv in started.items():
        detail = srv.client().get("/readyz").json()["leader"]
        assert detail["mode"] == "lease" and detail["leader"] == leader
        assert detail["leading"] is (me == leader)
        metric = "pullcheck_aggregator_leader " + ("1.0" if me == leader else "0.0")
        assert metric in srv.client().get("/metrics").text


def test_killing_the_leader_mid_wave_hands_the_wave_over_without_pulling_twice(
    lab: LabInfo, kube_api: FakeKubeApi, replicas: tuple[dict[str, Server], list[str]]
) -> None:
    started, images = replicas
    leader = until(lambda: _holder(kube_api)[0], 20, "a replica leads")
    follower = next(me for me in started if me != leader)
    _, transitions = _holder(kube_api)
    total = NODES * IMAGES
    mark = access.mark(lab)
    assert started[follower].client().post("/v1/prepull/jobs/wave/run").status_code == 202

    def mid_wave() -> bool:
        body = _job_status(started[leader])
        return body is not None and 2 <= body["images_ready"] <= total - IMAGES

    until(mid_wave, 60, "the wave is under way")
    started[leader].proc.kill()  # SIGKILL: no release, no goodbye
    started[leader].proc.wait()
    # until the lease expires there is no leader to forward to, and the follower says so
    gap = started[follower].client().get("/v1/prepull/jobs")
    assert gap.status_code == 503, gap.text
    assert gap.json()["error"] in ("leader_unreachable", "no_leader")

    # the follower takes over once the record has not changed for a lease duration on its own
    # clock, counted from when it saw the last renewal — up to one jittered retry period (x2.2)
    # after the kill — and notices at its next try (another period at most); 1 s for the API
    bound = LEASE_DURATION + 2 * RETRY_PERIOD * 2.2 + 1.0
    until(lambda: _holder(kube_api)[0] == follower, bound, "the follower takes the lease")
    assert _holder(kube_api)[1] == transitions + 1

    def finished() -> dict[str, Any] | None:
        b = _job_status(started[follower])
        return b if b and b["images_ready"] == total else None

    body = until(finished, 90, "the new leader finishes the wave")
    assert body["leader"] == follower
    assert all(n["phase"] == "done" for n in body["nodes"]) and len(body["nodes"]) == total
    # what the dead leader had finished was found on the nodes, not pulled again
    assert any(n["skipped"] and n["summary"] == "present on the node" for n in body["nodes"])
    seen = access.requests(lab, "plain", since=mark)
    for image in images:
        tag = image.rsplit(":", 1)[1]
        heads = [
            r
            for r in seen
            if r.method == "HEAD"
            and r.uri.endswith(f"/manifests/{tag}")
            and r.user_agent.startswith("containerd")
        ]
        # each of the NODES nodes resolved each fresh tag exactly once: no pair pulled twice
        assert len(heads) == NODES, (image, [(r.time, r.uri) for r in heads])
