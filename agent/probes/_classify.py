"""Network exceptions (any wrapping depth) as a cause and a short, secret-free reason."""

from __future__ import annotations

import errno
import ssl

import httpcore
import httpx

from agent.models import Cause
from agent.probes._tls_context import TlsConfigError, ssl_text, x509_text
from agent.probes._transport import UnresolvedHostError

__all__ = ["classify"]

# OpenSSL reasons seen when a TLS client talks to a plain-HTTP server
_PLAIN_HTTP_SSL_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "UNEXPECTED_RECORD",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> tuple[Cause, str]:
    """Map a network exception (any wrapping depth) to a cause and a short, secret-free reason.

    httpcore's exceptions are recognised beside httpx's: the trace extension sees them unwrapped.
    """
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, UnresolvedHostError):
            return Cause.DNS_FAILURE, str(e)
        if isinstance(e, TlsConfigError):
            return Cause.TLS_ERROR, str(e)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return Cause.TLS_ERROR, x509_text(e)
    for e in chain:
        if isinstance(e, ssl.SSLError):
            if e.reason in _PLAIN_HTTP_SSL_REASONS:
                return (
                    Cause.HTTP_HTTPS_MISMATCH,
                    f"server does not speak TLS ({ssl_text(e)}); "
                    "containerd: http: server gave HTTP response to HTTPS client",
                )
            return Cause.TLS_ERROR, f"TLS error: {ssl_text(e)}"
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return Cause.CONNECTION_REFUSED, "connection refused"
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            # an active rejection (ICMP unreachable / REJECT rule): fast failure, like refused
            return Cause.CONNECTION_REFUSED, e.strerror or "no route to host"
    for e in chain:
        if isinstance(e, (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException)):
            return Cause.TIMEOUT, _timeout_text(e)
    for e in chain:
        broken = _broken_connection(e)
        if broken:
            return Cause.CONNECTION_RESET, broken
        if isinstance(e, (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)):
            return Cause.UNKNOWN, f"malformed HTTP response: {e}"
        if isinstance(e, OSError) and e.strerror:
            return Cause.UNKNOWN, e.strerror
    return Cause.UNKNOWN, str(exc) or type(exc).__name__


# h11's words (through httpcore) for a connection the server closed in the middle of an answer
_CLOSED_MIDWAY = ("server disconnected", "peer closed connection")


def _broken_connection(exc: BaseException) -> str:
    """How an established connection broke (reset, closed mid-answer, broken pipe), else ``""``."""
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe (the server closed the connection while the request was sent)"
    if isinstance(exc, ConnectionAbortedError):
        return "connection aborted"
    if isinstance(exc, (httpx.RemoteProtocolError, httpcore.RemoteProtocolError)):
        text = str(exc)
        if not text or any(words in text.lower() for words in _CLOSED_MIDWAY):
            return f"connection closed mid-answer ({text or 'no response'}; containerd: EOF)"
    return ""


def _timeout_text(exc: BaseException) -> str:
    if isinstance(exc, (httpx.ConnectTimeout, httpcore.ConnectTimeout)):
        return "timed out connecting"
    if isinstance(exc, (httpx.ReadTimeout, httpcore.ReadTimeout)):
        return "timed out awaiting response"
    if isinstance(exc, (httpx.WriteTimeout, httpcore.WriteTimeout)):
        return "timed out sending request"
    return "timed out"
