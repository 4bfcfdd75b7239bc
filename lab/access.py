"""Count the HTTP requests that reached a lab registry (e.g. to prove single-flight pulls).

Source: the access log every docker-registry 2.8 writes by default, one combined-format line per
HTTP request, whatever its status (401 challenges and 404s included; the structured "response
completed" lines are not used because they skip 4xx answers such as auth challenges):

    127.0.0.1 - - [21/Nov/2026:18:52:45 +0000] "HEAD /v2/pullcheck/good/manifests/1.0 HTTP/1.1" \
        200 944 "" "containerd/1.6.20~ds1"

The line is written by the registry (unbuffered, straight to ``<dir>/logs/registry-<flavour>.log``)
when its handler returns, i.e. around the time the client gets the answer; readers here wait until
the log has been quiet for ``settle`` seconds (at most ``timeout``) so the last lines are not lost.
The nginx policy front (``"policy"``) writes the same format to ``logs/nginx-access.log``.

Typical use::

    m = access.mark(lab)                       # after this point ...
    ... pull ...
    n = access.count_requests(lab, "plain", method="HEAD", path_contains="/manifests/", since=m)

Registries are the server processes: ``plain`` (also serves the ``mismatch``, ``mirrored`` and
``docker.io``-mirror names: the log has no Host, so filter by path), ``tls`` (also ``untrusted``),
``auth``, ``token``, ``policy``. The lab is shared (other tests, health checks send ``GET /v2/``),
so count a path nobody else uses: :func:`fresh_reference` tags the good image under a new
unique tag, so ``path_contains="/manifests/<that tag>"`` only sees your own resolves.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lab import images, services
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import PLAIN_PORT, Paths

__all__ = [
    "LOGS",
    "Mark",
    "Request",
    "count_requests",
    "fresh_reference",
    "mark",
    "requests",
]

# registry (server process) -> access log name under <dir>/logs/
LOGS: dict[str, str] = {
    "plain": "registry-plain",
    "tls": "registry-tls",
    "auth": "registry-auth",
    "token": "registry-token",
    "policy": "nginx-access",
}
_SAME_PROCESS = {"mismatch": "plain", "mirrored": "plain", "dockerhub": "plain", "untrusted": "tls"}

SETTLE = 0.15  # seconds without log growth that count as "everything is written"
TIMEOUT = 2.0  # give up waiting for a quiet log after this (the lab may be busy with other tests)

_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "[^"]*" "(?P<agent>[^"]*)"'
)


@dataclass(frozen=True)
class Request:
    """One access-log line."""

    method: str
    uri: str  # path and query, as sent
    status: int
    size: int
    user_agent: str
    time: datetime  # whole seconds only (the log's resolution)
    remote: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


@dataclass(frozen=True)
class Mark:
    """A point in every registry access log (``mark``); count only what was logged after it."""

    dir: str
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # registry -> (inode, bytes)
    time: float = 0.0  # time.time() when it was taken (informational)


def _log(info: LabInfo, registry: str) -> Path:
    if registry not in LOGS:
        hint = ""
        if registry in _SAME_PROCESS:
            hint = (
                f"; {registry!r} is served by the {_SAME_PROCESS[registry]!r} registry process"
                " (its log has no Host), count that one with a path filter"
            )
        raise ValueError(f"unknown registry {registry!r}, want one of {sorted(LOGS)}{hint}")
    return Paths(Path(info.dir)).log(LOGS[registry])


def _wait_quiet(logs: list[Path], settle: float, timeout: float) -> None:
    """Return once none of ``logs`` grew for ``settle`` s, or after ``timeout`` s (no error)."""
    if settle <= 0:
        return
    deadline = time.monotonic() + timeout
    last: list[int] = []
    quiet_since = time.monotonic()
    while True:
        sizes = [p.stat().st_size if p.exists() else -1 for p in logs]
        now = time.monotonic()
        if sizes != last:
            last, quiet_since = sizes, now
        elif now - quiet_since >= settle or now >= deadline:
            return
        if now >= deadline:
            return
        time.sleep(0.025)


def mark(info: LabInfo, *, settle: float = SETTLE, timeout: float = TIMEOUT) -> Mark:
    """The current end of every registry access log, once earlier requests are written."""
    logs = {name: _log(info, name) for name in LOGS}
    _wait_quiet(list(logs.values()), settle, timeout)
    offsets = {}
    for name, path in logs.items():
        try:
            st = path.stat()
        except FileNotFoundError:
            offsets[name] = (0, 0)
            continue
        offsets[name] = (st.st_ino, st.st_size)
    return Mark(dir=info.dir, offsets=offsets, time=time.time())


def _parse(line: str) -> Request | None:
    m = _LINE.match(line)
    if m is None:
        return None
    size = m["size"]
    return Request(
        method=m["method"],
        uri=m["uri"],
        status=int(m["status"]),
        size=0 if size == "-" else int(size),
        user_agent=m["agent"],
        time=datetime.strptime(m["time"], "%d/%b/%Y:%H:%M:%S %z"),
        remote=m["remote"],
    )


def requests(
    info: LabInfo,
    registry: str = "plain",
    *,
    since: Mark | None = None,
    settle: float = SETTLE,
    timeout: float = TIMEOUT,
) -> list[Request]:
    """Every request the ``registry`` process logged (after ``since``), oldest first.

    Waits until its log is quiet first (see the module doc). Raises ``LabError`` when the lab was
    restarted since the mark (the log is a different file then).
    """
    path = _log(info, registry)
    if since is not None and Path(since.dir) != Path(info.dir):
        raise ValueError(f"mark is for the lab in {since.dir}, not {info.dir}")
    _wait_quiet([path], settle, timeout)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return []
    with f:
        inode, size = os.fstat(f.fileno()).st_ino, os.fstat(f.fileno()).st_size
        start = 0
        if since is not None:
            mark_inode, start = since.offsets.get(registry, (0, 0))
            if mark_inode not in (0, inode) or start > size:
                raise LabError(f"{path} is not the file it was at the mark: lab restarted since?")
        f.seek(start)
        data = f.read(size - start)
    complete = data[: data.rfind(b"\n") + 1]  # a line still being written is not counted
    found = []
    for raw in complete.decode(errors="replace").splitlines():
        req = _parse(raw)
        if req is not None:
            found.append(req)
    return found


def count_requests(
    info: LabInfo,
    registry: str = "plain",
    *,
    method: str | None = None,
    path_contains: str = "",
    status: int | None = None,
    since: Mark | None = None,
    settle: float = SETTLE,
    timeout: float = TIMEOUT,
) -> int:
    """How many requests reached ``registry`` (after ``since``) matching every filter given.

    ``method``: e.g. "HEAD" / "GET" (case-insensitive; None = any); ``path_contains``: substring of
    the request URI (path and query), e.g. "/manifests/"; ``status``: the HTTP status sent.
    A containerd pull by tag resolves with ``HEAD /v2/<repo>/manifests/<tag>`` and then fetches
    ``GET /v2/<repo>/manifests/sha256:...``, so both methods are counted when ``method`` is None.
    """
    want = method.upper() if method else None
    return sum(
        1
        for r in requests(info, registry, since=since, settle=settle, timeout=timeout)
        if (want is None or r.method == want)
        and path_contains in r.uri
        and (status is None or r.status == status)
    )


def fresh_reference(info: LabInfo, key: str = "good") -> str:
    """Tag the plain-registry image ``info.images[key]`` under a new unique tag; return the ref.

    Same manifest and blobs (same digest), only the tag is new, e.g.
    ``plain.pullcheck.test:15000/pullcheck/good:u-3f9c0a2b1d4e``; pulls of it resolve with
    ``HEAD .../manifests/u-3f9c0a2b1d4e``, which no other test sends. Costs one GET and one PUT.
    """
    ref = info.images[key]
    plain = info.registries["plain"]
    if not ref.startswith(plain + "/") or "@" in ref:
        raise ValueError(f"{key} ({ref}) is not a tagged image in the plain registry")
    repo, tag = ref[len(plain) + 1 :].rsplit(":", 1)
    accept = ", ".join([images.MT_MANIFEST, images.MT_INDEX])
    status, headers, body = services.http_get(
        PLAIN_PORT, f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept}
    )
    if status != 200:
        raise LabError(f"GET manifest of {ref}: HTTP {status}")
    media_type = headers.get("content-type") or json.loads(body).get("mediaType", "")
    new_tag = "u-" + secrets.token_hex(6)
    status, _, answer = services.http_get(
        PLAIN_PORT,
        f"/v2/{repo}/manifests/{new_tag}",
        method="PUT",
        headers={"Content-Type": media_type},
        body=body,
    )
    if status != 201:
        raise LabError(f"PUT {repo}:{new_tag}: HTTP {status}: {answer[:300]!r}")
    return f"{plain}/{repo}:{new_tag}"
