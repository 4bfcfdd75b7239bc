"""The lab token server's JWTs (signed with PyJWT) are what distribution's token auth accepts.

Tokens are signed here, in the test process, with the lab's signing key, and shown to the lab's
real token registry: so the signing code is checked whatever token-server process is running.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509

from lab import services
from lab.certs import libtrust_key_id, make_token_signing
from lab.info import LabInfo
from lab.layout import TOKEN_ISSUER, TOKEN_PORT, TOKEN_SERVICE, Paths
from lab.tokenserver import TOKEN_TTL, Signer, grant, parse_scopes

pytestmark = pytest.mark.lab

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _signer(lab: LabInfo) -> Signer:
    paths = Paths(Path(lab.dir))
    return Signer.load(paths.token_signing_key, paths.token_signing_cert, TOKEN_ISSUER)


def _head(lab: LabInfo, repo: str, token: str) -> int:
    status, _, _ = services.http_get(
        TOKEN_PORT,
        f"/v2/{repo}/manifests/1.0",
        method="HEAD",
        ca_file=Path(lab.ca_file),
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT},
    )
    return status


def test_signed_token_has_distributions_header_and_claims(lab: LabInfo) -> None:
    signer = _signer(lab)
    access = grant(parse_scopes(["repository:private/good:pull,push"]), lab.username)
    before = int(time.time())
    token = signer.token(lab.username, TOKEN_SERVICE, access)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    assert header["kid"] == libtrust_key_id(signer.cert)
    (leaf,) = header["x5c"]
    assert x509.load_der_x509_certificate(base64.b64decode(leaf)) == signer.cert
    claims = jwt.decode(
        token,
        signer.cert.public_key(),  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience=TOKEN_SERVICE,
        issuer=TOKEN_ISSUER,
    )
    assert claims["sub"] == lab.username
    assert claims["access"] == [
        {"type": "repository", "name": "private/good", "actions": ["pull", "push"]}
    ]
    assert before <= claims["iat"] <= claims["exp"] - TOKEN_TTL + 1
    assert claims["nbf"] == claims["iat"] - 30 and len(claims["jti"]) == 32


def test_the_registry_accepts_the_signed_token_and_refuses_others(
    lab: LabInfo, tmp_path: Path
) -> None:
    signer = _signer(lab)
    scopes = parse_scopes(["repository:private/good:pull"])
    user_access = grant(scopes, lab.username)
    user_token = signer.token(lab.username, TOKEN_SERVICE, user_access)
    assert _head(lab, "private/good", user_token) == 200
    anonymous = signer.token("", TOKEN_SERVICE, grant(scopes, ""))
    assert _head(lab, "private/good", anonymous) == 401  # a token that grants nothing
    # the same claims signed by a key the registry does not trust
    stranger = Paths(tmp_path)
    make_token_signing(stranger)
    forged = Signer.load(stranger.token_signing_key, stranger.token_signing_cert, TOKEN_ISSUER)
    assert _head(lab, "private/good", forged.token(lab.username, TOKEN_SERVICE, user_access)) == 401
    # for another service (audience)
    elsewhere = signer.token(lab.username, "registry.example.com", user_access)
    assert _head(lab, "private/good", elsewhere) == 401
