"""Typed reads of the Kubernetes API as the caller (lightkube), one error type for every failure.

:class:`KubeReader` gets and lists what a pull diagnosis needs: pods, a pod's core/v1 Events,
Secrets, ServiceAccounts and node names. Every failure — a refusal (401, 403, 404, 5xx) or no
answer at all — is one :class:`KubeApiError` naming the verb, the resource, the namespace and the
object, with the server's own message; a 403 also says which RBAC rule is missing.

Core/v1 Events are read, not ``events.k8s.io/v1``: kubelet still records through the legacy
recorder, and those events have ``eventTime: null``, which lightkube's ``events.k8s.io`` model
cannot decode.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError
from lightkube.core.client import FieldSelector
from lightkube.core.resource import NamespacedResource
from lightkube.resources.core_v1 import Event, Node, Pod, Secret, ServiceAccount

from agent.errors import PullcheckError
from agent.kube.config import KubeTarget
from agent.redaction import redact_text

__all__ = ["MAX_ITEMS", "ErrorKind", "KubeApiError", "KubeReader"]

MAX_ITEMS = 20_000  # objects one list may return before it is refused as too large
_MAX_MESSAGE = 1024  # characters of the server's message kept
_PAGE = 500

ErrorKind = Literal["unauthorized", "forbidden", "not_found", "unreachable", "api_error"]
R = TypeVar("R", bound=NamespacedResource)


@dataclass(frozen=True)
class _Call:
    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None

    def describe(self) -> str:
        what = f'{self.resource} "{self.name}"' if self.name else self.resource
        where = f' in namespace "{self.namespace}"' if self.namespace else ""
        if self.namespace is None and self.resource != "nodes":
            where = " in all namespaces"
        return f"{self.verb} {what}{where}"

    def rule(self) -> str:
        scope = f'namespace "{self.namespace}"' if self.namespace else "the cluster scope"
        return f'verb "{self.verb}" on resource "{self.resource}" in {scope}'


class KubeApiError(PullcheckError):
    """The API server refused a read or did not answer. ``str()`` is one line for an operator."""

    def __init__(self, call: _Call, kind: ErrorKind, message: str, code: int | None = None) -> None:
        self.verb, self.resource = call.verb, call.resource
        self.namespace, self.name = call.namespace, call.name
        self.kind: ErrorKind = kind
        self.code = code
        self.server_message = message
        status = f"HTTP {code}: " if code else ""
        text = f"{call.describe()}: {status}{message}"
        if kind == "forbidden":
            text += f" (the caller needs RBAC {call.rule()})"
        elif kind == "unauthorized":
            text += " (the kubeconfig's credentials are not accepted by this cluster)"
        super().__init__(text)

    @property
    def permission(self) -> str:
        """The missing rule, for a 403 (``verb "get" on resource "secrets" in namespace …``)."""
        return _Call(self.verb, self.resource, self.namespace, self.name).rule()


def _clean(text: str) -> str:
    return redact_text(" ".join(text.split()))[:_MAX_MESSAGE]


def _api_error(call: _Call, exc: ApiError) -> KubeApiError:
    status = exc.status
    code = status.code or exc.response.status_code
    kind: ErrorKind = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
        code, "api_error"
    )  # type: ignore[assignment]
    message = _clean(status.message or status.reason or "no message")
    return KubeApiError(call, kind, message, code)


def _unreachable(call: _Call, server: str, exc: BaseException) -> KubeApiError:
    reason = _clean(str(exc)) or type(exc).__name__
    return KubeApiError(call, "unreachable", f"no answer from {server}: {reason}")


@contextmanager
def _failures(call: _Call, server: str) -> Iterator[None]:
    """Every failure of the API request(s) inside as one :class:`KubeApiError` for ``call``."""
    try:
        yield
    except ApiError as exc:
        raise _api_error(call, exc) from None
    except (httpx2.HTTPError, OSError, ssl.SSLError) as exc:
        raise _unreachable(call, server, exc) from None


class KubeReader:
    """Reads as the caller of ``target``; use ``async with`` (or :meth:`aclose`)."""

    def __init__(self, target: KubeTarget, timeout: float = 15.0) -> None:
        self.target = target
        self.namespace = target.namespace
        try:
            self._client = AsyncClient(
                target.config,
                namespace=target.namespace,
                timeout=httpx2.Timeout(timeout),
                trust_env=False,
            )
        except (ConfigError, OSError, ssl.SSLError) as exc:
            raise KubeApiError(
                _Call("connect to", "the API server"),
                "unreachable",
                f"client configuration from {target.source}: {_clean(str(exc))}",
            ) from None

    async def __aenter__(self) -> KubeReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, res: type[R], call: _Call) -> R:
        assert call.name is not None
        with _failures(call, self.target.server):
            return await self._client.get(res, call.name, namespace=call.namespace)

    async def _list(
        self, res: type[R], call: _Call, fields: FieldSelector | None = None
    ) -> list[R]:
        found: list[R] = []
        namespace = call.namespace if call.namespace is not None else "*"
        with _failures(call, self.target.server):
            items: AsyncIterator[R] = self._client.list(  # type: ignore[assignment]
                res, namespace=namespace, chunk_size=_PAGE, fields=fields
            )
            async for item in items:
                found.append(item)
                if len(found) > MAX_ITEMS:
                    raise KubeApiError(
                        call, "api_error", f"more than {MAX_ITEMS} {call.resource}; narrow it"
                    )
        return found

    async def get_pod(self, namespace: str, name: str) -> Pod:
        return await self._get(Pod, _Call("get", "pods", namespace, name))

    async def list_pods(self, namespace: str | None) -> list[Pod]:
        """Pods in ``namespace`` (None: every namespace)."""
        return await self._list(Pod, _Call("list", "pods", namespace))

    async def pod_events(self, pod: Pod) -> list[Event]:
        """The core/v1 Events about ``pod`` (matched by name, namespace and uid)."""
        meta = pod.metadata
        assert meta is not None and meta.name is not None and meta.namespace is not None
        fields: FieldSelector = {
            "involvedObject.name": meta.name,
            "involvedObject.namespace": meta.namespace,
        }
        if meta.uid:
            fields["involvedObject.uid"] = meta.uid
        return await self._list(Event, _Call("list", "events", meta.namespace), fields)

    async def get_secret(self, namespace: str, name: str) -> Secret:
        return await self._get(Secret, _Call("get", "secrets", namespace, name))

    async def get_service_account(self, namespace: str, name: str) -> ServiceAccount:
        return await self._get(ServiceAccount, _Call("get", "serviceaccounts", namespace, name))

    async def node_names(self) -> list[str]:
        with _failures(_Call("list", "nodes"), self.target.server):
            names = [
                node.metadata.name
                async for node in self._client.list(Node, chunk_size=_PAGE)
                if node.metadata is not None and node.metadata.name
            ]
        return sorted(names)[:MAX_ITEMS]
