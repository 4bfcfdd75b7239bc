"""The lab's throw-away PKI: a test CA, one server certificate, and the token-signing key.

Keys are generated fresh on every ``up``; nothing here is meant to be trusted outside the lab.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.layout import SERVER_CERT_IPS, SERVER_CERT_NAMES, Paths

# Key usage of a CA certificate that signs other certificates (shared with the probe tests).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pullcheck lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(
        now + dt.timedelta(days=days)
    )


def make_ca(paths: Paths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create ``ca/ca.crt`` + ``ca/ca.key`` (EC P-256, self-signed, CA:TRUE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("pullcheck lab test CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _validity(builder, 365).sign(key, hashes.SHA256())
    paths.ca_dir.mkdir(parents=True, exist_ok=True)
    _write_cert(paths.ca_cert, cert)
    _write_key(paths.ca_key, key)
    return cert, key


def make_server_cert(
    paths: Paths, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    """Create ``ca/server.crt`` + ``ca/server.key`` for every lab TLS name (see layout)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_CERT_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_CERT_IPS]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_CERT_NAMES[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    cert = _validity(builder, 365).sign(ca_key, hashes.SHA256())
    _write_cert(paths.server_cert, cert)
    _write_key(paths.server_key, key)


def make_token_signing(paths: Paths) -> None:
    """Create the token server's RS256 signing key and a self-signed certificate for it.

    The certificate is the registry's ``auth.token.rootcertbundle``; tokens carry it in ``x5c``
    and its libtrust key ID in ``kid``.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("pullcheck lab token signer")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = _validity(builder, 365).sign(key, hashes.SHA256())
    paths.token_dir.mkdir(parents=True, exist_ok=True)
    _write_cert(paths.token_signing_cert, cert)
    _write_key(paths.token_signing_key, key)


def libtrust_key_id(cert: x509.Certificate) -> str:
    """The key ID docker/libtrust derives from a public key (what distribution matches ``kid`` to).

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, 12 groups of 4 joined by ':'.
    """
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def make_all(paths: Paths) -> None:
    ca_cert, ca_key = make_ca(paths)
    make_server_cert(paths, ca_cert, ca_key)
    make_token_signing(paths)
