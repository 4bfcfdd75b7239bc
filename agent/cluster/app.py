"""The aggregator's HTTP API: "can every node pull this, and if not, why?"

``GET|POST /v1/pulltest`` fans a test out to every agent at once (at most ``max_in_flight`` in
flight, a deadline per node) and answers one summary plus one entry per node — a node that does
not answer is listed with cause ``agent_unreachable``, never dropped; one that answers with an
error status is listed with cause ``agent_refused``; a node asked for by name (``nodes=a,b``)
that discovery does not know is listed with cause ``node_not_found`` (each with ``summary`` and
``remedy``: :mod:`agent.cluster.failures`). ``?stream=ndjson`` streams each node's entry as it
arrives, then the summary. ``GET /v1/connectivity`` is the node-by-registry-endpoint matrix.

Every replica serves the whole API. Scheduled work (the pre-pull coordinator) runs only on the
replica that leads (:mod:`agent.cluster.leader`); the others forward ``/v1/prepull/jobs…`` to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from fastapi import Body, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from agent import __version__
from agent.cluster.discovery import AgentTarget, Discovery, kube_client, make_discovery
from agent.cluster.failures import (
    AGENT_REFUSED,
    AGENT_UNREACHABLE,
    NODE_NOT_FOUND,
    not_found,
    refused,
    unreachable,
)
from agent.cluster.leader import Election, make_election, while_leading
from agent.cluster.prepull.coordinator import PrepullCoordinator
from agent.cluster.readiness import AgentReadiness
from agent.node.models import PullTestBody
from agent.service.auth import TokenAuth
from agent.service.config import PrepullSection, Settings
from agent.service.http import (
    ApiError,
    authorize,
    check_test,
    client_of,
    install_error_handlers,
    install_guard,
)
from agent.service.logs import log_event
from agent.service.metrics import OTHER, AggregatorMetrics, monitor_event_loop_lag
from agent.service.ratelimit import RateLimiter

__all__ = [
    "AGENT_REFUSED",
    "AGENT_UNREACHABLE",
    "NODE_NOT_FOUND",
    "AggregatorState",
    "create_aggregator_app",
    "summarize",
]

log = logging.getLogger("pullcheck.aggregator")

_NODE_GRACE = 5.0  # seconds a node may take beyond the test's own timeout
_ENDPOINTS = frozenset({"pulltest", "agents", "prepull", "connectivity", "openapi", "metrics"})
_IDENTIFY_TIMEOUT = 2.0
_FORWARD_TIMEOUT = 10.0  # seconds a non-leader waits for the leader's answer
_FORWARDED_BY = "X-Pullcheck-Forwarded-By"  # set on forwarded requests: never forwarded twice
_MAX_NODES = 5000  # names in nodes=a,b (Kubernetes' largest supported cluster)
# a node name (DNS subdomain), or the host:port label of an agent whose node is not known yet
_NODE_LABEL = re.compile(r"^[A-Za-z0-9\[]([-A-Za-z0-9.:\[\]]{0,260}[A-Za-z0-9\]])?$")
_LEADER_URL = re.compile(r"^https?://[^/\s?#@]+$")  # a base URL, no credentials, no path
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class AggregatorState:
    def __init__(self, settings: Settings, *, discovery: Discovery | None = None) -> None:
        self.settings = settings
        section = settings.aggregator
        self.auth = TokenAuth(settings.token_file, enabled=settings.auth)
        self.limiter = RateLimiter(
            settings.limits.rate_limit_per_minute, settings.limits.rate_limit_burst
        )
        self.discovery = discovery or make_discovery(section.discovery)
        self.metrics = AggregatorMetrics()
        self.node_names: dict[str, str] = {}  # agent url → node name learned from its answers
        self._client: httpx.AsyncClient | None = None
        self.readiness = AgentReadiness(lambda: self.client, concurrency=section.max_in_flight)
        self.election: Election = make_election(
            section.leader_election,
            listen=section.listen,
            client=lambda: kube_client(section.discovery),
            default_namespace=section.discovery.namespace,
            on_change=self.metrics.set_leader,
        )
        self.prepull: PrepullCoordinator | None = None  # while this replica leads

    def coordinator(self) -> PrepullCoordinator:
        """A pre-pull coordinator for one term of leadership (its state is rebuilt each term)."""
        prepull = self.settings.aggregator.prepull
        return PrepullCoordinator(
            jobs_file=Path(prepull.jobs_file),
            missing_ok=prepull.jobs_file == PrepullSection().jobs_file,
            poll_interval=prepull.poll_interval,
            tick=prepull.tick,
            max_timeout=self.settings.limits.max_timeout,
            agents=self.discovery.agents,
            readiness=self.readiness,
            client=lambda: self.client,
            headers=self.headers,
            label=self.label,
            metrics=self.metrics,
        )

    async def run_prepull(self, stop: asyncio.Event) -> None:
        """The pre-pull jobs, for one term of leadership (:func:`while_leading` runs this)."""
        coordinator = self.prepull = self.coordinator()
        try:
            await coordinator.run(stop)
        finally:
            self.prepull = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limit = self.settings.aggregator.max_in_flight
            self._client = httpx.AsyncClient(
                trust_env=False,
                timeout=None,  # noqa: S113 - every request runs under its own per-node deadline
                # agents (uvicorn) drop idle connections after 5 s: expire ours first
                limits=httpx.Limits(
                    max_connections=limit, max_keepalive_connections=limit, keepalive_expiry=2.0
                ),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        await self.discovery.aclose()

    def headers(self) -> dict[str, str]:
        if not self.settings.auth:
            return {}
        return {"Authorization": f"Bearer {self.auth.token()}"}

    def label(self, target: AgentTarget) -> str:
        return target.node or self.node_names.get(target.url) or target.label

    async def targets(self, nodes: set[str] | None) -> tuple[list[AgentTarget], list[str]]:
        """The agents to ask (all, or those of ``nodes``) and the requested nodes no agent is
        known for."""
        agents = await self.discovery.agents()
        if not nodes:
            return agents, []
        unknown = [a for a in agents if not (a.node or a.url in self.node_names)]
        if unknown:  # DNS discovery knows addresses only: ask those agents who they are
            await asyncio.gather(*(self._identify(a) for a in unknown))
        chosen = [a for a in agents if self.label(a) in nodes]
        found = {self.label(a) for a in chosen}
        return chosen, sorted(nodes - found)

    async def _identify(self, target: AgentTarget) -> None:
        with contextlib.suppress(httpx.HTTPError, ValueError, TimeoutError):
            async with asyncio.timeout(_IDENTIFY_TIMEOUT):
                reply = await self.client.get(f"{target.url}/healthz")
                node = reply.json().get("node")
                if isinstance(node, str) and node:
                    self.node_names[target.url] = node


async def _ask(
    state: AggregatorState,
    target: AgentTarget,
    method: Literal["GET", "POST"],
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
    deadline: float,
) -> dict[str, Any]:
    """One agent's answer as a node entry; never raises."""
    label = state.label(target)
    try:
        async with asyncio.timeout(deadline):
            for attempt in (1, 2):
                try:
                    reply = await state.client.request(
                        method,
                        f"{target.url}{path}",
                        params=params,
                        content=body,
                        headers={**state.headers(), "Content-Type": "application/json"},
                    )
                    raw = await reply.aread()
                    break
                except _STALE_CONNECTION:
                    # a kept-alive connection the agent had just closed: the request never
                    # reached it; the tests are idempotent (and shared), so ask once more
                    if attempt == 2:
                        raise
    except TimeoutError:
        return unreachable(label, target.url, f"no answer within {deadline:g} s").entry()
    except httpx.HTTPError as exc:
        reason = type(exc).__name__ if not str(exc) else str(exc)
        return unreachable(label, target.url, reason).entry()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        reason = f"HTTP {reply.status_code}, not a JSON object"
        status = reply.status_code
        return unreachable(label, target.url, reason, status=status, not_an_agent=True).entry()
    if reply.status_code != 200 and "error" in answer:
        kind, message = str(answer["error"]), str(answer.get("message", ""))
        return refused(label, target.url, reply.status_code, kind, message).entry()
    node = answer.get("node")
    if isinstance(node, str) and node:
        state.node_names[target.url] = node
    answer.setdefault("node", label)
    answer["agent"] = target.url
    return answer


def _digest(entry: dict[str, Any]) -> str:
    """What the node resolved the tag to: the repo digest it pulled, or the manifest HEAD's."""
    info = entry.get("image_info") or {}
    repo_digest = str(info.get("repo_digest", ""))
    if "@" in repo_digest:
        return repo_digest.split("@", 1)[1]
    for endpoint in entry.get("endpoints") or []:
        if not endpoint.get("success"):
            continue
        for probe in endpoint.get("probes") or []:
            evidence = probe.get("evidence") or {}
            if evidence.get("kind") == "manifest" and evidence.get("digest"):
                return str(evidence["digest"])
    return ""


def summarize(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{nodes, ok, failed, by_cause, digests, digest_drift}`` over node entries."""
    nodes = ok = 0
    by_cause: dict[str, list[str]] = {}
    digests: dict[str, list[str]] = {}
    for entry in entries:
        nodes += 1
        node = str(entry.get("node", "?"))
        if entry.get("success"):
            ok += 1
        else:
            cause = entry.get("cause") or entry.get("refused") or "unknown"
            by_cause.setdefault(str(cause), []).append(node)
        digest = _digest(entry)
        if digest:
            digests.setdefault(digest, []).append(node)
    for names in (*by_cause.values(), *digests.values()):
        names.sort()
    return {
        "nodes": nodes,
        "ok": ok,
        "failed": nodes - ok,
        "by_cause": dict(sorted(by_cause.items())),
        "digests": digests,
        "digest_drift": len(digests) > 1,
    }


def create_aggregator_app(state: AggregatorState) -> FastAPI:
    settings = state.settings
    section = settings.aggregator

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """Every background task of the aggregator starts and stops here."""
        stop = asyncio.Event()  # work of every replica
        stop_leading = asyncio.Event()  # work that runs only while this replica leads
        stop_election = asyncio.Event()  # last: the Lease is released once that work stopped
        agents = state.discovery.agents
        tasks = [
            asyncio.create_task(state.discovery.run(stop)),
            asyncio.create_task(monitor_event_loop_lag(state.metrics, stop=stop)),
            asyncio.create_task(state.readiness.run(stop, agents, state.metrics.set_agents)),
        ]
        # cluster-wide scheduled work: one while_leading() per piece, all under one election
        leading = [
            asyncio.create_task(
                while_leading(state.election, state.run_prepull, stop_leading, name="pre-pull jobs")
            ),
        ]
        election = asyncio.create_task(state.election.run(stop_election))
        try:
            yield
        finally:
            stop_leading.set()
            await asyncio.gather(*leading, return_exceptions=True)
            stop_election.set()
            await asyncio.gather(election, return_exceptions=True)
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.close()

    app = FastAPI(
        title="pullcheck aggregator",
        version=__version__,
        description="Can every node pull this image, and if not, why?",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like everything but health
    )

    install_error_handlers(app)

    def guard(request: Request, allowed: frozenset[str], endpoint: str) -> None:
        try:
            authorize(request, state.limiter, allowed)
        except ApiError as exc:
            state.metrics.observe_request(endpoint, exc.kind)
            raise

    def check(image: str, mode: str | None, timeout: float | None) -> float:
        """The per-node deadline for a test that passes the policy."""
        budget = check_test(settings, image, mode, timeout).timeout
        return min(budget + _NODE_GRACE, section.node_timeout)

    async def fan_out(
        targets: list[AgentTarget],
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        deadline: float,
        absent: Iterable[dict[str, Any]] = (),
    ) -> AsyncIterator[dict[str, Any]]:
        """Node entries in the order they arrive, at most ``max_in_flight`` requests at once;
        first the ``absent`` ones (nodes without an agent to ask)."""
        for entry in absent:
            state.metrics.observe_node_result(str(entry.get("cause")))
            yield entry
        gate = asyncio.Semaphore(section.max_in_flight)

        async def one(target: AgentTarget) -> dict[str, Any]:
            async with gate:
                return await _ask(
                    state, target, method, path, params=params, body=body, deadline=deadline
                )

        tasks = [asyncio.create_task(one(t)) for t in targets]
        try:
            for finished in asyncio.as_completed(tasks):
                entry = await finished
                failed = not entry.get("success")
                state.metrics.observe_node_result(
                    (entry.get("cause") or entry.get("refused") or "unknown") if failed else None
                )
                yield entry
        finally:
            for task in tasks:
                task.cancel()

    async def pulltest(
        request: Request,
        image: str,
        mode: str | None,
        timeout: float | None,
        nodes: str | None,
        stream: str | None,
        body: bytes | None = None,
    ) -> Response:
        deadline = check(image, mode, timeout)
        wanted = _wanted_nodes(nodes)
        known = await state.discovery.agents()
        if not known:
            raise ApiError(
                503,
                "no_agents",
                "no agents found"
                + (f" for nodes {sorted(wanted)}" if wanted else "")
                + (f" ({state.discovery.last_error})" if state.discovery.last_error else ""),
            )
        targets, missing = await state.targets(wanted)
        mode_name = state.discovery.mode
        absent = [not_found(node, len(known), mode_name).entry() for node in missing]
        params = {"image": image} if body is None else None
        if params is not None and mode:
            params["mode"] = mode
        if params is not None and timeout is not None:
            params["timeout"] = f"{timeout:g}"
        method: Literal["GET", "POST"] = "GET" if body is None else "POST"
        started = time.monotonic()
        entries = fan_out(
            targets,
            method,
            "/v1/pulltest",
            params=params,
            body=body,
            deadline=deadline,
            absent=absent,
        )

        def finish(collected: list[dict[str, Any]]) -> dict[str, Any]:
            seconds = time.monotonic() - started
            state.metrics.observe_fanout("pulltest", seconds)
            summary = summarize(collected)
            summary["duration_ms"] = round(seconds * 1000, 1)
            log_event(
                log,
                "aggregated_pulltest",
                image=image,
                mode=mode or "",
                nodes=summary["nodes"],
                ok=summary["ok"],
                failed=summary["failed"],
                client=client_of(request),
            )
            return summary

        if stream == "ndjson":

            async def lines() -> AsyncIterator[bytes]:
                collected: list[dict[str, Any]] = []
                async for entry in entries:
                    collected.append(entry)
                    yield json.dumps(entry).encode() + b"\n"
                yield json.dumps({"summary": finish(collected)}).encode() + b"\n"

            state.metrics.observe_request("pulltest", "ok")
            return StreamingResponse(lines(), media_type="application/x-ndjson")
        collected = [entry async for entry in entries]
        collected.sort(key=lambda e: str(e.get("node", "")))
        state.metrics.observe_request("pulltest", "ok")
        answer = {"image": image, "mode": mode, "summary": finish(collected), "nodes": collected}
        return JSONResponse(answer)

    query = frozenset({"image", "mode", "timeout", "nodes", "stream"})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "no agents found"}})
    async def readyz() -> JSONResponse:
        """Ready once discovery has found at least one agent."""
        agents = await state.discovery.agents()
        ready = bool(agents)
        return JSONResponse(
            {
                "ready": ready,
                "agents": len(agents),
                "error": state.discovery.last_error,
                "leader": state.election.detail(),
            },
            200 if ready else 503,
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        guard(request, frozenset(), "openapi")
        return JSONResponse(app.openapi())

    @app.get("/metrics", tags=["observability"])
    async def metrics() -> Response:
        payload, content_type = state.metrics.render()
        return Response(payload, media_type=content_type)

    @app.get("/v1/agents", tags=["agents"])
    async def agents(request: Request) -> dict[str, Any]:
        """The agents discovery currently knows."""
        guard(request, frozenset(), "agents")
        found = await state.discovery.agents()
        listed = []
        for target in found:
            seen = state.readiness.get(target)
            listed.append(
                {"node": state.label(target), "url": target.url, "state": seen.state.value}
                | ({"reason": seen.reason} if seen.reason else {})
            )
        return {"agents": listed, "last_error": state.discovery.last_error}

    @app.get("/v1/pulltest", tags=["pulltest"])
    async def get_pulltest(
        request: Request,
        image: Annotated[str, Query(min_length=1, max_length=1024)],
        mode: Annotated[Literal["pull", "resolve"] | None, Query()] = None,
        timeout: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
        nodes: Annotated[str | None, Query(max_length=65536)] = None,
        stream: Annotated[Literal["ndjson"] | None, Query()] = None,
    ) -> Response:
        """Test ``image`` on every node (or ``nodes=a,b``) and summarise."""
        guard(request, query, "pulltest")
        return await pulltest(request, image, mode, timeout, nodes, stream)

    @app.post("/v1/pulltest", tags=["pulltest"])
    async def post_pulltest(
        request: Request,
        body: Annotated[PullTestBody, Body()],
        nodes: Annotated[str | None, Query(max_length=65536)] = None,
        stream: Annotated[Literal["ndjson"] | None, Query()] = None,
    ) -> Response:
        """Like GET, with credentials passed on to the agents for this test only."""
        guard(request, frozenset({"nodes", "stream"}), "pulltest")
        raw = body.model_dump_json(exclude_none=True).encode()
        return await pulltest(request, body.image, body.mode, body.timeout, nodes, stream, raw)

    def leading() -> PrepullCoordinator | None:
        """The coordinator when this replica leads; None when the leader is another one."""
        return state.prepull if state.election.leading else None

    @app.get("/v1/prepull/jobs", tags=["prepull"])
    async def prepull_jobs(request: Request) -> JSONResponse:
        """Every warm-cache job with its schedule and progress (no per-node detail)."""
        guard(request, frozenset(), "prepull")
        coordinator = leading()
        if coordinator is None:
            return await _forward(state, request, "GET", "/v1/prepull/jobs")
        source = coordinator.source
        return JSONResponse(
            {
                "jobs": [s.model_dump(mode="json") for s in coordinator.statuses()],
                "jobs_file": str(source.path),
                "version": source.version,
                "error": source.last_error,
                "leader": state.election.identity,
            }
        )

    @app.get("/v1/prepull/jobs/{name}", tags=["prepull"])
    async def prepull_job(request: Request, name: str) -> JSONResponse:
        """One job, per node and image: phase, digest, duration, cause and remedy."""
        guard(request, frozenset(), "prepull")
        coordinator = leading()
        if coordinator is None:
            return await _forward(state, request, "GET", f"/v1/prepull/jobs/{_segment(name)}")
        status = coordinator.status(name)
        if status is None:
            raise ApiError(404, "not_found", f"no pre-pull job named {name!r}")
        return JSONResponse(status.model_dump(mode="json") | {"leader": state.election.identity})

    @app.post("/v1/prepull/jobs/{name}/run", tags=["prepull"], status_code=202)
    async def prepull_run(request: Request, name: str) -> JSONResponse:
        """Run a job now (all its nodes), within its caps."""
        guard(request, frozenset(), "prepull")
        coordinator = leading()
        if coordinator is None:
            path = f"/v1/prepull/jobs/{_segment(name)}/run"
            return await _forward(state, request, "POST", path)
        if name not in coordinator.jobs:
            raise ApiError(404, "not_found", f"no pre-pull job named {name!r}")
        if not coordinator.start(name):
            raise ApiError(409, "running", f"pre-pull job {name!r} is already running")
        return JSONResponse({"job": name, "started": True, "leader": state.election.identity}, 202)

    @app.get("/v1/connectivity", tags=["connectivity"])
    async def connectivity(request: Request) -> JSONResponse:
        """Node-by-registry-endpoint matrix from every agent's connectivity probes."""
        guard(request, frozenset(), "connectivity")
        targets = await state.discovery.agents()
        started = time.monotonic()
        deadline = min(section.node_timeout, 60.0)
        entries = [e async for e in fan_out(targets, "GET", "/v1/connectivity", deadline=deadline)]
        state.metrics.observe_fanout("connectivity", time.monotonic() - started)
        state.metrics.observe_request("connectivity", "ok")
        return JSONResponse(connectivity_matrix(entries))

    return install_guard(
        app,
        settings.limits,
        state.auth,
        on_reject=lambda path, kind: state.metrics.observe_request(_endpoint_of(path), kind),
    )


def _endpoint_of(path: str) -> str:
    """The ``endpoint`` metric label of a request refused before routing (the route names the
    handlers use; anything else is ``other``)."""
    parts = path.strip("/").split("/")
    name = parts[1] if parts[0] == "v1" and len(parts) > 1 else parts[0].removesuffix(".json")
    return name if name in _ENDPOINTS else OTHER


def _wanted_nodes(nodes: str | None) -> set[str] | None:
    """The node names of ``nodes=a,b`` (None: all); 400 for a name that cannot be one."""
    wanted = {n.strip() for n in (nodes or "").split(",") if n.strip()}
    if len(wanted) > _MAX_NODES:
        raise ApiError(400, "bad_request", f"nodes: at most {_MAX_NODES} names")
    for name in sorted(wanted):
        if not _NODE_LABEL.match(name):
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise ApiError(
                400, "bad_request", f"nodes: {shown!r} is not a node name (or agent host:port)"
            )
    return wanted or None


def _segment(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")


async def _forward(
    state: AggregatorState, request: Request, method: Literal["GET", "POST"], path: str
) -> JSONResponse:
    """The leader's answer to this request (this replica does not lead).

    Sent with the aggregator's bearer token and a bounded timeout; a request that was forwarded
    already is not forwarded again. 503 ``no_leader`` when no replica leads (yet), 503
    ``leader_unreachable`` when the leader does not answer.
    """
    me = state.election.identity
    retry = {"Retry-After": "2"}
    if request.headers.get(_FORWARDED_BY):
        raise ApiError(
            503, "no_leader", f"{me} does not lead the scheduled work (any more): retry", retry
        )
    leader = state.election.leader()
    if leader is None or leader.identity == me:
        why = f" ({state.election.last_error})" if state.election.last_error else ""
        raise ApiError(
            503, "no_leader", f"no replica leads the scheduled work yet{why}: retry", retry
        )
    if not _LEADER_URL.match(leader.url):
        raise ApiError(
            503,
            "no_leader",
            f"the leader {leader.identity} published no usable URL ({leader.url!r})",
            retry,
        )
    where = f"the leader {leader.identity} at {leader.url}"
    try:
        async with asyncio.timeout(_FORWARD_TIMEOUT):
            reply = await state.client.request(
                method, f"{leader.url}{path}", headers={**state.headers(), _FORWARDED_BY: me}
            )
            raw = await reply.aread()
    except TimeoutError:
        message = f"{where} did not answer within {_FORWARD_TIMEOUT:g} s"
        raise ApiError(503, "leader_unreachable", message, retry) from None
    except httpx.HTTPError as exc:
        message = f"{where}: {str(exc) or type(exc).__name__}"
        raise ApiError(503, "leader_unreachable", message, retry) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        message = f"{where} answered HTTP {reply.status_code}, not a JSON object"
        raise ApiError(503, "leader_unreachable", message, retry)
    answer.setdefault("leader", leader.identity)
    answer["forwarded_by"] = me
    return JSONResponse(answer, reply.status_code)


def connectivity_matrix(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows = nodes, columns = registry endpoints (in the order the runtime tries them)."""
    columns: dict[str, dict[str, str]] = {}
    rows = []
    failing: dict[str, list[str]] = {}
    unreachable = []
    for entry in sorted(entries, key=lambda e: str(e.get("node", ""))):
        node = str(entry.get("node", "?"))
        if "registries" not in entry:
            unreachable.append(node)
            rows.append(
                {
                    "node": node,
                    "reachable": False,
                    **{k: entry.get(k) for k in ("cause", "summary", "remedy", "status")},
                }
            )
            continue
        cells: dict[str, dict[str, Any]] = {}
        for report in entry["registries"]:
            registry = report.get("registry", "")
            for endpoint_report in report.get("endpoints") or []:
                endpoint = endpoint_report.get("endpoint", {})
                url = str(endpoint.get("url", ""))
                columns.setdefault(
                    url, {"registry": registry, "url": url, "role": endpoint.get("role", "")}
                )
                ok = bool(endpoint_report.get("success"))
                cells[url] = {
                    "success": ok,
                    "cause": endpoint_report.get("cause"),
                    "summary": endpoint_report.get("summary", ""),
                }
                if not ok:
                    failing.setdefault(url, []).append(node)
        rows.append({"node": node, "reachable": True, "cells": cells})
    return {
        "columns": list(columns.values()),
        "rows": rows,
        "summary": {"nodes": len(rows), "unreachable": unreachable, "failing": failing},
    }
