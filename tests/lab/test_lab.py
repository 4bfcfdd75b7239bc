"""The lab started and each of its services answers as designed.

Everything here talks to 127.0.0.1 / 127.0.53.1 directly: the lab names are never resolved through
the machine's resolver.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import ssl
from pathlib import Path

import pytest

from lab import control, cri, images, services, verify
from lab.images import foreign_arch
from lab.info import LabInfo
from lab.layout import (
    AUTH_PORT,
    BLACKHOLE_PORT,
    PLAIN_PORT,
    POLICY_PORT,
    REFUSED_PORT,
    RESET_AFTER_BYTES,
    RESET_PORT,
    TLS_PORT,
    TOKEN_PORT,
    TOKEN_SERVER_PORT,
)

pytestmark = pytest.mark.lab

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# --------------------------------------------------------------------------- state


def test_lab_json_and_status(lab: LabInfo) -> None:
    assert control.status(Path(lab.dir))
    on_disk = LabInfo.load(Path(lab.dir))
    # extra nodes may have been added since the session started (tests/lab/test_nodes.py, others)
    assert dataclasses.replace(on_disk, nodes=lab.nodes, node_pids=lab.node_pids) == lab
    assert lab.endpoint == "unix://" + str(Path(lab.dir) / "run" / "containerd.sock")
    assert set(lab.pids) >= {"dnsmasq", "containerd", "nginx", "blackhole", "token-server"}
    assert lab.username == "pullcheck" and len(lab.password) >= 16
    assert lab.images["good_digest"].startswith(lab.registries["plain"] + "/pullcheck/good@sha256:")


def test_up_is_idempotent(lab: LabInfo) -> None:
    again = control.up(Path(lab.dir))
    assert again.pids == lab.pids


def test_env(lab: LabInfo) -> None:
    env = lab.env()
    assert env["CONTAINER_RUNTIME_ENDPOINT"] == lab.endpoint
    assert env["PULLCHECK_RESOLV_CONF"] == lab.resolv_conf
    assert env["PULLCHECK_REGISTRY_CONFIG_PATH"] == lab.registry_config_path


def test_resolv_conf(lab: LabInfo) -> None:
    text = Path(lab.resolv_conf).read_text()
    assert text.splitlines()[0] == "nameserver 127.0.53.1"
    assert "10.255.255.53" not in text


def test_content_dir_is_small_tmpfs(lab: LabInfo) -> None:
    st = os.statvfs(lab.content_dir)
    assert st.f_blocks * st.f_frsize == 512 * 1024 * 1024
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {lab.content_dir} " in mounts


def test_hosts_toml_layout(lab: LabInfo) -> None:
    root = Path(lab.registry_config_path)
    r = lab.registries
    for key in ("plain", "mirrored", "policy", "token_down", "reset", "tls", "auth", "token"):
        assert (root / r[key] / "hosts.toml").is_file(), key
    for key in ("mismatch", "untrusted", "refused", "blackhole", "nxdomain"):
        assert not (root / r[key]).exists(), key
    dockerhub = (root / "docker.io" / "hosts.toml").read_text()
    assert 'server = "https://registry-1.docker.io"' in dockerhub
    assert f'[host."http://{r["plain"]}"]' in dockerhub
    mirrored = (root / r["mirrored"] / "hosts.toml").read_text()
    assert f'[host."http://{r["refused"]}"]' in mirrored
    assert f"ca = {json.dumps(lab.ca_file)}" in (root / r["tls"] / "hosts.toml").read_text()


# --------------------------------------------------------------------------- DNS


@pytest.mark.parametrize("name", ["plain", "tls", "auth", "token", "auth-token", "policy", "x.y"])
def test_dns_lab_names(lab: LabInfo, name: str) -> None:
    assert services.dns_query(f"{name}.pullcheck.test", "A") == ("NOERROR", ["127.0.0.1"])
    assert services.dns_query(f"{name}.pullcheck.test", "AAAA") == ("NOERROR", [])


@pytest.mark.parametrize(
    "name", ["nxdomain.pullcheck.test", "registry-1.docker.io", "example.com", "localhost"]
)
def test_dns_nxdomain(lab: LabInfo, name: str) -> None:
    assert services.dns_query(name, "A")[0] == "NXDOMAIN"


# --------------------------------------------------------------------------- registries


def test_plain_registry(lab: LabInfo) -> None:
    status, headers, _ = services.http_get(PLAIN_PORT)
    assert status == 200
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    status, headers, _ = services.http_get(
        PLAIN_PORT, "/v2/pullcheck/good/manifests/1.0", method="HEAD", headers={"Accept": ACCEPT}
    )
    assert status == 200
    assert lab.images["good_digest"].endswith("@" + headers["docker-content-digest"])


def test_tls_registry(lab: LabInfo) -> None:
    status, _, _ = services.http_get(TLS_PORT, ca_file=Path(lab.ca_file))
    assert status == 200


def test_untrusted_without_lab_ca(lab: LabInfo) -> None:
    ctx = ssl.create_default_context()  # system trust store only
    with (
        socket.create_connection(("127.0.0.1", TLS_PORT), timeout=3) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        ctx.wrap_socket(raw, server_hostname="untrusted.pullcheck.test")


def test_plain_port_is_not_tls(lab: LabInfo) -> None:
    ctx = ssl.create_default_context(cafile=lab.ca_file)
    with (
        socket.create_connection(("127.0.0.1", PLAIN_PORT), timeout=3) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname="mismatch.pullcheck.test")


def test_auth_registry(lab: LabInfo) -> None:
    ca = Path(lab.ca_file)
    status, headers, _ = services.http_get(AUTH_PORT, ca_file=ca)
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic ")
    status, _, _ = services.http_get(AUTH_PORT, ca_file=ca, headers=_basic(lab.username, "nope"))
    assert status == 401
    status, _, _ = services.http_get(
        AUTH_PORT, ca_file=ca, headers=_basic(lab.username, lab.password)
    )
    assert status == 200


def test_token_registry_challenge(lab: LabInfo) -> None:
    status, headers, _ = services.http_get(TOKEN_PORT, ca_file=Path(lab.ca_file))
    assert status == 401
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'realm="https://auth-token.pullcheck.test:15446/token"' in challenge
    assert f'service="{lab.registries["token"]}"' in challenge


def _token(
    lab: LabInfo, repo: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    service = lab.registries["token"]
    status, _, body = services.http_get(
        TOKEN_SERVER_PORT,
        f"/token?service={service}&scope=repository:{repo}:pull",
        ca_file=Path(lab.ca_file),
        headers=headers,
    )
    return status, json.loads(body)


def test_token_server_grants(lab: LabInfo) -> None:
    status, body = _token(lab, "public/good")
    assert status == 200
    claims = _jwt_claims(str(body["token"]))
    assert claims["aud"] == lab.registries["token"]
    assert claims["access"] == [{"type": "repository", "name": "public/good", "actions": ["pull"]}]

    status, body = _token(lab, "private/good")
    assert status == 200
    assert _jwt_claims(str(body["token"]))["access"] == [
        {"type": "repository", "name": "private/good", "actions": []}
    ]

    status, body = _token(lab, "private/good", _basic(lab.username, lab.password))
    assert status == 200
    assert _jwt_claims(str(body["token"]))["access"] == [
        {"type": "repository", "name": "private/good", "actions": ["pull"]}
    ]

    status, _ = _token(lab, "private/good", _basic(lab.username, "wrong"))
    assert status == 401


def test_token_is_accepted_by_registry(lab: LabInfo) -> None:
    _, body = _token(lab, "public/good")
    status, _, _ = services.http_get(
        TOKEN_PORT,
        "/v2/public/good/manifests/1.0",
        method="HEAD",
        ca_file=Path(lab.ca_file),
        headers={"Authorization": f"Bearer {body['token']}", "Accept": ACCEPT},
    )
    assert status == 200


# --------------------------------------------------------------------------- policy proxy


def test_policy_passes_v2(lab: LabInfo) -> None:
    assert services.http_get(POLICY_PORT)[0] == 200
    status, _, _ = services.http_get(
        POLICY_PORT, "/v2/pullcheck/good/manifests/1.0", method="HEAD", headers={"Accept": ACCEPT}
    )
    assert status == 200


@pytest.mark.parametrize(
    ("repo", "status", "code"),
    [
        ("ratelimited", 429, "TOOMANYREQUESTS"),
        ("ratelimited-get", 429, "TOOMANYREQUESTS"),
        ("denied", 403, "DENIED"),
        ("broken", 500, "UNKNOWN"),
        ("unavailable", 503, "UNAVAILABLE"),
    ],
)
def test_policy_faults(lab: LabInfo, repo: str, status: int, code: str) -> None:
    got, headers, body = services.http_get(POLICY_PORT, f"/v2/{repo}/app/manifests/1.0")
    assert got == status
    assert json.loads(body)["errors"][0]["code"] == code
    if status == 429:
        assert headers["ratelimit-limit"] == "100;w=21600"
        assert headers["ratelimit-remaining"] == "0;w=21600"
        assert headers["docker-ratelimit-source"] == "127.0.0.1"
    if status == 503:
        assert headers["retry-after"] == "120"


def test_ratelimited_get_lets_head_through(lab: LabInfo) -> None:
    status, _, _ = services.http_get(
        POLICY_PORT,
        "/v2/ratelimited-get/app/manifests/1.0",
        method="HEAD",
        headers={"Accept": ACCEPT},
    )
    assert status == 200
    assert (
        services.http_get(POLICY_PORT, "/v2/ratelimited/app/manifests/1.0", method="HEAD")[0] == 429
    )


def test_policy_bad_gateway_is_nginx_own_502(lab: LabInfo) -> None:
    status, _, body = services.http_get(POLICY_PORT, "/v2/badgateway/app/manifests/1.0")
    assert status == 502 and b"502 Bad Gateway" in body  # nginx's page: nothing behind it


def test_token_down_challenges_for_a_token_that_fails(lab: LabInfo) -> None:
    host = {"Host": lab.registries["token_down"]}
    status, headers, _ = services.http_get(
        POLICY_PORT, "/v2/pullcheck/good/manifests/1.0", headers=host
    )
    assert status == 401
    realm = f"http://{lab.registries['token_down']}/token"
    assert headers["www-authenticate"].startswith(f'Bearer realm="{realm}"')
    status, headers, body = services.http_get(POLICY_PORT, "/token?scope=x", headers=host)
    assert status == 503 and headers["retry-after"] == "120"
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"


def _blob_get(path: str, extra: str = "") -> tuple[bytes, bytes, BaseException | None]:
    """The raw answer of the reset proxy to one GET: (head, body, the error that ended it)."""
    with socket.create_connection(("127.0.0.1", RESET_PORT), timeout=3) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: reset.pullcheck.test\r\n{extra}\r\n".encode())
        data, error = b"", None
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError as e:
            error = e
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, error


def test_reset_proxy_cuts_big_blobs_with_an_rst(lab: LabInfo) -> None:
    _, _, manifest = services.http_get(
        RESET_PORT, "/v2/pullcheck/reset/manifests/1.0", headers={"Accept": ACCEPT}
    )
    doc = json.loads(manifest)
    layer, config = doc["layers"][0], doc["config"]
    assert layer["size"] > RESET_AFTER_BYTES > config["size"]
    head, body, error = _blob_get(f"/v2/pullcheck/reset/blobs/{layer['digest']}")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == RESET_AFTER_BYTES
    assert isinstance(error, ConnectionResetError)
    # a Range request resuming the download is cut at the same absolute offset of the blob
    head, body, error = _blob_get(
        f"/v2/pullcheck/reset/blobs/{layer['digest']}", "Range: bytes=1000-\r\n"
    )
    assert head.startswith(b"HTTP/1.1 206") and len(body) == RESET_AFTER_BYTES - 1000
    assert isinstance(error, ConnectionResetError)
    # small blobs and manifests pass whole, one request per connection
    head, body, error = _blob_get(f"/v2/pullcheck/reset/blobs/{config['digest']}")
    assert error is None and len(body) == config["size"] and b"Connection: close" in head


# --------------------------------------------------------------------------- network faults


def test_refused(lab: LabInfo) -> None:
    assert services.tcp_state(REFUSED_PORT) == "refused"


def test_blackhole_accepts_and_stays_silent(lab: LabInfo) -> None:
    with socket.create_connection(("127.0.0.1", BLACKHOLE_PORT), timeout=2) as s:
        s.sendall(b"HEAD /v2/ HTTP/1.1\r\nHost: blackhole.pullcheck.test\r\n\r\n")
        s.settimeout(1.0)
        with pytest.raises(TimeoutError):
            s.recv(1)  # no byte, and no EOF either: the connection stays open


# --------------------------------------------------------------------------- seed images


def test_blob_gone_manifest_resolves_but_blob_404s(lab: LabInfo) -> None:
    status, _, body = services.http_get(
        PLAIN_PORT, "/v2/pullcheck/blobgone/manifests/1.0", headers={"Accept": ACCEPT}
    )
    assert status == 200
    layer = json.loads(body)["layers"][0]["digest"]
    assert services.http_get(PLAIN_PORT, f"/v2/pullcheck/blobgone/blobs/{layer}")[0] == 404


def test_big_image_is_64_mib_in_8_incompressible_gzip_layers(lab: LabInfo) -> None:
    status, headers, body = services.http_get(
        PLAIN_PORT, "/v2/pullcheck/big/manifests/1.0", headers={"Accept": ACCEPT}
    )
    assert status == 200
    assert lab.images["big"] == lab.registries["plain"] + "/pullcheck/big:1.0"
    layers = json.loads(body)["layers"]
    assert [layer["mediaType"] for layer in layers] == [images.MT_LAYER_GZIP] * images.BIG_LAYERS
    # gzip cannot shrink pseudo-random bytes: every layer is a little over its file
    assert all(layer["size"] > images.BIG_LAYER_BYTES for layer in layers)
    assert sum(layer["size"] for layer in layers) < 65 * 1024 * 1024
    # built once into the lab directory's seed cache, which is what the registry serves
    cached = Path(lab.dir) / "seed-cache" / images.BIG_RECIPE
    assert (Path(lab.dir) / "seed" / "big").resolve() == cached
    index = json.loads((cached / "index.json").read_text())
    assert headers["docker-content-digest"] == index["manifests"][0]["digest"]


def test_corrupt_layer_is_uncompressed_garbage(lab: LabInfo) -> None:
    _, _, body = services.http_get(
        PLAIN_PORT, "/v2/pullcheck/corrupt/manifests/1.0", headers={"Accept": ACCEPT}
    )
    layer = json.loads(body)["layers"][0]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["size"] >= 4096


def test_foreign_index_lists_only_the_other_arch(lab: LabInfo) -> None:
    _, headers, body = services.http_get(
        PLAIN_PORT, "/v2/pullcheck/foreign/manifests/1.0", headers={"Accept": ACCEPT}
    )
    assert headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    archs = [m["platform"]["architecture"] for m in json.loads(body)["manifests"]]
    assert archs == [foreign_arch()]


# --------------------------------------------------------------------------- containerd (CRI)


def test_cri_answers(lab: LabInfo) -> None:
    v = cri.version(lab.endpoint)
    assert v.runtime_name == "containerd"
    assert v.runtime_api_version.startswith("v1")


@pytest.mark.parametrize("case", verify.CASES, ids=[c.name for c in verify.CASES])
def test_cri_pull_outcome(lab: LabInfo, case: verify.Case) -> None:
    """Each lab image pulls (or fails) through the real containerd exactly as designed."""
    result = verify.run_case(lab, case)
    assert result.passed, f"{result.code}: {result.message}"
