"""Errors raised by the CRI client.

Texts never contain request contents (image credentials in particular): only the RPC name, the
gRPC status code and the runtime's own error text, which containerd already sanitises.
"""

from __future__ import annotations

import grpc

from agent.errors import InvalidInput, PullcheckError


class CriError(PullcheckError):
    """A CRI call failed.

    ``details`` is the runtime's error text exactly as sent (for containerd's PullImage that is
    e.g. ``failed to pull and unpack image "...": ...``); classify on it, not on ``str(self)``.
    """

    def __init__(self, code: grpc.StatusCode | None, details: str, rpc: str) -> None:
        self.code = code
        self.details = details
        self.rpc = rpc  # full method path, e.g. "/runtime.v1.ImageService/PullImage"
        super().__init__(self._message())

    def _message(self) -> str:
        code = self.code.name if self.code is not None else "no status"
        return f"{self.rpc}: {code}: {self.details}"

    def __reduce__(self) -> tuple[type[CriError], tuple[grpc.StatusCode | None, str, str]]:
        return (type(self), (self.code, self.details, self.rpc))


class RuntimeUnavailable(CriError):
    """No CRI runtime could be reached. ``tried`` lists ``(endpoint, reason)`` per endpoint.

    Reasons are short and fixed where possible: ``no such file``, ``permission denied``,
    ``not a socket``, ``connection refused``, ``no CRI service (UNIMPLEMENTED)``, ``timed out``;
    anything else is ``<STATUS_CODE>: <grpc details>``.
    """

    def __init__(
        self,
        tried: list[tuple[str, str]],
        code: grpc.StatusCode | None = None,
        rpc: str = "connect",
    ) -> None:
        self.tried = list(tried)
        super().__init__(code, self._describe(self.tried), rpc)

    @staticmethod
    def _describe(tried: list[tuple[str, str]]) -> str:
        if not tried:
            return "no container runtime endpoint to try"
        if len(tried) == 1:
            endpoint, reason = tried[0]
            return f"container runtime not reachable at {endpoint}: {reason}"
        listed = "; ".join(f"{endpoint}: {reason}" for endpoint, reason in tried)
        return f"no container runtime reachable (tried {len(tried)} endpoints: {listed})"

    def _message(self) -> str:
        return self.details

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[RuntimeUnavailable], tuple[list[tuple[str, str]], grpc.StatusCode | None, str]]:
        return (type(self), (self.tried, self.code, self.rpc))


class InvalidEndpoint(InvalidInput, ValueError):
    """The endpoint string is not a unix socket address pullcheck can use."""
