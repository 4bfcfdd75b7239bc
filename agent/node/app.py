"""The node agent's HTTP API (FastAPI): pull tests, connectivity, images, runtime, health, metrics.

Every route except ``/healthz`` and ``/readyz`` needs the bearer token. A caller can only make the
node contact registries named by an allowed image reference or by the configuration; credentials
sent in a request are used for that test only — never logged, cached in results, or returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from agent import __version__
from agent.credentials import Credential, CredentialError, Keyring, from_cli, loads_docker_config
from agent.cri import CriClient, ImageInfo, RuntimeUnavailable, connect
from agent.models import ProbeReport, PullTestResult
from agent.node.models import PrepullBody, PullOutcome, PullTestBody
from agent.node.runner import PullTestRunner, QueueFull, TestKey, credential_fingerprint
from agent.pulltest import NodeSettings, PullTestRequest, node_name, run_probe
from agent.reference import Reference
from agent.service.auth import TokenAuth
from agent.service.config import Settings
from agent.service.http import (
    ApiError,
    CheckedTest,
    authorize,
    check_test,
    client_of,
    install_error_handlers,
    install_guard,
)
from agent.service.logs import log_event, log_pulltest
from agent.service.metrics import AgentMetrics, monitor_event_loop_lag, parse_ratelimit_remaining
from agent.service.ratelimit import RateLimiter

__all__ = ["AgentState", "create_agent_app", "node_settings_from"]

log = logging.getLogger("pullcheck.agent")

_READY_TTL = 5.0


def node_settings_from(settings: Settings) -> NodeSettings:
    section = settings.agent
    return NodeSettings(
        endpoint=section.runtime_endpoint,
        resolv_conf=Path(section.resolv_conf),
        hosts_file=Path(section.hosts_file),
        registry_config_path=section.registry_config_path,
        ca_file=Path(section.ca_file) if section.ca_file else None,
        probe_timeout=section.probe_timeout,
    )


class AgentState:
    """Everything one agent instance holds (several may share a process, as in benchmarks)."""

    def __init__(
        self, settings: Settings, *, node: NodeSettings | None = None, name: str | None = None
    ) -> None:
        self.settings = settings
        self.node_name = name or node_name()
        self.node = dataclasses.replace(
            node or node_settings_from(settings), node_name=self.node_name
        )
        self.auth = TokenAuth(settings.token_file, enabled=settings.auth)
        limits = settings.limits
        self.limiter = RateLimiter(limits.rate_limit_per_minute, limits.rate_limit_burst)
        self.metrics = AgentMetrics(self.node_name)
        self.runner = PullTestRunner(
            self.node,
            concurrency=limits.pull_concurrency,
            queue=limits.pull_queue,
            ttl=limits.result_ttl,
            on_change=lambda active, waiting: self.metrics.set_queue_depth(waiting),
        )
        self.recent: OrderedDict[str, None] = OrderedDict()  # registries seen in allowed tests
        self.connectivity: tuple[float, bytes] | None = None
        self._connectivity_lock = asyncio.Lock()
        self._ready: tuple[float, bool, str] = (0.0, False, "not checked yet")

    def test(
        self,
        ref: Reference,
        mode: Literal["pull", "resolve"],
        timeout: float,
        credential: Credential | None,
        keyring: Keyring | None,
        *,
        keep: bool,
    ) -> tuple[PullTestRequest, TestKey]:
        """The engine request for a test under this agent's guards, and its single-flight key
        (kept pre-pulls and removed-after tests never share a flight)."""
        limits = self.settings.limits
        request = PullTestRequest(
            image=ref.original,
            mode=mode,
            credential=credential,
            keyring=keyring,
            timeout=timeout,
            keep=keep,
            max_image_size=limits.max_image_size,
            min_free_space=limits.min_free_space,
        )
        flight = f"prepull-{mode}" if keep else mode
        return request, TestKey(ref.normalized, flight, credential_fingerprint(credential, keyring))

    # --- readiness and runtime ------------------------------------------------------------

    async def cri(self, query: Callable[[CriClient], Awaitable[Any]]) -> Any:
        async with await connect(
            self.node.endpoint, timeout=self.node.cri_timeout, api_version=self.node.api_version
        ) as client:
            return await query(client)

    async def ready(self) -> tuple[bool, str]:
        checked, ok, reason = self._ready
        if time.monotonic() - checked < _READY_TTL:
            return ok, reason
        try:
            version = await self.cri(lambda c: c.version())
            ok, reason = True, f"{version.runtime_name} {version.runtime_version}"
        except RuntimeUnavailable as exc:
            ok, reason = False, str(exc)
        self.metrics.set_runtime_up(ok)
        self._ready = (time.monotonic(), ok, reason)
        return ok, reason

    # --- connectivity -----------------------------------------------------------------------

    def remember(self, registry: str) -> None:
        self.recent.pop(registry, None)
        self.recent[registry] = None
        while len(self.recent) > self.settings.agent.recent_registries:
            self.recent.popitem(last=False)

    def registries(self) -> list[str]:
        """Configured registries first, then those seen in recent allowed tests."""
        return list(dict.fromkeys([*self.settings.registries, *reversed(self.recent)]))

    async def probe_connectivity(self) -> bytes:
        async with self._connectivity_lock:
            fresh = self.connectivity
            ttl = self.settings.agent.connectivity_ttl
            if fresh is not None and time.monotonic() - fresh[0] < ttl:
                return fresh[1]
            reports: list[ProbeReport] = await asyncio.gather(
                *(run_probe(r, self.node) for r in self.registries())
            )
            for report in reports:
                self.metrics.observe_probe_report(report)
            body = _dump({"node": self.node_name, "registries": reports})
            self.connectivity = (time.monotonic(), body)
            return body

    async def connectivity_loop(self, stop: asyncio.Event) -> None:
        """Keep registry metrics fresh without waiting for a caller."""
        interval = max(self.settings.agent.connectivity_ttl, 5.0)
        while not stop.is_set():
            try:
                await self.probe_connectivity()
                await self.ready()
            except Exception:  # a probe never raises; this is a last line of defence
                log.exception("connectivity probe failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _dump(value: Any) -> bytes:
    return _ANY.dump_json(value, indent=2)


# --- the app ------------------------------------------------------------------------------------

_PULLTEST_QUERY = frozenset({"image", "mode", "timeout"})
_NO_QUERY: frozenset[str] = frozenset()


def create_agent_app(state: AgentState) -> FastAPI:
    settings = state.settings

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(state.connectivity_loop(stop)),
            asyncio.create_task(monitor_event_loop_lag(state.metrics, stop=stop)),
        ]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="pullcheck agent",
        version=__version__,
        description="Can this node's container runtime pull an image, and if not, why?",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like everything but health
    )
    app.state.pullcheck = state

    install_error_handlers(app)

    def guard(request: Request, allowed_query: frozenset[str], *, limited: bool = True) -> None:
        try:
            authorize(request, state.limiter, allowed_query, limited=limited)
        except ApiError as exc:
            if exc.status == 429:
                state.metrics.observe_request("rejected")
            raise

    async def pulltest(
        request: Request,
        image: str,
        mode: str | None,
        timeout: float | None,
        credential: Credential | None = None,
        keyring: Keyring | None = None,
    ) -> Response:
        checked = check_test(settings, image, mode, timeout)
        ref, chosen = checked.reference, checked.mode
        state.remember(ref.registry_host)
        test, key = state.test(ref, chosen, checked.timeout, credential, keyring, keep=False)
        started = time.monotonic()
        try:
            with state.metrics.track_pulltest():
                result, body, outcome = await state.runner.run(key, test)
        except QueueFull as exc:
            state.metrics.observe_request("rejected")
            raise ApiError(
                429,
                "queue_full",
                "this node is busy with other pull tests",
                {"Retry-After": RateLimiter.retry_after(exc.retry_after)},
            ) from None
        state.metrics.observe_pulltest(result, reused=outcome != "fresh", outcome=outcome)
        log_pulltest(
            log,
            result,
            client=client_of(request),
            reused=outcome,
            duration_ms=(time.monotonic() - started) * 1000,
        )
        status = {"image_too_large": 413, "insufficient_space": 507}.get(result.refused, 200)
        return Response(body, status, media_type="application/json")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive (and which node it serves, for aggregators that ask)."""
        return {"status": "ok", "node": state.node_name}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "CRI unreachable"}})
    async def readyz() -> JSONResponse:
        """Ready when the container runtime answers over CRI."""
        ok, reason = await state.ready()
        return JSONResponse({"ready": ok, "runtime": reason}, 200 if ok else 503)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        guard(request, _NO_QUERY, limited=False)
        return JSONResponse(app.openapi())

    @app.get("/metrics", tags=["observability"])
    async def metrics(request: Request) -> Response:
        guard(request, _NO_QUERY, limited=False)
        payload, content_type = state.metrics.render()
        return Response(payload, media_type=content_type)

    @app.get("/v1/pulltest", tags=["pulltest"], response_model=PullTestResult)
    async def get_pulltest(
        request: Request,
        image: Annotated[str, Query(min_length=1, max_length=1024)],
        mode: Annotated[Literal["pull", "resolve"] | None, Query()] = None,
        timeout: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    ) -> Response:
        """Run (or reuse) a pull test of ``image`` on this node."""
        guard(request, _PULLTEST_QUERY)
        return await pulltest(request, image, mode, timeout)

    @app.post("/v1/pulltest", tags=["pulltest"], response_model=PullTestResult)
    async def post_pulltest(request: Request, body: Annotated[PullTestBody, Body()]) -> Response:
        """Like GET, with credentials for this test only (never stored or returned)."""
        guard(request, _NO_QUERY)
        credential, keyring = _credentials(body.creds, body.auth, body.docker_config)
        return await pulltest(request, body.image, body.mode, body.timeout, credential, keyring)

    @app.post("/v1/prepull", tags=["prepull"])
    async def prepull(request: Request, body: Annotated[PrepullBody, Body()]) -> JSONResponse:
        """Warm this node's cache with one image (sent by the aggregator's pre-pull jobs).

        Never re-pulls a digest the node has: ``IfNotPresent`` (or a digest-pinned reference)
        only checks presence; ``Always`` resolves the tag's digest with a manifest HEAD and pulls
        only when the node lacks it. Pulled images are kept.
        """
        guard(request, _NO_QUERY, limited=False)
        if settings.read_only:
            raise ApiError(403, "read_only", "this agent is read-only: it does not pre-pull")
        checked = check_test(settings, body.image, "pull", body.timeout)
        credential, keyring = _credentials(None, None, body.docker_config)
        state.remember(checked.reference.registry_host)
        outcome = await prepull_image(state, checked, body.policy, credential, keyring)
        return JSONResponse(outcome.model_dump(mode="json"))

    @app.get("/v1/connectivity", tags=["connectivity"])
    async def connectivity(request: Request) -> Response:
        """Probes of the configured registries and of those seen in recent tests."""
        guard(request, _NO_QUERY)
        return Response(await state.probe_connectivity(), media_type="application/json")

    @app.get("/v1/images", tags=["runtime"])
    async def images(request: Request) -> dict[str, Any]:
        """Images on this node, as the runtime lists them."""
        guard(request, _NO_QUERY)
        found = await _runtime_call(state, lambda c: c.list_images())
        return {"node": state.node_name, "images": [asdict(i) for i in found]}

    @app.get("/v1/runtime", tags=["runtime"])
    async def runtime(request: Request) -> dict[str, Any]:
        """The runtime's version, conditions and image filesystem usage."""
        guard(request, _NO_QUERY)

        async def query(client: CriClient) -> dict[str, Any]:
            return {
                "node": state.node_name,
                "endpoint": client.endpoint,
                "api_version": client.api_version,
                "version": asdict(await client.version()),
                "status": asdict(await client.status()),
                "image_filesystems": [asdict(f) for f in await client.image_fs_info()],
            }

        result: dict[str, Any] = await _runtime_call(state, query)
        return result

    log_event(log, "agent_configured", node=state.node_name, read_only=settings.read_only)
    return install_guard(app, settings.limits, state.auth)


def _credentials(
    creds: str | None, auth: str | None, docker_config: dict[str, Any] | str | None
) -> tuple[Credential | None, Keyring | None]:
    try:
        credential = from_cli(creds, auth)
        keyring = None
        if docker_config is not None:
            text = docker_config if isinstance(docker_config, str) else _dump(docker_config)
            keyring = loads_docker_config(text, origin="request")
    except CredentialError as exc:
        raise ApiError(400, "invalid_credentials", str(exc)) from None
    return credential, keyring


def _has_digest(image: ImageInfo | None, digest: str) -> bool:
    return image is not None and any(d.endswith("@" + digest) for d in image.repo_digests)


async def prepull_image(
    state: AgentState,
    checked: CheckedTest,
    policy: str,
    credential: Credential | None,
    keyring: Keyring | None,
) -> PullOutcome:
    """One image onto this node, kind to the registry; the outcome the scheduler needs."""
    ref = checked.reference
    started = time.monotonic()
    present = await _runtime_call(state, lambda c: c.image_status(ref.kubelet_image))

    def done(result: PullTestResult | None, *, skipped: bool, digest: str) -> PullOutcome:
        remaining, window = _ratelimit(result)
        return PullOutcome(
            ok=result is None or result.success,
            skipped=skipped,
            digest=digest,
            cause=None if result is None else result.cause,
            summary="already present" if skipped else (result.summary if result else ""),
            remedy="" if result is None else result.remedy,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            registry=ref.registry_host,
            ratelimit_remaining=remaining,
            ratelimit_window=window,
        )

    def present_digest() -> str:
        found = next(iter(present.repo_digests), "") if present is not None else ""
        return found.rsplit("@", 1)[-1]

    if present is not None and (policy == "IfNotPresent" or ref.digest):
        return done(None, skipped=True, digest=ref.digest or present_digest())
    resolved: PullTestResult | None = None
    if present is not None:  # Always with a tag: is the tag's current digest here already?
        resolved = await _run(state, ref, "resolve", checked.timeout, credential, keyring)
        digest = _manifest_digest(resolved)
        if digest and _has_digest(present, digest):
            return done(resolved, skipped=True, digest=digest)
    result = await _run(state, ref, "pull", checked.timeout, credential, keyring)
    digest = result.image_info.repo_digest.rsplit("@", 1)[-1] if result.image_info else ""
    return done(result, skipped=False, digest=digest)


async def _run(
    state: AgentState,
    ref: Reference,
    mode: Literal["pull", "resolve"],
    timeout: float,
    credential: Credential | None,
    keyring: Keyring | None,
) -> PullTestResult:
    request, key = state.test(ref, mode, timeout, credential, keyring, keep=True)
    result, _body, outcome = await state.runner.run(key, request)
    state.metrics.observe_pulltest(result, reused=outcome != "fresh", outcome=outcome)
    return result


def _manifest_digest(result: PullTestResult) -> str:
    for report in result.endpoints:
        for probe in report.probes:
            ev = probe.evidence
            if report.success and ev is not None and ev.kind == "manifest" and ev.digest:
                return ev.digest
    return ""


def _ratelimit(result: PullTestResult | None) -> tuple[float | None, float | None]:
    """The lowest ``ratelimit-remaining`` the manifest probes saw, and its window (seconds)."""
    best: tuple[float | None, float | None] = (None, None)
    for report in result.endpoints if result is not None else []:
        for probe in report.probes:
            ev = probe.evidence
            if ev is None or ev.kind != "manifest" or not ev.ratelimit_remaining:
                continue
            remaining = parse_ratelimit_remaining(ev.ratelimit_remaining)
            if remaining is None:
                continue
            window = ev.ratelimit_remaining.partition(";")[2].strip().removeprefix("w=")
            if best[0] is None or remaining < best[0]:
                best = (remaining, float(window) if window.isdigit() else None)
    return best


async def _runtime_call(state: AgentState, query: Callable[[CriClient], Awaitable[Any]]) -> Any:
    try:
        return await state.cri(query)
    except RuntimeUnavailable as exc:
        raise ApiError(503, "runtime_unavailable", str(exc)) from None
