"""TLS probe: the handshake containerd would do with an ``https`` endpoint.

SNI and hostname verification use the endpoint's hostname while the connection goes to the address
the tcp probe connected to. Trust: the system store (``ctx.use_system_trust``), ``ctx.cafile``, the
endpoint's ``ca`` files from hosts.toml/certs.d, its client certificates, and ``skip_verify``.
When verification fails, a second handshake without verification captures the certificate anyway,
so the evidence shows what the server presented. ``http`` endpoints are skipped (success, no
evidence).

Causes: ``tls_error`` (x509 failures, handshake alerts, unreadable CA/client files),
``http_https_mismatch`` (the server answers plain HTTP), ``timeout``, ``connection_refused``,
``dns_failure`` (run alone and the host does not resolve), ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from agent.models import Cause, Endpoint, ProbeResult, TlsEvidence
from agent.probes._context import ProbeContext
from agent.probes._net import (
    TlsConfigError,
    build_ssl_context,
    classify,
    format_host_port,
    speaks_plain_http,
    x509_text,
)
from agent.probes._prereq import target_address
from agent.probes._result import ResultBuilder

__all__ = ["probe_tls"]

_MISMATCH_NOTE = "containerd: http: server gave HTTP response to HTTPS client"
# seconds, upper bounds for the plain-HTTP check after a failed handshake: a plain-HTTP server
# answers a valid request at once, so after a handshake timeout (likely a silent peer) wait less
_SNIFF_TIMEOUT = 3.0
_SNIFF_AFTER_TIMEOUT = 1.0


@dataclass
class _Handshake:
    version: str
    cipher: str
    der: bytes | None
    # the decoded certificate of a verified handshake (``SSLSocket.getpeercert()``); empty
    # when verification was off, and then only ``der`` is there
    info: dict[str, Any] = field(default_factory=dict)


async def probe_tls(endpoint: Endpoint, ctx: ProbeContext) -> ProbeResult:
    where = format_host_port(endpoint.host, endpoint.port)
    result = ResultBuilder("tls", where, ctx)
    started = time.monotonic()
    if endpoint.scheme != "https":
        result.phase("skip", True, started, "plain-HTTP endpoint: no TLS")
        return result.ok()
    target = await target_address(endpoint, ctx)
    if isinstance(target, tuple):
        return result.fail(Cause.DNS_FAILURE, target[1])
    address = target
    evidence = TlsEvidence(
        address=address,
        port=endpoint.port,
        server_name=endpoint.host,
        skip_verify=endpoint.skip_verify,
        ca_files=([ctx.cafile] if ctx.cafile else []) + list(endpoint.ca_files),
    )
    try:
        probe_result = await _probe(endpoint, ctx, address, where, result, evidence)
    except Exception as exc:  # a probe reports, it never raises
        cause, reason = classify(exc)
        probe_result = result.fail(
            cause, f"TLS handshake with {where} ({address}) failed: {reason}", evidence
        )
    ctx.state.tls_ok = probe_result.success
    return probe_result


async def _probe(
    endpoint: Endpoint,
    ctx: ProbeContext,
    address: str,
    where: str,
    result: ResultBuilder,
    evidence: TlsEvidence,
) -> ProbeResult:
    started = time.monotonic()
    try:
        context = build_ssl_context(endpoint, ctx)
    except TlsConfigError as exc:
        result.phase("config", False, started, str(exc))
        return result.fail(Cause.TLS_ERROR, f"TLS config for {where}: {exc}", evidence)

    prefix = f"TLS handshake with {where} ({address})"
    started = time.monotonic()
    try:
        handshake = await _handshake(address, endpoint.port, endpoint.host, context, ctx.timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = x509_text(exc)
        result.phase("handshake", False, started, reason)
        evidence.verify_error = reason
        await _capture_unverified(endpoint, ctx, address, result, evidence)
        reason = _better_x509_text(exc, evidence, endpoint.host) or reason
        evidence.verify_error = reason
        return result.fail(Cause.TLS_ERROR, f"{prefix} failed: {reason}", evidence)
    except TimeoutError:
        result.phase("handshake", False, started, f"no handshake within {ctx.timeout:.3g} s")
        if await _plain_http(endpoint, address, ctx, result, _SNIFF_AFTER_TIMEOUT):
            return result.fail(
                Cause.HTTP_HTTPS_MISMATCH,
                f"{prefix}: server speaks plain HTTP ({_MISMATCH_NOTE})",
                evidence,
            )
        return result.fail(Cause.TIMEOUT, f"{prefix} timed out after {ctx.timeout:.3g} s", evidence)
    except (ssl.SSLError, OSError, EOFError) as exc:
        cause, reason = classify(exc)
        result.phase("handshake", False, started, reason)
        if cause not in (Cause.CONNECTION_REFUSED, Cause.TIMEOUT) and await _plain_http(
            endpoint, address, ctx, result, _SNIFF_TIMEOUT
        ):
            return result.fail(
                Cause.HTTP_HTTPS_MISMATCH,
                f"{prefix}: server speaks plain HTTP ({_MISMATCH_NOTE})",
                evidence,
            )
        if cause == Cause.HTTP_HTTPS_MISMATCH:
            cause = Cause.TLS_ERROR  # looked like plain HTTP but the server does not answer HTTP
        return result.fail(cause, f"{prefix} failed: {reason}", evidence)

    _fill(evidence, handshake)
    evidence.verified = not endpoint.skip_verify
    result.phase("handshake", True, started, f"{handshake.version} {handshake.cipher}")
    return result.ok(evidence)


async def _handshake(
    address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float
) -> _Handshake:
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                address,
                port,
                ssl=context,
                server_hostname=server_name,
                ssl_handshake_timeout=timeout + 1.0,
            )
        ssl_object = writer.get_extra_info("ssl_object")
        cipher = ssl_object.cipher() if ssl_object is not None else None
        return _Handshake(
            version=(ssl_object.version() or "") if ssl_object is not None else "",
            cipher=cipher[0] if cipher else "",
            der=ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None,
            info=dict(ssl_object.getpeercert() or {}) if ssl_object is not None else {},
        )
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _capture_unverified(
    endpoint: Endpoint,
    ctx: ProbeContext,
    address: str,
    result: ResultBuilder,
    evidence: TlsEvidence,
) -> None:
    started = time.monotonic()
    try:
        context = build_ssl_context(endpoint, ctx, verify=False)
        handshake = await _handshake(address, endpoint.port, endpoint.host, context, ctx.timeout)
    except Exception as exc:  # best effort: the verification failure is what matters
        result.phase("handshake (no verification)", False, started, classify(exc)[1])
        return
    _fill(evidence, handshake)
    result.phase(
        "handshake (no verification)",
        True,
        started,
        f"{handshake.version} {handshake.cipher}; certificate captured",
    )


async def _plain_http(
    endpoint: Endpoint, address: str, ctx: ProbeContext, result: ResultBuilder, limit: float
) -> bool:
    started = time.monotonic()
    plain = await speaks_plain_http(address, endpoint.port, endpoint.host, min(ctx.timeout, limit))
    result.phase(
        "plain-http check",
        True,
        started,
        "server answers plain HTTP" if plain else "no plain-HTTP answer",
    )
    return plain


_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
}


def _fill(evidence: TlsEvidence, handshake: _Handshake) -> None:
    evidence.version = handshake.version
    evidence.cipher = handshake.cipher
    if handshake.info:
        _fill_from_info(evidence, handshake.info)
    elif handshake.der:
        _fill_from_der(evidence, handshake.der)


def _rfc4514(name: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    return ",".join(f"{_RDN_NAMES.get(k, k)}={v}" for rdn in reversed(name) for k, v in rdn)


def _fill_from_info(evidence: TlsEvidence, info: dict[str, Any]) -> None:
    """A verified certificate, as the ssl module decodes it (no extra library loaded)."""
    evidence.subject = _rfc4514(info.get("subject", ()))
    evidence.issuer = _rfc4514(info.get("issuer", ()))
    for key, attr in (("notBefore", "not_before"), ("notAfter", "not_after")):
        if key in info:
            when = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(info[key]), dt.UTC)
            setattr(evidence, attr, when.isoformat())
    sans = info.get("subjectAltName", ())
    evidence.sans = [v for k, v in sans if k == "DNS"] + [
        str(ipaddress.ip_address(v.strip())) for k, v in sans if k == "IP Address"
    ]


def _fill_from_der(evidence: TlsEvidence, der: bytes) -> None:
    """An unverified certificate: decoded with ``cryptography``, imported only when needed
    (it costs ~8 MiB of resident memory that a healthy agent never has to pay)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return
    evidence.subject = cert.subject.rfc4514_string()
    evidence.issuer = cert.issuer.rfc4514_string()
    evidence.not_before = cert.not_valid_before_utc.isoformat()
    evidence.not_after = cert.not_valid_after_utc.isoformat()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    evidence.sans = [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def _better_x509_text(exc: ssl.SSLCertVerificationError, evidence: TlsEvidence, host: str) -> str:
    """Go's wording where the captured certificate allows it."""
    if exc.verify_code in (62, 64):
        if evidence.sans:
            return f"x509: certificate is valid for {', '.join(evidence.sans)}, not {host}"
        if evidence.subject:
            return (
                f"x509: certificate is not valid for any names, but wanted to match {host} "
                f"(subject {evidence.subject})"
            )
    expired = "x509: certificate has expired or is not yet valid"
    if exc.verify_code == 10 and evidence.not_after:
        return f"{expired}: expired at {evidence.not_after}"
    if exc.verify_code == 9 and evidence.not_before:
        return f"{expired}: not valid before {evidence.not_before}"
    return ""
