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
import datetime as dt
import ipaddress
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from agent import hostport
from agent.models import Cause, Endpoint, ProbeResult, TlsEvidence
from agent.probes._classify import classify
from agent.probes._context import ProbeContext
from agent.probes._runner import ProbeRun, run_probe
from agent.probes._sniff import plain_http_check
from agent.probes._streams import close_stream
from agent.probes._tls_context import TlsConfigError, build_ssl_context, x509_text

__all__ = ["probe_tls"]

_MISMATCH_NOTE = "containerd: http: server gave HTTP response to HTTPS client"
# seconds the plain-HTTP check waits after a handshake timeout (likely a silent peer): less than
# after other failures (_sniff.SNIFF_TIMEOUT), as a plain-HTTP server answers at once
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
    where = hostport.join(endpoint.host, endpoint.port)
    result = await run_probe("tls", where, ctx, lambda run: _probe(endpoint, ctx, run))
    if endpoint.scheme == "https":
        ctx.state.tls_ok = result.success
    return result


async def _probe(endpoint: Endpoint, ctx: ProbeContext, run: ProbeRun) -> ProbeResult:
    where, started = run.target, time.monotonic()
    if endpoint.scheme != "https":
        run.phase("skip", True, started, "plain-HTTP endpoint: no TLS")
        return run.ok()
    address = await run.address(endpoint)
    prefix = run.action = f"TLS handshake with {where} ({address})"
    evidence = run.evidence = TlsEvidence(
        address=address,
        port=endpoint.port,
        server_name=endpoint.host,
        skip_verify=endpoint.skip_verify,
        ca_files=([ctx.cafile] if ctx.cafile else []) + list(endpoint.ca_files),
    )
    context = build_ssl_context(endpoint, ctx)  # a bad CA or client file: the runner says so
    started = time.monotonic()
    try:
        handshake = await _handshake(address, endpoint.port, endpoint.host, context, ctx.timeout)
    except ssl.SSLCertVerificationError as exc:
        reason = x509_text(exc)
        run.phase("handshake", False, started, reason)
        evidence.verify_error = reason
        await _capture_unverified(endpoint, ctx, address, run, evidence)
        reason = _better_x509_text(exc, evidence, endpoint.host) or reason
        evidence.verify_error = reason
        return run.fail(Cause.TLS_ERROR, f"{prefix} failed: {reason}")
    except TimeoutError:
        run.phase("handshake", False, started, f"no handshake within {ctx.timeout:.3g} s")
        if await plain_http_check(endpoint, address, run, _SNIFF_AFTER_TIMEOUT):
            return run.fail(
                Cause.HTTP_HTTPS_MISMATCH, f"{prefix}: server speaks plain HTTP ({_MISMATCH_NOTE})"
            )
        return run.fail(Cause.TIMEOUT, f"{prefix} timed out after {ctx.timeout:.3g} s")
    except (ssl.SSLError, OSError, EOFError) as exc:
        cause, reason = classify(exc)
        run.phase("handshake", False, started, reason)
        if cause not in (Cause.CONNECTION_REFUSED, Cause.TIMEOUT) and await plain_http_check(
            endpoint, address, run
        ):
            return run.fail(
                Cause.HTTP_HTTPS_MISMATCH, f"{prefix}: server speaks plain HTTP ({_MISMATCH_NOTE})"
            )
        if cause == Cause.HTTP_HTTPS_MISMATCH:
            cause = Cause.TLS_ERROR  # looked like plain HTTP but the server does not answer HTTP
        return run.fail(cause, f"{prefix} failed: {reason}")

    _fill(evidence, handshake)
    evidence.verified = not endpoint.skip_verify
    run.phase("handshake", True, started, f"{handshake.version} {handshake.cipher}")
    return run.ok()


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
        await close_stream(writer)


async def _capture_unverified(
    endpoint: Endpoint,
    ctx: ProbeContext,
    address: str,
    run: ProbeRun,
    evidence: TlsEvidence,
) -> None:
    started = time.monotonic()
    try:
        context = build_ssl_context(endpoint, ctx, verify=False)
        handshake = await _handshake(address, endpoint.port, endpoint.host, context, ctx.timeout)
    except (ssl.SSLError, OSError, EOFError, TlsConfigError) as exc:
        # best effort: the verification failure is what matters
        run.phase("handshake (no verification)", False, started, classify(exc)[1])
        return
    _fill(evidence, handshake)
    run.phase(
        "handshake (no verification)",
        True,
        started,
        f"{handshake.version} {handshake.cipher}; certificate captured",
    )


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
