"""Real `pullcheck agent` / `pullcheck aggregator` processes on loopback, for tests, bench, demo."""

from __future__ import annotations

import copy
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from lab.info import LabInfo

TOKEN = "test-token-7f3a9c1e5b"  # noqa: S105 - a throwaway token for lab servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def agent_config(lab: LabInfo, token_file: Path, endpoint: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "token_file": str(token_file),
        "allow": ["*.pullcheck.test:*/*", "docker.io/pullcheck/*"],
        "registries": [lab.registries["plain"]],
        "limits": {"rate_limit_per_minute": 0},
        "agent": {
            "runtime_endpoint": endpoint,
            "resolv_conf": lab.resolv_conf,
            "registry_config_path": lab.registry_config_path,
            "probe_timeout": 5,
            "connectivity_ttl": 30,
        },
    }
    return merge(base, extra)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_prepull_job(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Pre-pull job ``name``'s status (this is an aggregator) once ``check`` holds for it."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        with self.client() as client:
            while time.monotonic() < deadline:
                reply = client.get(f"/v1/prepull/jobs/{name}")
                if reply.status_code == 200:
                    body = reply.json()
                    if check(body):
                        return body
                time.sleep(0.3)
        raise AssertionError(f"job {name} never reached the expected state: {body}")


@contextmanager
def server(
    kind: str,
    config: dict[str, Any],
    workdir: Path,
    *,
    node: str = "",
    name: str = "",
    port: int | None = None,
) -> Iterator[Server]:
    """Start ``pullcheck <kind>`` with ``config`` on ``port`` (default: a free one); stop it."""
    port = port or free_port()
    section = "agent" if kind == "agent" else "aggregator"
    config = merge(config, {section: {"listen": f"127.0.0.1:{port}"}})
    label = name or node or kind
    config_file = workdir / f"{label}-{port}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = workdir / f"{label}-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLCHECK_")}
    if node:
        env["NODE_NAME"] = node
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", kind, "--config", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield Server(url, proc, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` and reap it; SIGKILL if it has not ended within 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not healthy within 30 s:\n{log.read_text()[-3000:]}")


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>this is not an agent</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port in a thread; yields ``127.0.0.1:port``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def garbage_agent() -> Iterator[str]:
    """An HTTP server that answers every request with 200 and an HTML page."""
    with loopback_http(_Garbage) as address:
        yield address


_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def copy_in_plain_registry(src: str, dst: str) -> None:
    """Copy ``repo:tag`` to ``repo:tag`` inside the lab's plain registry (blob mounts + PUT)."""
    (src_repo, src_tag), (dst_repo, dst_tag) = src.rsplit(":", 1), dst.rsplit(":", 1)
    with httpx.Client(base_url="http://127.0.0.1:15000", trust_env=False, timeout=10) as client:
        got = client.get(f"/v2/{src_repo}/manifests/{src_tag}", headers={"Accept": _MANIFEST_TYPES})
        got.raise_for_status()
        manifest = got.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            mounted = client.post(
                f"/v2/{dst_repo}/blobs/uploads/",
                params={"mount": blob["digest"], "from": src_repo},
            )
            if mounted.status_code != 201:
                raise RuntimeError(f"mount of {blob['digest']} failed: {mounted.status_code}")
        put = client.put(
            f"/v2/{dst_repo}/manifests/{dst_tag}",
            content=got.content,
            headers={"Content-Type": got.headers["content-type"]},
        )
        put.raise_for_status()
