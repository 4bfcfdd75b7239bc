"""The node agent's HTTP API as a real process against the lab's containerd and registries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import access
from lab.info import LabInfo
from lab.servers import TOKEN, Server, agent_config, server

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def agent(lab: LabInfo, workdir: Path) -> Iterator[Server]:
    config = agent_config(lab, workdir / "token", lab.endpoint, limits={"max_body_bytes": 4096})
    with server("agent", config, workdir, node="lab-node") as srv:
        yield srv


def _metric(srv: Server, name: str, **labels: str) -> float:
    text = srv.client().get("/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# --- authentication and input validation ----------------------------------------------------


def test_every_endpoint_but_health_needs_the_token(agent: Server, lab: LabInfo) -> None:
    anonymous, wrong = agent.client(token=None), agent.client(token="not-the-token")
    for path in (
        "/v1/pulltest?image=x",
        "/v1/connectivity",
        "/v1/images",
        "/v1/runtime",
        "/metrics",
        "/openapi.json",
    ):
        for client in (anonymous, wrong):
            reply = client.get(path)
            assert reply.status_code == 401, (path, reply.text)
            assert reply.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.get("/healthz").json() == {"status": "ok", "node": "lab-node"}
    assert anonymous.get("/readyz").status_code == 200


def test_bad_input_is_400_with_the_reason(agent: Server, lab: LabInfo) -> None:
    client = agent.client()
    good = lab.images["good"]
    cases = {
        f"/v1/pulltest?image={good}&colour=blue": "unknown query parameter(s): colour",
        f"/v1/pulltest?image={good}&mode=sideways": "mode",
        f"/v1/pulltest?image={good}&timeout=-1": "timeout",
        f"/v1/pulltest?image={good}&timeout=100000": "at most",
        "/v1/pulltest?image=UPPER/Case": "must be lowercase",
        "/v1/pulltest": "image",
    }
    for path, reason in cases.items():
        reply = client.get(path)
        assert reply.status_code == 400, (path, reply.text)
        assert reason in reply.json()["message"], (path, reply.text)
    reply = client.post("/v1/pulltest", json={"image": good, "colour": "blue"})
    assert reply.status_code == 400 and "colour" in reply.json()["message"]
    reply = client.post(
        "/v1/pulltest", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400


def test_oversized_body_is_rejected(agent: Server, lab: LabInfo) -> None:
    reply = agent.client().post(
        "/v1/pulltest", json={"image": lab.images["good"], "creds": "a" * 10_000}
    )
    assert reply.status_code == 413 and reply.json()["error"] == "body_too_large"


def test_allowlist_keeps_the_node_away_from_other_hosts(agent: Server) -> None:
    mark_ok = agent.client()
    for image in ("10.0.0.5:22/anything:1", "evil.example.com/x:1", "localhost:6379/x"):
        reply = mark_ok.get("/v1/pulltest", params={"image": image, "mode": "resolve"})
        assert reply.status_code == 403 and reply.json()["error"] == "not_allowed", image


# --- pull tests ---------------------------------------------------------------------------------


def test_pulltest_get_returns_the_engine_result_with_node(agent: Server, lab: LabInfo) -> None:
    reply = agent.client().get("/v1/pulltest", params={"image": lab.images["refused"]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["node"] == "lab-node" and body["success"] is False
    assert body["cause"] == "connection_refused" and body["remedy"]


def test_post_with_credentials_never_returns_or_logs_them(agent: Server, lab: LabInfo) -> None:
    secret = lab.password
    reply = agent.client().post(
        "/v1/pulltest",
        json={"image": lab.images["private"], "creds": f"{lab.username}:{secret}", "timeout": 60},
    )
    assert reply.status_code == 200 and reply.json()["success"], reply.text
    config = {
        "auths": {lab.registries["auth"]: {"username": lab.username, "password": "Wr0ng-pw-77"}}
    }
    reply = agent.client().post(
        "/v1/pulltest", json={"image": lab.images["private"], "docker_config": config}
    )
    assert reply.status_code == 200 and reply.json()["cause"] == "unauthorized"
    everything = reply.text + agent.log_text() + agent.client().get("/metrics").text
    assert secret not in everything and "Wr0ng-pw-77" not in everything


def test_read_only_agent(lab: LabInfo, workdir: Path) -> None:
    config = agent_config(lab, workdir / "token", lab.endpoint, read_only=True)
    with server("agent", config, workdir, node="ro") as srv:
        client = srv.client()
        reply = client.get("/v1/pulltest", params={"image": lab.images["good"], "mode": "pull"})
        assert reply.status_code == 403 and reply.json()["error"] == "read_only"
        reply = client.get("/v1/pulltest", params={"image": lab.images["good"]})
        assert reply.status_code == 200 and reply.json()["mode"] == "resolve"


def test_size_guard_answers_413_before_downloading(lab: LabInfo, workdir: Path) -> None:
    config = agent_config(lab, workdir / "token", lab.endpoint, limits={"max_image_size": "1MB"})
    image = access.fresh_reference(lab)
    with server("agent", config, workdir, node="small") as srv:
        mark = access.mark(lab)
        reply = srv.client().get("/v1/pulltest", params={"image": image})
        assert reply.status_code == 413, reply.text
        assert reply.json()["refused"] == "image_too_large"
    tag = image.rsplit(":", 1)[1]
    # containerd never asked for the manifest: only the size check's HEAD and GETs were made
    agents = access.requests(lab, "plain", since=mark)
    assert not [r for r in agents if "containerd" in r.user_agent and tag in r.uri]


def test_single_flight_100_identical_requests_one_pull(lab: LabInfo, workdir: Path) -> None:
    image = access.fresh_reference(lab)
    tag = image.rsplit(":", 1)[1]
    config = agent_config(
        lab, workdir / "token", lab.endpoint, limits={"result_ttl": 0, "pull_queue": 200}
    )
    with server("agent", config, workdir, node="sf") as srv:
        baseline = access.mark(lab)
        first = srv.client().get("/v1/pulltest", params={"image": image, "mode": "pull"})
        assert first.json()["success"], first.text
        one_pull = access.count_requests(
            lab, "plain", path_contains=f"/manifests/{tag}", since=baseline
        )
        assert one_pull >= 1

        async def storm() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=srv.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
                trust_env=False,
                limits=httpx.Limits(max_connections=100),
            ) as client:
                return await asyncio.gather(
                    *(
                        client.get("/v1/pulltest", params={"image": image, "mode": "pull"})
                        for _ in range(100)
                    )
                )

        mark = access.mark(lab)
        replies = asyncio.run(storm())
        assert all(r.status_code == 200 and r.json()["success"] for r in replies)
        assert (
            access.count_requests(lab, "plain", path_contains=f"/manifests/{tag}", since=mark)
            == one_pull
        )
        assert _metric(srv, "pullcheck_pulltests_total", mode="pull") == 2  # the first + one shared
        assert _metric(srv, "pullcheck_pulltest_requests_total", outcome="shared") == 99


def test_results_are_reused_for_the_ttl(agent: Server, lab: LabInfo) -> None:
    image = access.fresh_reference(lab)
    client = agent.client()
    before = _metric(agent, "pullcheck_pulltest_requests_total", outcome="reused")
    a = client.get("/v1/pulltest", params={"image": image, "mode": "resolve"}).json()
    b = client.get("/v1/pulltest", params={"image": image, "mode": "resolve"}).json()
    assert a == b
    assert _metric(agent, "pullcheck_pulltest_requests_total", outcome="reused") == before + 1


def test_full_queue_answers_429_with_retry_after(lab: LabInfo, workdir: Path) -> None:
    config = agent_config(
        lab, workdir / "token", lab.endpoint, limits={"pull_concurrency": 1, "pull_queue": 0}
    )
    with server("agent", config, workdir, node="busy") as srv:

        async def two() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(
                base_url=srv.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
                trust_env=False,
            ) as client:
                slow = asyncio.create_task(
                    client.get(
                        "/v1/pulltest", params={"image": lab.images["blackhole"], "timeout": "4"}
                    )
                )
                await asyncio.sleep(1.0)
                other = await client.get("/v1/pulltest", params={"image": lab.images["good"]})
                return await slow, other

        slow, other = asyncio.run(two())
        assert other.status_code == 429 and int(other.headers["retry-after"]) >= 1
        assert other.json()["error"] == "queue_full"
        assert slow.status_code == 200 and slow.json()["cause"] == "timeout"


def test_rate_limit_per_client(lab: LabInfo, workdir: Path) -> None:
    config = agent_config(
        lab,
        workdir / "token",
        lab.endpoint,
        limits={"rate_limit_per_minute": 1, "rate_limit_burst": 2},
    )
    with server("agent", config, workdir, node="limited") as srv:
        client = srv.client()
        codes = [client.get("/v1/images").status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        assert client.get("/healthz").status_code == 200


# --- the other endpoints ------------------------------------------------------------------------


def test_connectivity_images_runtime(agent: Server, lab: LabInfo) -> None:
    client = agent.client()
    client.get("/v1/pulltest", params={"image": lab.images["tls"], "mode": "resolve"})
    conn = client.get("/v1/connectivity").json()
    registries = [r["registry"] for r in conn["registries"]]
    assert conn["node"] == "lab-node" and lab.registries["plain"] in registries
    runtime = client.get("/v1/runtime").json()
    assert runtime["version"]["runtime_name"] == "containerd"
    assert isinstance(client.get("/v1/images").json()["images"], list)


def test_readyz_fails_without_runtime(lab: LabInfo, workdir: Path) -> None:
    config = agent_config(lab, workdir / "token", f"unix://{workdir}/missing.sock")
    with server("agent", config, workdir, node="no-runtime") as srv:
        reply = srv.client(token=None).get("/readyz")
        assert reply.status_code == 503 and "missing.sock" in reply.json()["runtime"]
        assert srv.client().get("/v1/runtime").status_code == 503


def test_metrics_have_bounded_labels_and_a_json_log_line_per_test(
    agent: Server, lab: LabInfo
) -> None:
    client = agent.client()
    client.get("/v1/pulltest", params={"image": lab.images["nxdomain"]})
    text = client.get("/metrics").text
    assert 'pullcheck_pulltests_total{cause="dns_failure"' in text
    assert "127.0.0.1" not in text and "NXDOMAIN" not in text
    for name in (
        "pullcheck_runtime_up",
        "pullcheck_pulltests_in_flight",
        "pullcheck_event_loop_lag_seconds",
        "pullcheck_registry_up",
    ):
        assert name in text, name
    lines = [json.loads(line) for line in agent.log_text().splitlines() if line.startswith("{")]
    tests = [line for line in lines if line.get("event") == "pulltest"]
    assert any(t["cause"] == "dns_failure" and t["node"] == "lab-node" for t in tests)
