"""The pull test: on one node, for one image, do what kubelet and containerd do, and say why not.

Data flow (docs/architecture.md): parse the reference → choose credentials with kubelet's keyring
rules → in parallel, (a) probe every endpoint containerd would contact (hosts.toml order) and
(b) ask the runtime over CRI (ImageStatus, PullImage per credential, ImageStatus, RemoveImage) →
diagnose the failure from the runtime's text plus the probe evidence.

A pull test costs the pull and little more: this module imports only what sends PullImage (the
CRI client, the reference and credential rules). The engine — result models (pydantic),
hosts.toml, probes, diagnosis — loads in a worker thread once the runtime answered, while the
event loop goes on to send PullImage; the probes start as soon as it is loaded, beside the pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent import __version__, defaults, dockerhub
from agent.credentials import Credential, Keyring
from agent.cri import CriClient, CriError, ImageInfo, RuntimeUnavailable, RuntimeVersion, connect
from agent.reference import InvalidReference, Reference, is_registry_only, parse, parse_registry
from agent.timing import PhaseClock

if TYPE_CHECKING:
    from agent.models import (
        Cause,
        CredentialAttempt,
        Endpoint,
        EndpointReport,
        ImageResult,
        ProbeReport,
        PullTestResult,
        RuntimeInfo,
    )
    from agent.probes import ProbeContext, RegistryProbe

__all__ = ["NodeSettings", "PullTestRequest", "node_name", "run_probe", "run_pull_test"]

Progress = Callable[[str], None]

_PROBE_GRACE = 2.0  # seconds the probes may run past the test deadline
# a pull still running this long gets its probes beside it, even when a success would not need them
_PROBES_AFTER = 1.0  # seconds
# what the pull itself does not need: the result's modules, loaded by _load_engine while the
# runtime pulls, and the probes, loaded when they are to run
_RESULTS = ("agent.models", "agent.hosts", "agent.diagnosis")
_ENGINE = (*_RESULTS, "agent.probes")


@dataclass(frozen=True)
class NodeSettings:
    """How this node's runtime sees the registry path (defaults are a node's real paths)."""

    endpoint: str | None = None  # CRI endpoint; None → $CONTAINER_RUNTIME_ENDPOINT → auto-detect
    resolv_conf: Path = defaults.RESOLV_CONF
    hosts_file: Path = defaults.HOSTS_FILE
    registry_config_path: str = defaults.REGISTRY_CONFIG_PATH
    ca_file: Path | None = None  # extra CA bundle on top of the system trust store
    probe_timeout: float = defaults.PROBE_TIMEOUT  # per probe step
    cri_timeout: float = defaults.CRI_TIMEOUT  # connect and non-pull RPCs, like crictl --timeout
    api_version: str | None = None  # force "v1alpha2"; None → negotiate
    node_name: str | None = None  # reported as ``node``; None → $NODE_NAME → host name
    # where the node's root is mounted (a DaemonSet's ``/host``): paths in remedies are the
    # node's own, as the operator edits them there
    host_root: str = ""

    @property
    def hosts_dir(self) -> str:
        """containerd's hosts.toml directory as the node sees it (its first, for ``a:b``)."""
        first = self.registry_config_path.split(":")[0]
        root = self.host_root.rstrip("/")
        return first[len(root) :] if root and first.startswith(root + "/") else first


@dataclass(frozen=True)
class PullTestRequest:
    image: str
    mode: Literal["resolve", "pull"] = "pull"
    credential: Credential | None = field(default=None, repr=False)  # --creds / --auth
    keyring: Keyring | None = field(default=None, repr=False)  # --docker-config
    timeout: float = 300.0
    keep: bool = False
    # guards checked before any layer is downloaded (0 = off); a refusal is not a cause
    max_image_size: int = 0  # bytes: config + layers of the node platform's manifest
    min_free_space: int = 0  # bytes free on the runtime's image filesystem


def node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


def node_platform() -> str:
    machine = platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
    }.get(machine, machine)
    return f"linux/{arch}"


def _import_engine(names: tuple[str, ...] = _ENGINE) -> None:
    for name in names:
        importlib.import_module(name)


async def _load_engine(names: tuple[str, ...] = _ENGINE) -> None:
    """Import ``names`` in a worker thread: the event loop meanwhile serves the CRI calls (and
    the runtime pulls on its own cores). A no-op once loaded, as in the agent."""
    if not all(name in sys.modules for name in names):
        await asyncio.to_thread(_import_engine, names)


def _credentials_for(ref: Reference, req: PullTestRequest) -> list[Credential | None]:
    """Explicit --creds/--auth as-is; else every keyring match in order; else anonymous."""
    if req.credential is not None:
        return [req.credential]
    if req.keyring is not None:
        found: list[Credential | None] = list(req.keyring.lookup(ref.name))
        if found:
            return found
    return [None]


def _explain_credentials(
    result: PullTestResult | ProbeReport, req: PullTestRequest, ref: Reference
) -> None:
    """A docker config was given but none of its entries matched: say why, name the key to add."""
    from agent.models import Cause

    if req.credential is not None or req.keyring is None:
        return
    match = req.keyring.explain(ref)
    if match.matched:
        return
    result.warnings.append(f"{match.describe()} The test ran without credentials.")
    # causes whose answer depends on who asks: a registry refusing an anonymous pull says 401 or
    # 403, and registries that hide private repositories (Docker Hub, GHCR) say "not found"
    identity = (Cause.UNAUTHORIZED, Cause.FORBIDDEN, Cause.REPOSITORY_NOT_FOUND)
    if result.success or result.cause not in identity:
        return
    result.summary += f"; no pull-secret entry matched {ref.domain}, so the test ran anonymously"
    if result.cause is Cause.UNAUTHORIZED:
        lead = (
            f"No pull-secret entry matches {ref.domain}: {match.fix}; kubelet needs the same "
            "host and port (the warnings list the entries and why none matched)."
        )
    else:
        lead = (
            f"No pull-secret entry matched {ref.domain}, so the registry saw an anonymous pull; "
            f"if the repository is private, {match.fix}."
        )
    result.remedy = f"{lead} {result.remedy}".rstrip()


def _probe_context(
    settings: NodeSettings,
    creds: list[Credential | None],
    ref: Reference | None,
    deadline: float | None = None,
) -> ProbeContext:
    """Probe settings; each step is bounded so the evidence arrives before the test deadline."""
    from agent.probes import ProbeContext

    step = settings.probe_timeout
    if deadline is not None:
        step = min(step, max((deadline - time.monotonic()) * 0.8, 0.1))
    return ProbeContext(
        resolv_conf=str(settings.resolv_conf),
        hosts_file=str(settings.hosts_file),
        timeout=step,
        cafile=str(settings.ca_file) if settings.ca_file else None,
        repository=ref.path if ref else None,
        tag_or_digest=ref.object if ref else None,
        credentials=[c for c in creds if c is not None],
    )


async def _probe(
    registry: str, probing: RegistryProbe, clock: PhaseClock, progress: Progress
) -> list[EndpointReport]:
    start = time.monotonic()
    progress(f"probing {len(probing.chains)} endpoint(s) for {registry}")
    reports = await probing.run()
    clock.add("probe", any(r.success for r in reports), start, _probe_detail(reports))
    return reports


def _probe_detail(reports: list[EndpointReport]) -> str:
    return ", ".join(f"{r.endpoint.url} {'ok' if r.success else r.cause}" for r in reports)


def _runtime_info(client: CriClient, version: RuntimeVersion) -> RuntimeInfo:
    from agent.models import RuntimeInfo

    return RuntimeInfo(
        endpoint=client.endpoint,
        api_version=client.api_version,
        runtime_name=version.runtime_name,
        runtime_version=version.runtime_version,
        runtime_api_version=version.runtime_api_version,
    )


@dataclass
class _Attempt:
    """One credential tried: worked (no error), failed with the runtime's error, or cancelled."""

    source: str
    error: CriError | None = None
    cancelled: bool = False

    def record(self) -> CredentialAttempt:
        from agent.diagnosis import classify_error, sanitize_error
        from agent.models import Cause, CredentialAttempt

        if self.cancelled:
            return CredentialAttempt(
                source=self.source, ok=False, cause=Cause.CANCELLED, error="cancelled"
            )
        if self.error is None:
            return CredentialAttempt(source=self.source, ok=True)
        text = sanitize_error(self.error.details)
        cause = classify_error(text, self.error.code.name if self.error.code else None)
        return CredentialAttempt(source=self.source, ok=False, cause=cause, error=text)


@dataclass
class _PullOutcome:
    """What the runtime half found, as plain values (the result models are built at the end)."""

    present_before: bool | None = None  # None: ImageStatus was never asked
    after: ImageInfo | None = None  # ImageStatus after a pull that worked
    removed: bool = False
    attempts: list[_Attempt] = field(default_factory=list)
    error: CriError | None = None
    cancelled: bool = False

    def image_result(self) -> ImageResult | None:
        from agent.models import ImageResult

        if self.present_before is None:
            return None
        info = ImageResult(present_before=self.present_before, removed=self.removed)
        if self.after is not None:
            info.image_id = self.after.id
            info.size_bytes = self.after.size
            info.repo_digest = next(iter(self.after.repo_digests), "")
        return info


async def _free_space(client: CriClient) -> tuple[int | None, str]:
    """Free bytes on the runtime's image filesystem (ImageFsInfo mountpoint, statvfs)."""
    filesystems = await client.image_fs_info()
    if not filesystems:
        return None, "the runtime reported no image filesystem"
    mountpoint = filesystems[0].mountpoint
    try:
        stat = os.statvfs(mountpoint)
    except OSError as exc:
        return None, f"{mountpoint} is not visible here ({exc.strerror})"
    return stat.f_bavail * stat.f_frsize, mountpoint


def _measured_size(reports: list[EndpointReport]) -> int | None:
    from agent.models import manifests

    return next((m.image_size for m in manifests(reports) if m.image_size is not None), None)


def _endpoints(
    registry: str, settings: NodeSettings, runtime: RuntimeInfo | None
) -> tuple[list[Endpoint], str]:
    """The endpoints the runtime contacts, and a warning when it ignores a bad hosts.toml."""
    from agent.hosts import HostsConfigError, registry_endpoints

    version = None
    if runtime is not None and runtime.runtime_name == "containerd":
        version = runtime.runtime_version
    try:
        found = registry_endpoints(
            registry, settings.registry_config_path, containerd_version=version
        )
    except HostsConfigError as exc:
        used = ", ".join(e.url for e in exc.fallback) or "nothing"
        return exc.fallback, f"the runtime ignores {exc.path} ({exc.message}); it uses {used}"
    return found, ""


class _Session:
    """One pull test's runtime half (CRI) and registry half (probes), run side by side."""

    def __init__(
        self,
        req: PullTestRequest,
        settings: NodeSettings,
        clock: PhaseClock,
        say: Progress,
        ref: Reference,
        creds: list[Credential | None],
    ) -> None:
        self.req, self.settings, self.clock, self.say = req, settings, clock, say
        self.ref, self.creds = ref, creds
        self.deadline = time.monotonic() + req.timeout
        self.client: CriClient | None = None
        self.version: RuntimeVersion | None = None
        self.unavailable: RuntimeUnavailable | None = None
        self.outcome = _PullOutcome()
        self.warnings: list[str] = []
        self.hosts_problem = ""  # a hosts.toml the runtime ignores: it changes the remedy
        self.reports: list[EndpointReport] = []
        # set when a guard stopped the pull before any download
        self.refused: Literal["", "image_too_large", "insufficient_space"] = ""
        self.refusal = ""
        self._registry: RegistryProbe | None = None
        self._probes: asyncio.Task[list[EndpointReport]] | None = None
        self._probes_started = 0.0
        self._endpoint_list: list[Endpoint] | None = None
        self._pull_answered = asyncio.Event()  # PullImage succeeded or failed (a credential)
        self._proven = False  # a PullImage succeeded: the registry path works

    @property
    def runtime(self) -> RuntimeInfo | None:
        if self.client is None or self.version is None:
            return None
        return _runtime_info(self.client, self.version)

    async def run(self) -> None:
        start = time.monotonic()
        self.say("connecting to the container runtime")
        try:
            client = await connect(
                self.settings.endpoint,
                timeout=self.settings.cri_timeout,
                api_version=self.settings.api_version,
            )
        except RuntimeUnavailable as exc:
            self.clock.note("runtime", False, start, "unavailable")
            self.unavailable = exc
            client = None
        async with contextlib.AsyncExitStack() as stack:
            if client is not None:
                await stack.enter_async_context(client)
                version = await client.version()
                self.client, self.version = client, version
                runtime = f"{version.runtime_name} {version.runtime_version}"
                self.clock.note("runtime", True, start, f"{runtime} via {client.api_version}")
            # hosts.toml is read the way this runtime version reads it: the registry half starts
            # now, once the engine has loaded, and the pull does not wait for it
            self._probes = asyncio.create_task(self._registry_half())
            if client is not None and self.req.mode == "pull":
                await self._guards(client)
            if client is not None and self.req.mode == "pull" and not self.refused:
                await self._pull(client)
            elif client is not None:
                present = await client.image_status(self.ref.kubelet_image)
                self.outcome.present_before = present is not None
        if self.outcome.cancelled:
            return
        await self._await_probes()

    async def _pull(self, client: CriClient) -> None:
        """ImageStatus → PullImage with each credential until one works → ImageStatus → cleanup."""
        out = self.outcome
        image = self.ref.kubelet_image  # what kubelet puts in ImageSpec.image
        start = time.monotonic()
        before = await client.image_status(image)
        self.clock.note("image_status_before", True, start, "present" if before else "absent")
        out.present_before = before is not None
        for cred in self.creds:
            attempt = _Attempt(cred.source if cred is not None else "anonymous")
            out.attempts.append(attempt)
            remaining = max(self.deadline - time.monotonic(), 0.001)
            self.say(f"pulling {image} ({attempt.source})")
            start = time.monotonic()
            try:
                await client.pull_image(image, cred, timeout=remaining)
            except CriError as exc:
                attempt.error = out.error = exc
                self._pull_answered.set()  # the probes are wanted now (_registry_half)
                await _load_engine(_RESULTS)  # a failure waits for the evidence anyway
                self.clock.note("pull", False, start, f"{attempt.source}: {attempt.record().cause}")
                continue
            except asyncio.CancelledError:
                # Ctrl-C or a cancelled task: the RPC is cancelled; report it instead of dying.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self.clock.note("pull", False, start, f"{attempt.source}: cancelled")
                attempt.cancelled = out.cancelled = True
                return
            self.clock.note("pull", True, start, attempt.source)
            out.error = None
            self._proven = True
            self._pull_answered.set()
            break
        else:
            return
        start = time.monotonic()
        out.after = await client.image_status(image)
        self.clock.note("image_status_after", out.after is not None, start)
        if not out.present_before and not self.req.keep:
            start = time.monotonic()
            await client.remove_image(out.after.id if out.after is not None else image)
            out.removed = True
            self.clock.note("remove", True, start)

    async def _guards(self, client: CriClient) -> None:
        """Refuse a pull that would fill the image filesystem or exceed the size limit."""
        if self.req.min_free_space:
            start = time.monotonic()
            free, where = await _free_space(client)
            if free is None:
                self.warnings.append(f"free space not checked: {where}")
            elif free < self.req.min_free_space:
                self.refused = "insufficient_space"
                self.refusal = (
                    f"only {free} bytes free on the image filesystem {where}, "
                    f"below the minimum of {self.req.min_free_space}; not pulled"
                )
            self.clock.note("free_space", not self.refused, start, where)
            if self.refused:
                return
        if self.req.max_image_size:
            start = time.monotonic()
            await self._await_probes()  # the manifest probe measured the size
            size = _measured_size(self.reports)
            if size is None:
                self.warnings.append("image size unknown before the pull (no manifest found)")
            elif size > self.req.max_image_size:
                self.refused = "image_too_large"
                self.refusal = (
                    f"{self.ref.normalized} is {size} bytes for {node_platform()}, over the "
                    f"limit of {self.req.max_image_size}; not pulled"
                )
            self.clock.add("size_check", not self.refused, start, f"{size} bytes")

    def _endpoints(self) -> list[Endpoint]:
        """The endpoints the runtime contacts, read once (the result's modules are loaded)."""
        if self._endpoint_list is None:
            endpoints, warning = _endpoints(self.ref.registry_host, self.settings, self.runtime)
            if warning:
                self.warnings.append(warning)
                self.hosts_problem = warning
            self._endpoint_list = endpoints
        return self._endpoint_list

    def sole_endpoint(self) -> Endpoint | None:
        """The one endpoint the runtime contacts, when there is one and it was read."""
        endpoints = self._endpoint_list or []
        return endpoints[0] if len(endpoints) == 1 else None

    def _registry_probe(self) -> RegistryProbe:
        """The probes of every endpoint the runtime contacts (the engine is loaded)."""
        from agent.probes import RegistryProbe

        ctx = _probe_context(self.settings, self.creds, self.ref, self.deadline)
        if self.req.max_image_size and self.req.mode == "pull":
            ctx.measure_size_for = node_platform()
        return RegistryProbe(self._endpoints(), ctx)

    def _success_needs_probes(self) -> bool:
        """Whether the probes can tell something a successful pull does not (docs/benchmarks.md,
        "What a successful pull needs from the probes"): a pull that works proves the resolver,
        TCP, TLS, the credentials and the manifest of the one endpoint it used, but not which
        of several endpoints it used (a dead mirror), Docker Hub's remaining quota, or the size
        a size limit is checked against. Anything but a pull always probes."""
        return (
            self.req.mode != "pull"
            or self.client is None
            or bool(self.req.max_image_size)
            or len(self._endpoints()) != 1
            or bool(self.hosts_problem)
            or dockerhub.is_hub(self.ref.domain)
        )

    async def _registry_half(self) -> list[EndpointReport]:
        await _load_engine(_RESULTS)
        if not self._success_needs_probes():
            # wait for the pull's answer, but not for long: a slow or stuck pull gets its
            # evidence beside it, a failure right after it, a quick success needs none
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PROBES_AFTER):
                    await self._pull_answered.wait()
            if self._proven:
                detail = "not run: the pull proved the registry path"
                self.clock.note("probe", True, time.monotonic(), detail)
                return []
        await _load_engine()
        self._registry = self._registry_probe()
        self._probes_started = time.monotonic()
        return await _probe(self.ref.registry_host, self._registry, self.clock, self.say)

    async def _await_probes(self) -> None:
        assert self._probes is not None
        if self._probes.done() and self.reports:
            return
        # The probes are bounded per step; a short grace after the deadline lets the evidence
        # of a slow endpoint arrive, still bounded whatever the registry does.
        grace = min(self.settings.probe_timeout, _PROBE_GRACE)
        try:
            async with asyncio.timeout(max(self.deadline - time.monotonic(), 0) + grace):
                self.reports = await self._probes
        except TimeoutError:
            self._keep_probes("timeout", "no answer before the test deadline")

    def stop_probes(self) -> None:
        """Cancel probes still running; the result keeps what they found (see _keep_probes)."""
        self._keep_probes("cancelled", "cancelled before it finished")

    def _keep_probes(self, cause: Literal["timeout", "cancelled"], reason: str) -> None:
        """Stop the probes if they still run and keep their evidence: finished chains as they
        are, each running chain with its finished probes and the step in flight marked cut (a
        chain that had not started yet, the engine still loading, as not probed)."""
        task = self._probes
        if task is None or self.reports:
            return
        if task.done() and not task.cancelled():
            if task.exception() is None:  # else it is raised where the task is awaited
                self.reports = task.result()  # finished just before it was asked for
            return
        task.cancel()
        _import_engine()  # the evidence is made of the models: load them now if need be
        from agent.models import Cause

        if self._registry is None:
            self._registry = self._registry_probe()
            self._probes_started = time.monotonic()
        self.reports = self._registry.so_far(Cause(cause), reason)
        detail = f"{reason}: {_probe_detail(self.reports)}"
        self.clock.add("probe", False, self._probes_started, detail)


def _finish(result: PullTestResult, clock: PhaseClock) -> PullTestResult:
    result.phases = clock.settle()
    result.duration_ms = clock.elapsed_ms()
    return result


def _fail(result: PullTestResult, cause: Cause, summary: str) -> None:
    from agent.diagnosis import remedy

    result.success, result.cause, result.summary = False, cause, summary
    result.remedy = remedy(cause, None, result.image, platform=node_platform())


def _new_result(req: PullTestRequest, settings: NodeSettings, clock: PhaseClock) -> PullTestResult:
    from agent.models import PullTestResult

    return PullTestResult(
        pullcheck_version=__version__,
        node=settings.node_name or node_name(),
        image=req.image,
        mode=req.mode,
        started_at=clock.started_at,
        duration_ms=0.0,
        success=False,
    )


async def run_pull_test(
    req: PullTestRequest, settings: NodeSettings, progress: Progress | None = None
) -> PullTestResult:
    """Run one pull test and return its result; never raises for a diagnosable failure."""
    say: Progress = progress or (lambda _msg: None)
    clock = PhaseClock()
    start = time.monotonic()
    try:
        ref = parse(req.image)
    except InvalidReference as exc:
        from agent.models import Cause

        clock.note("parse", False, start, exc.reason)
        result = _new_result(req, settings, clock)
        _fail(
            result, Cause.INVALID_REFERENCE, f"invalid image reference {req.image!r}: {exc.reason}"
        )
        return _finish(result, clock)
    clock.note("parse", True, start, ref.normalized)
    session = _Session(req, settings, clock, say, ref, _credentials_for(ref, req))
    try:
        await session.run()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        session.outcome.cancelled = True
    finally:
        session.stop_probes()
    _import_engine(_RESULTS)  # loaded by now, unless the test ended before the runtime answered
    return _result(req, settings, session, ref)


def _result(
    req: PullTestRequest, settings: NodeSettings, session: _Session, ref: Reference
) -> PullTestResult:
    """The result models, built once the test is over."""
    from agent.diagnosis import path_findings
    from agent.models import Cause

    result = _new_result(req, settings, session.clock)
    result.reference = ref.normalized
    outcome = session.outcome
    result.runtime = session.runtime
    result.image_info = outcome.image_result()
    result.credentials = [attempt.record() for attempt in outcome.attempts]
    result.warnings = session.warnings
    result.endpoints = session.reports
    if outcome.cancelled:
        _fail(result, Cause.CANCELLED, f"the pull of {ref.kubelet_image} was cancelled")
        result.findings = path_findings(session.reports)
    elif session.refused:
        result.refused, result.summary = session.refused, session.refusal
    elif session.unavailable is not None and req.mode == "pull":
        _fail(result, Cause.RUNTIME_UNAVAILABLE, str(session.unavailable))
    else:
        if session.unavailable is not None:
            result.warnings.append(f"runtime not checked: {session.unavailable}")
        sole = session.sole_endpoint()
        _verdict(result, outcome.error, req, settings.hosts_dir, sole)
        if not result.success and session.hosts_problem:
            result.remedy += f" Note: {session.hosts_problem}."
    _explain_credentials(result, req, ref)
    return _finish(result, session.clock)


def _verdict(
    result: PullTestResult,
    error: CriError | None,
    req: PullTestRequest,
    hosts_dir: str,
    sole: Endpoint | None = None,
) -> None:
    """Success, or the diagnosis from the runtime error and the probe evidence (``sole``: the
    only endpoint the runtime contacts, when it is known)."""
    from agent.diagnosis import diagnose, path_findings, sanitize_error

    reports = result.endpoints
    text = sanitize_error(error.details) if error is not None else None
    code = error.code.name if error is not None and error.code is not None else None
    # a pull that worked needs no diagnosis: what failed on the way is a finding
    diagnosis = (
        None
        if error is None and req.mode == "pull"
        else diagnose(
            image=result.reference,
            runtime_error=text,
            grpc_code=code,
            reports=reports,
            platform=node_platform(),
            hosts_dir=hosts_dir,
            deadline=req.timeout if code == "DEADLINE_EXCEEDED" else None,
        )
    )
    if diagnosis is None:
        working = next((r.endpoint for r in reports if r.success), sole)
        result.via = working.url if working else ""
        via = f" via {result.via}" if working else ""
        verb = "pulled" if req.mode == "pull" else "resolved"
        info = result.image_info
        digest = f" ({info.repo_digest or info.image_id})" if info and info.image_id else ""
        result.success = True
        result.summary = f"{verb} {result.reference}{digest}{via}"
        result.findings = path_findings(reports)
        return
    result.success, result.cause, result.summary = False, diagnosis.cause, diagnosis.summary
    result.remedy = diagnosis.remedy
    result.findings = diagnosis.findings
    result.runtime_error = text or ""
    result.deciding_fragment = diagnosis.fragment


async def run_probe(
    target: str,
    settings: NodeSettings,
    *,
    credential: Credential | None = None,
    keyring: Keyring | None = None,
    progress: Progress | None = None,
) -> ProbeReport:
    """Probe the registry path for an image or a bare registry host, without the runtime."""
    _import_engine()  # nothing to overlap: the probes are the whole test
    from agent.diagnosis import diagnose, path_findings, remedy
    from agent.models import Cause, ProbeReport
    from agent.probes import RegistryProbe

    say: Progress = progress or (lambda _msg: None)
    clock = PhaseClock()
    report = ProbeReport(
        pullcheck_version=__version__,
        node=settings.node_name or node_name(),
        target=target,
        started_at=clock.started_at,
        duration_ms=0.0,
        success=False,
    )
    ref: Reference | None = None
    try:
        if is_registry_only(target):
            report.registry = parse_registry(target)
        else:
            ref = parse(target)
            report.registry, report.reference = ref.registry_host, ref.normalized
    except InvalidReference as exc:
        report.cause = Cause.INVALID_REFERENCE
        report.summary = f"invalid image or registry {target!r}: {exc.reason}"
        report.remedy = remedy(Cause.INVALID_REFERENCE, None, target)
        report.duration_ms = clock.elapsed_ms()
        return report
    req = PullTestRequest(image=target, credential=credential, keyring=keyring)
    creds = _credentials_for(ref, req) if ref is not None else [credential]
    endpoints, warning = _endpoints(report.registry, settings, None)
    ctx = _probe_context(settings, creds, ref)
    reports = await _probe(report.registry, RegistryProbe(endpoints, ctx), clock, say)
    report.endpoints, report.warnings = reports, [warning] if warning else []
    report.success = any(r.success for r in reports)
    diagnosis = diagnose(
        image=target,
        runtime_error=None,
        grpc_code=None,
        reports=reports,
        hosts_dir=settings.hosts_dir,
    )
    if diagnosis is not None:
        report.cause, report.summary = diagnosis.cause, diagnosis.summary
        report.remedy, report.findings = diagnosis.remedy, diagnosis.findings
    elif report.success:
        working = next(r for r in reports if r.success)
        report.summary = f"{report.registry} reachable via {working.endpoint.url}"
        report.findings = path_findings(reports)
    else:
        report.cause = Cause.UNKNOWN
        report.summary = f"no endpoint to probe for {report.registry}"
    if ref is not None:
        _explain_credentials(report, req, ref)
    report.duration_ms = clock.elapsed_ms()
    return report
