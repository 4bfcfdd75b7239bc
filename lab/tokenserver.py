"""A small Bearer-token server for the lab's token registry (distribution 2.8 token auth).

``python -m lab.tokenserver --listen 127.0.0.1:15446 ...`` serves ``/token`` over TLS:

* ``GET /token?service=S&scope=repository:NAME:ACTIONS`` (optionally with HTTP Basic credentials)
  and the OAuth2 form ``POST /token`` (``grant_type=password``) that containerd tries first.
* Anonymous callers get ``pull`` on repositories under ``public/`` only (other repositories are
  answered with a token that grants nothing, like Docker Hub, so the registry says
  ``insufficient_scope``).
* The lab user (valid Basic credentials) gets ``pull``/``push``/``delete`` on everything.
* Wrong credentials: ``401`` (``{"details": "incorrect username or password"}``).
* Tokens are RS256 JWTs signed with PyJWT: header ``kid`` (libtrust key ID) + ``x5c`` (the signing
  certificate, which is the registry's ``rootcertbundle``), claims ``iss``, ``sub``, ``aud`` =
  service, ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hmac
import json
import secrets
import socket
import ssl
import sys
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab.certs import libtrust_key_id

TOKEN_TTL = 300
USER_ACTIONS = {"pull", "push", "delete", "*"}


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    issuer: str

    @classmethod
    def load(cls, key_file: Path, cert_file: Path, issuer: str) -> Signer:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SystemExit(f"{key_file}: the signing key must be RSA")
        return cls(key, x509.load_pem_x509_certificate(cert_file.read_bytes()), issuer)

    def token(self, subject: str, audience: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        headers = {
            "kid": libtrust_key_id(self.cert),
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + TOKEN_TTL,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)


def parse_scopes(raw: list[str]) -> list[tuple[str, str, list[str]]]:
    """``repository:a/b:pull,push`` -> [("repository", "a/b", ["pull", "push"])].

    Several scopes may be space-separated or repeated; names may contain ':' (host:port).
    """
    scopes = []
    for item in raw:
        for scope in item.split():
            kind, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name:
                continue
            scopes.append((kind, name, [a for a in actions.split(",") if a]))
    return scopes


def grant(scopes: list[tuple[str, str, list[str]]], user: str) -> list[dict[str, Any]]:
    access = []
    for kind, name, actions in scopes:
        if user:
            allowed = [a for a in actions if a in USER_ACTIONS]
        elif kind == "repository" and name.startswith("public/"):
            allowed = [a for a in actions if a == "pull"]
        else:
            allowed = []
        access.append({"type": kind, "name": name, "actions": allowed})
    return access


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        tls: ssl.SSLContext,
        signer: Signer,
        service: str,
        username: str,
        password: str,
    ) -> None:
        self.tls = tls
        self.signer = signer
        self.service = service
        self.username = username
        self.password = password
        super().__init__(address, Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake happens here, in the per-connection thread, not in the accept loop
        sock: socket.socket = request
        sock.settimeout(15)
        try:
            tls_sock = self.tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write(f"{client_address[0]} TLS handshake failed: {e}\n")
            return
        try:
            super().finish_request(tls_sock, client_address)
        finally:
            tls_sock.close()

    def check(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username.encode(), self.username.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode()
        )


class Handler(BaseHTTPRequestHandler):
    server: TokenServer
    server_version = "pullcheck-lab-token/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _json(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _unauthorized(self) -> None:
        self._json(
            401,
            {"details": "incorrect username or password"},
            {"WWW-Authenticate": 'Basic realm="pullcheck-lab-token"'},
        )

    def _basic(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        return user, password

    def _issue(self, params: dict[str, list[str]], creds: tuple[str, str] | None) -> None:
        service = (params.get("service") or [""])[0]
        if service and service != self.server.service:
            self._json(400, {"details": f"unknown service {service!r}"})
            return
        user = ""
        if creds is not None:
            if not self.server.check(*creds):
                self._unauthorized()
                return
            user = creds[0]
        access = grant(parse_scopes(params.get("scope", [])), user)
        token = self.server.signer.token(user, self.server.service, access)
        issued = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._json(
            200,
            {"token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued},
        )

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._json(404, {"details": "not found"})
            return
        self._issue(urllib.parse.parse_qs(url.query), self._basic())

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        if url.path != "/token":
            self._json(404, {"details": "not found"})
            return
        grant_type = (form.get("grant_type") or [""])[0]
        if grant_type != "password":
            self._json(400, {"error": "unsupported_grant_type"})
            return
        creds = ((form.get("username") or [""])[0], (form.get("password") or [""])[0])
        self._issue(form, creds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.tokenserver")
    p.add_argument("--listen", default="127.0.0.1:15446")
    p.add_argument("--cert", type=Path, required=True, help="TLS server certificate (PEM)")
    p.add_argument("--key", type=Path, required=True, help="TLS server key (PEM)")
    p.add_argument("--signing-key", type=Path, required=True)
    p.add_argument("--signing-cert", type=Path, required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password-file", type=Path, required=True)
    args = p.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    if not host.startswith("127."):
        p.error("the token server listens on loopback only")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    signer = Signer.load(args.signing_key, args.signing_cert, args.issuer)
    password = args.password_file.read_text().strip()
    server = TokenServer((host, int(port)), tls, signer, args.service, args.username, password)
    print(f"token server listening on https://{host}:{port}/token", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
