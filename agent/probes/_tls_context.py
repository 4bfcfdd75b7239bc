"""The client TLS configuration containerd would use for an endpoint, and TLS errors in words."""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path

from agent.errors import InvalidInput
from agent.models import Endpoint
from agent.probes._context import ProbeContext

__all__ = ["TlsConfigError", "build_ssl_context", "ssl_text", "x509_text"]

_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")
_SSL_REASON = re.compile(r"^\[[A-Z0-9_]+: [A-Z0-9_]+\]\s*")


class TlsConfigError(InvalidInput):
    """A CA or client certificate file of the endpoint could not be loaded."""


def build_ssl_context(
    endpoint: Endpoint, ctx: ProbeContext, *, verify: bool = True
) -> ssl.SSLContext:
    """The client TLS configuration containerd would use for ``endpoint``.

    System trust store (unless disabled) plus ``ctx.cafile`` plus the endpoint's ``ca`` files,
    the endpoint's client certificates, and ``skip_verify``. ``verify=False`` gives a context that
    accepts any certificate (used to capture a certificate that failed verification). Raises
    :class:`TlsConfigError` for a file that cannot be loaded.
    """
    cafiles = tuple(([ctx.cafile] if ctx.cafile else []) + list(endpoint.ca_files))
    certs = tuple(endpoint.client_certs)
    # Loading the system store costs ~50 ms; contexts are reused while the files are unchanged
    # (hosts.toml and its CA files may change at any time, without a containerd restart).
    stamp = tuple(_mtime(path) for path in cafiles + tuple(p for pair in certs for p in pair))
    return _ssl_context(
        ctx.use_system_trust, cafiles, certs, endpoint.skip_verify or not verify, stamp
    )


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@functools.lru_cache(maxsize=32)
def _ssl_context(
    system_trust: bool,
    cafiles: tuple[str, ...],
    client_certs: tuple[tuple[str, str], ...],
    insecure: bool,
    _stamp: tuple[float, ...],
) -> ssl.SSLContext:
    if system_trust:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    for cafile in cafiles:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"unable to load CA cert {cafile}: {ssl_text(exc)}") from exc
    for cert, key in client_certs:
        try:
            context.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"failed to load X509 key pair {cert}: {ssl_text(exc)}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_UNKNOWN_AUTHORITY = "certificate signed by unknown authority"
_NOT_VALID_NOW = "certificate has expired or is not yet valid"
_X509_TEXT = {
    2: _UNKNOWN_AUTHORITY,  # unable to get issuer certificate
    18: _UNKNOWN_AUTHORITY,  # self-signed certificate
    19: _UNKNOWN_AUTHORITY,  # self-signed certificate in chain
    20: _UNKNOWN_AUTHORITY,  # unable to get local issuer certificate
    21: _UNKNOWN_AUTHORITY,  # unable to verify the first certificate
    9: _NOT_VALID_NOW,  # not yet valid
    10: _NOT_VALID_NOW,  # expired
    62: "certificate is not valid for the requested name",  # hostname mismatch
    64: "certificate is not valid for the requested IP address",  # IP address mismatch
}


def x509_text(exc: ssl.SSLCertVerificationError) -> str:
    """Go-style text for a verification failure, with OpenSSL's own reason in parentheses."""
    reason = exc.verify_message or ssl_text(exc)
    text = _X509_TEXT.get(exc.verify_code or -1)
    return f"x509: {text} ({reason})" if text else f"x509: {reason}"


def ssl_text(exc: BaseException) -> str:
    """OpenSSL's message without the ``[SSL: REASON]`` prefix and ``(_ssl.c:N)`` suffix."""
    ssl_message = isinstance(exc, ssl.SSLError) and len(exc.args) > 1
    text = _SSL_LOCATION.sub("", str(exc.args[1]) if ssl_message else str(exc))
    text = _SSL_REASON.sub("", text).strip()
    if not text and isinstance(exc, OSError):
        text = exc.strerror or ""
    return text or type(exc).__name__
