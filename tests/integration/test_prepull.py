"""Warm-cache jobs end to end: a real aggregator, real agents on lab nodes, the lab registries."""

from __future__ import annotations

import itertools
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import access, control
from lab.info import LabInfo
from lab.servers import Server, agent_config, free_port, merge, server
from tests.integration.conftest import NODES

pytestmark = pytest.mark.lab


def _static(agents: dict[str, Server]) -> list[str]:
    return [f"{name}={srv.url.removeprefix('http://')}" for name, srv in agents.items()]


def _aggregator(lab: LabInfo, workdir: Path, jobs: Path, static: list[str]) -> dict[str, Any]:
    return merge(
        agent_config(lab, workdir / "token", lab.endpoint),
        {
            "aggregator": {
                "discovery": {"mode": "static", "agents": static, "refresh": 1},
                "prepull": {"jobs_file": str(jobs), "poll_interval": 0.5, "tick": 0.5},
            }
        },
    )


def _job(name: str, images: list[str], **extra: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": name,
        "images": images,
        "schedule": "0 3 1 1 *",  # far away: these tests run jobs on demand or for new nodes
        "retries": {"attempts": 3, "initial": 0.5, "maximum": 1},
        "pacing": {"max_parallel_nodes": 1, "per_registry": 1, "jitter": 0},
    }
    return merge(job, extra)


def _write(path: Path, *jobs: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"jobs": list(jobs)}))
    tmp.replace(path)


def _settled(body: dict[str, Any]) -> bool:
    return (
        not body["running"]
        and body["images_total"] > 0
        and all(n["phase"] in ("done", "failed") for n in body["nodes"])
        and len(body["nodes"]) == body["images_total"]
    )


def test_caps_hold_and_every_node_gets_every_image(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    images = [access.fresh_reference(lab), access.fresh_reference(lab)]
    jobs = workdir / "caps.yaml"
    _write(jobs, _job("caps", images))
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-caps"
    ) as agg:
        agg.wait_prepull_job("caps", lambda b: b["images_total"] == NODES * len(images))
        mark = access.mark(lab)
        assert agg.client().post("/v1/prepull/jobs/caps/run").status_code == 202
        assert agg.client().post("/v1/prepull/jobs/caps/run").status_code == 409
        body = agg.wait_prepull_job("caps", _settled)
    assert body["images_ready"] == NODES * len(images)
    # the node cap: intervals [started, finished] of the pulls never overlap with max 1 node
    spans = sorted(
        (
            datetime.fromisoformat(n["started_at"]).timestamp(),
            datetime.fromisoformat(n["started_at"]).timestamp() + n["duration_ms"] / 1000,
        )
        for n in body["nodes"]
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.05, spans
    # the registry saw each node resolve each new tag once: no pair was pulled twice
    for image in images:
        tag = image.rsplit(":", 1)[1]
        seen = access.requests(lab, "plain", since=mark)
        heads = [
            r
            for r in seen
            if r.method == "HEAD"
            and r.uri.endswith(f"/manifests/{tag}")
            and r.user_agent.startswith("containerd")
        ]
        assert len(heads) == NODES, (image, heads)


def test_failures_are_retried_with_backoff_and_classified(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    jobs = workdir / "fail.yaml"
    _write(jobs, _job("broken", [lab.images["refused"]], nodes={"names": ["node-1"]}))
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-fail"
    ) as agg:
        agg.wait_prepull_job("broken", lambda b: b["images_total"] == 1)
        agg.client().post("/v1/prepull/jobs/broken/run")
        body = agg.wait_prepull_job("broken", _settled)
        metrics = agg.client().get("/metrics").text
    (item,) = body["nodes"]
    assert item["phase"] == "failed" and item["attempts"] == 3
    assert item["cause"] == "connection_refused" and "15098" in item["remedy"]
    # the back-off's exact waits are tested in virtual time (tests/unit/test_prepull_scheduler.py)
    counter = 'pullcheck_prepull_pulls_total{cause="connection_refused",job="broken"'
    assert f'{counter},result="failure"}} 1.0' in metrics


def test_job_file_reload_and_bad_file_keeps_old_jobs(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    jobs = workdir / "reload.yaml"
    _write(jobs, _job("first", [lab.images["good"]]))
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-reload"
    ) as agg:
        client = agg.client()
        agg.wait_prepull_job("first", lambda b: True)
        _write(jobs, _job("first", [lab.images["good"]]), _job("second", [lab.images["tls"]]))
        agg.wait_prepull_job("second", lambda b: b["images_total"] == NODES)
        jobs.write_text("jobs:\n  - name: Bad_Name\n    images: [x]\n    schedule: '* * *'\n")
        deadline = time.monotonic() + 10
        listing = client.get("/v1/prepull/jobs").json()
        while not listing["error"] and time.monotonic() < deadline:
            time.sleep(0.3)
            listing = client.get("/v1/prepull/jobs").json()
        assert "name" in listing["error"] and "jobs[0]" in listing["error"]
        assert sorted(j["name"] for j in listing["jobs"]) == ["first", "second"]
        assert client.get("/v1/prepull/jobs/nope").status_code == 404


def test_restart_rebuilds_state_from_the_nodes(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    image = access.fresh_reference(lab)
    jobs = workdir / "restart.yaml"
    _write(
        jobs, _job("survivor", [image], pacing={"max_parallel_nodes": "100%", "per_registry": 4})
    )
    config = _aggregator(lab, workdir, jobs, _static(agents))
    with server("aggregator", config, workdir, name="agg-before") as agg:
        agg.wait_prepull_job("survivor", lambda b: b["images_total"] == NODES)
        agg.client().post("/v1/prepull/jobs/survivor/run")
        agg.wait_prepull_job("survivor", _settled)
    mark = access.mark(lab)
    with server("aggregator", config, workdir, name="agg-after") as agg:
        body = agg.wait_prepull_job("survivor", lambda b: b["images_ready"] == NODES)
    assert all(n["phase"] == "done" for n in body["nodes"])
    tag = image.rsplit(":", 1)[1]
    assert access.count_requests(lab, "plain", path_contains=f"/manifests/{tag}", since=mark) == 0


def test_new_node_gets_on_new_node_images_within_30_s(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    image = access.fresh_reference(lab)
    jobs = workdir / "newnode.yaml"
    _write(
        jobs,
        {
            "name": "newcomers",
            "images": [image],
            "on_new_node": True,
            "pacing": {"max_parallel_nodes": "100%", "jitter": 0},
        },
    )
    port = free_port()
    static = [*_static(agents), f"node-late=127.0.0.1:{port}"]
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, static), workdir, name="agg-new"
    ) as agg:
        agg.wait_prepull_job("newcomers", lambda b: b["images_ready"] == NODES)
        endpoint = control.ensure_nodes(lab, NODES + 1)[f"node-{NODES + 1}"]
        config = agent_config(lab, workdir / "token", endpoint)
        with server("agent", config, workdir, node="node-late", port=port):
            body = agg.wait_prepull_job(
                "newcomers", lambda b: b["images_ready"] == NODES + 1, timeout=30
            )
    late = [n for n in body["nodes"] if n["node"] == "node-late"]
    assert late and late[0]["phase"] == "done"


def test_restart_resumes_a_half_done_wave(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    """A wave cut short (the image on one node only) resumes when the aggregator starts."""
    image = access.fresh_reference(lab)
    reply = agents["node-1"].client().post("/v1/prepull", json={"image": image})
    assert reply.status_code == 200 and reply.json()["ok"], reply.text
    jobs = workdir / "resume.yaml"
    _write(jobs, _job("halfway", [image], pacing={"max_parallel_nodes": "100%", "jitter": 0}))
    mark = access.mark(lab)
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-resume"
    ) as agg:
        body = agg.wait_prepull_job("halfway", lambda b: b["images_ready"] == NODES)
    tag = image.rsplit(":", 1)[1]
    heads = [
        r
        for r in access.requests(lab, "plain", since=mark)
        if r.method == "HEAD"
        and r.uri.endswith(f"/manifests/{tag}")
        and r.user_agent.startswith("containerd")
    ]
    assert len(heads) == NODES - 1  # node-1 was not asked again
    first = next(n for n in body["nodes"] if n["node"] == "node-1")
    assert first["skipped"] and first["summary"] == "present on the node"


def test_cli_lists_shows_and_runs_jobs(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    import subprocess
    import sys

    jobs = workdir / "cli.yaml"
    _write(jobs, _job("from-cli", [lab.images["good"]]))
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-cli"
    ) as agg:
        agg.wait_prepull_job("from-cli", lambda b: b["images_total"] == NODES)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "prepull",
                    *args,
                    "--url",
                    agg.url,
                    "--token-file",
                    str(workdir / "token"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        assert "from-cli" in cli("jobs").stdout
        assert cli("run", "from-cli").returncode == 0
        agg.wait_prepull_job("from-cli", _settled)
        shown = cli("job", "from-cli", "--json")
        assert shown.returncode == 0
        assert '"phase": "done"' in shown.stdout
        missing = cli("job", "nope")
        assert missing.returncode == 2 and "not_found" in missing.stderr


def test_a_job_timeout_over_the_agents_max_timeout_is_rejected_at_load(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    jobs = workdir / "too-long.yaml"
    _write(jobs, _job("patient", [lab.images["good"]], timeout=600))
    config = merge(
        _aggregator(lab, workdir, jobs, _static(agents)), {"limits": {"max_timeout": 300}}
    )
    with server("aggregator", config, workdir, name="agg-too-long") as agg:
        deadline = time.monotonic() + 10
        listing = agg.client().get("/v1/prepull/jobs").json()
        while not listing["error"] and time.monotonic() < deadline:
            time.sleep(0.2)
            listing = agg.client().get("/v1/prepull/jobs").json()
    assert listing["jobs"] == []  # nothing is sent to the agents that would refuse every pull
    error = listing["error"]
    assert "jobs[0] (patient).timeout: 600 s" in error
    assert "limits.max_timeout (300 s)" in error


def test_a_node_whose_agent_is_not_ready_waits_is_counted_and_is_pulled_once_ready(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    """node-4's agent answers but its runtime is down: the job counts it and shows it waiting
    with the cause; once its runtime answers, the job pulls its images there too."""
    image = access.fresh_reference(lab)
    jobs = workdir / "waiting.yaml"
    _write(jobs, _job("everywhere", [image], pacing={"max_parallel_nodes": "100%", "jitter": 0}))
    port = free_port()
    static = [*_static(agents), f"node-4=127.0.0.1:{port}"]
    down = agent_config(lab, workdir / "token", "unix:///var/tmp/pullcheck-lab/no-such.sock")

    def node_4(body: dict[str, Any]) -> dict[str, Any]:
        return next(n for n in body["nodes"] if n["node"] == "node-4")

    with ExitStack() as stack:
        runtime_down = stack.enter_context(ExitStack())
        runtime_down.enter_context(server("agent", down, workdir, node="node-4", port=port))
        config = _aggregator(lab, workdir, jobs, static)
        agg = stack.enter_context(server("aggregator", config, workdir, name="agg-wait"))
        agg.wait_prepull_job("everywhere", lambda b: b["images_total"] == NODES + 1)
        assert agg.client().post("/v1/prepull/jobs/everywhere/run").status_code == 202
        body = agg.wait_prepull_job(
            "everywhere",
            lambda b: (
                not b["running"]
                and b["images_ready"] == NODES
                and node_4(b)["cause"] == "runtime_unavailable"
            ),
        )
        assert len(body["nodes"]) == NODES + 1 and body["images_total"] == NODES + 1
        assert body["wave"]["pending"] == 1 and body["wave"]["done"] == NODES
        item = node_4(body)
        assert item["phase"] == "pending" and item["attempts"] == 0
        assert "not ready" in item["summary"] and "no-such.sock" in item["summary"]
        assert "containerd" in item["remedy"]
        # the node's runtime is back: its agent restarts with the right socket
        runtime_down.close()
        endpoint = control.ensure_nodes(lab, NODES + 1)[f"node-{NODES + 1}"]
        up = agent_config(lab, workdir / "token", endpoint)
        stack.enter_context(server("agent", up, workdir, node="node-4", port=port))
        body = agg.wait_prepull_job("everywhere", lambda b: b["images_ready"] == NODES + 1)
    item = node_4(body)
    assert item["phase"] == "done" and item["cause"] is None and not item["skipped"]


def test_rate_limit_pauses_the_registry_for_the_job(
    lab: LabInfo, workdir: Path, agents: dict[str, Server]
) -> None:
    """The lab's 429 front says ratelimit-remaining 0;w=21600: one try, then the job waits."""
    jobs = workdir / "quota.yaml"
    _write(jobs, _job("quota", [lab.images["ratelimited"]], retries={"attempts": 1}))
    with server(
        "aggregator", _aggregator(lab, workdir, jobs, _static(agents)), workdir, name="agg-quota"
    ) as agg:
        agg.wait_prepull_job("quota", lambda b: b["images_total"] == NODES)
        mark = access.mark(lab)
        agg.client().post("/v1/prepull/jobs/quota/run")
        body = agg.wait_prepull_job(
            "quota", lambda b: "policy.pullcheck.test:15080" in b["paused_registries"]
        )
        time.sleep(2)  # give a wrong scheduler the chance to send more
        body = agg.client().get("/v1/prepull/jobs/quota").json()
    tried = [n for n in body["nodes"] if n["attempts"] > 0]
    assert len(tried) == 1 and tried[0]["cause"] == "rate_limited"
    # only the one node asked the registry (its probe HEAD and containerd's HEADs)
    heads = access.count_requests(
        lab, "policy", method="HEAD", path_contains="/ratelimited/app/manifests/", since=mark
    )
    assert heads >= 1
    other = [n for n in body["nodes"] if n["attempts"] == 0]
    assert len(other) == NODES - 1 or body["wave"]["pending"] == NODES - 1
