"""Pull every lab image through the lab containerd's CRI; check each fails (or works) as designed.

``python -m lab verify [--markdown] [KEY...]``. The expectations are substrings of the texts
observed with containerd 1.6.20 (see ``lab/OBSERVED.md``); a newer containerd words some of them
differently (see the reference §4.2).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from lab import cri
from lab.info import LabInfo

OK = "ok"


@dataclass(frozen=True)
class Case:
    name: str  # unique case name (image key, plus "+creds"/"+badcreds" variants)
    key: str  # LabInfo.images key
    expect: str  # OK, or a substring the CRI error message must contain
    code: str = ""  # expected gRPC status code name (failures only)
    creds: str = ""  # "" (anonymous), "good", "bad"
    fill_disk: bool = False  # fill the containerd tmpfs before pulling


CASES: list[Case] = [
    Case("good", "good", OK),
    Case("good_digest", "good_digest", OK),
    Case("tls", "tls", OK),
    Case("mirrored", "mirrored", OK),
    Case("dockerhub_mirror", "dockerhub_mirror", OK),
    Case("private+creds", "private", OK, creds="good"),
    Case("private", "private", "401 Unauthorized", "UNKNOWN"),
    Case("private+badcreds", "private", "401 Unauthorized", "UNKNOWN", creds="bad"),
    Case("token_public", "token_public", OK),
    Case("token_public+creds", "token_public", OK, creds="good"),
    Case(
        "token_public+badcreds",
        "token_public",
        "failed to fetch oauth token: unexpected status: 401 Unauthorized",
        "UNKNOWN",
        creds="bad",
    ),
    Case("token_private+creds", "token_private", OK, creds="good"),
    Case(
        "token_private",
        "token_private",
        "pull access denied, repository does not exist or may require authorization: "
        "server message: insufficient_scope: authorization failed",
        "UNKNOWN",
    ),
    Case(
        "token_private+badcreds",
        "token_private",
        "failed to fetch oauth token: unexpected status: 401 Unauthorized",
        "UNKNOWN",
        creds="bad",
    ),
    Case("untrusted", "untrusted", "x509: certificate signed by unknown authority", "UNKNOWN"),
    Case("mismatch", "mismatch", "http: server gave HTTP response to HTTPS client", "UNKNOWN"),
    Case("refused", "refused", "connect: connection refused", "UNKNOWN"),
    Case("blackhole", "blackhole", "net/http: TLS handshake timeout", "UNKNOWN"),
    Case(
        "nxdomain",
        "nxdomain",
        "lookup nxdomain.pullcheck.test on 127.0.53.1:53: no such host",
        "UNKNOWN",
    ),
    Case("missing_tag", "missing_tag", "pullcheck/good:9.9: not found", "NOT_FOUND"),
    Case("missing_repo", "missing_repo", "pullcheck/nosuchrepo:1.0: not found", "NOT_FOUND"),
    Case("ratelimited", "ratelimited", "429 Too Many Requests", "UNKNOWN"),
    Case(
        "ratelimited_get",
        "ratelimited_get",
        "429 Too Many Requests - Server message: toomanyrequests: "
        "You have reached your pull rate limit",
        "UNKNOWN",
    ),
    Case("denied", "denied", "403 Forbidden", "UNKNOWN"),
    Case("broken", "broken", "500 Internal Server Error", "UNKNOWN"),
    Case("badgateway", "badgateway", "502 Bad Gateway", "UNKNOWN"),
    Case("unavailable", "unavailable", "503 Service Temporarily Unavailable", "UNKNOWN"),
    Case(
        "token_unavailable",
        "token_unavailable",
        "failed to fetch anonymous token: unexpected status: 503 Service Temporarily Unavailable",
        "UNKNOWN",
    ),
    Case("reset", "reset", "connection reset by peer", "UNKNOWN"),
    Case("corrupt", "corrupt", "archive/tar: invalid tar header", "UNKNOWN"),
    Case(
        "foreign_platform",
        "foreign_platform",
        "no match for platform in manifest: not found",
        "NOT_FOUND",
    ),
    Case("blob_gone", "blob_gone", "from remote: not found", "NOT_FOUND"),
    Case("big", "big", OK),
    Case("disk_full", "good", "no space left on device", "UNKNOWN", fill_disk=True),
]


@dataclass
class Result:
    case: Case
    ref: str
    code: str  # "OK" or gRPC status code name
    message: str
    seconds: float

    @property
    def passed(self) -> bool:
        if self.case.expect == OK:
            return self.code == "OK"
        code_ok = not self.case.code or self.code == self.case.code
        return code_ok and self.case.expect in self.message


def fill(directory: Path, name: str = "pullcheck-lab-filler.bin") -> Path:
    """Fill the tmpfs under ``directory`` (leaving a few KiB) and return the filler file."""
    filler = directory / name
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    with contextlib.suppress(OSError), filler.open("ab") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return filler


def run_case(info: LabInfo, case: Case, timeout: float = 90.0) -> Result:
    ref = info.images[case.key]
    username, password = "", ""
    if case.creds == "good":
        username, password = info.username, info.password
    elif case.creds == "bad":
        username, password = info.username, "not-the-password"
    with contextlib.suppress(grpc.RpcError):
        cri.remove(info.endpoint, ref)
    filler: Path | None = fill(Path(info.content_dir)) if case.fill_disk else None
    started = time.monotonic()
    try:
        image_id = cri.pull(info.endpoint, ref, username, password, timeout=timeout)
        code, message = "OK", image_id
    except grpc.RpcError as e:
        code, message = cri.error_text(e)
    finally:
        if filler is not None:
            filler.unlink()
    seconds = time.monotonic() - started
    if code == "OK":
        with contextlib.suppress(grpc.RpcError):
            cri.remove(info.endpoint, ref)
    return Result(case, ref, code, message, seconds)


def run(info: LabInfo, keys: list[str] | None = None, markdown: bool = False) -> int:
    cases = [c for c in CASES if not keys or c.name in keys or c.key in keys]
    results = []
    for case in cases:
        r = run_case(info, case)
        results.append(r)
        if not markdown:
            mark = "PASS" if r.passed else "FAIL"
            print(f"{mark} {case.name:<24} {r.code:<10} {r.seconds:5.1f}s  {r.ref}")
            if r.code != "OK":
                print(f"     {r.message}")
            if not r.passed:
                print(f"     expected: {case.code or ''} {case.expect!r}")
    if markdown:
        print("| case | image | gRPC code | time | observed message |")
        print("|---|---|---|---|---|")
        for r in results:
            msg = r.message.replace("|", "\\|") if r.code != "OK" else f"image id `{r.message}`"
            if r.code != "OK":
                msg = f"`{msg}`"
            print(f"| {r.case.name} | `{r.ref}` | {r.code} | {r.seconds:.1f}s | {msg} |")
    failed = [r.case.name for r in results if not r.passed]
    summary = f"{len(results) - len(failed)}/{len(results)} cases as designed"
    print(summary + (f"; unexpected: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
