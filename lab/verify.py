"""Pull every lab image through a containerd's CRI; check each fails (or works) as designed.

``python -m lab verify [--runtime 1.6|1.7|2] [--markdown] [KEY...]``. Without ``--runtime`` the
cases run through the lab's own containerd (1.6, on loopback); with it, through a lab node that
runs that containerd and has no fault (``lab.nodes``): its own network namespace, the bridge
resolver 10.99.0.1 and the registries at 10.99.0.1 (the refused port is not forwarded there
either). The expectations are substrings of the observed texts (``lab/OBSERVED.md``); where a
containerd words one differently, the case carries that version's alternative (``Case.by_runtime``;
the reference §4.2). ``{dns}`` in an expectation is the resolver the target uses.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import grpc

from lab import cri, netns, nodefaults, runtimes
from lab.errors import LabError
from lab.info import LabInfo
from lab.layout import DNS_PORT, REGISTRIES, TOKEN_REALM
from lab.nodefiles import NodeFiles
from lab.nodes import lab_paths, node_index

OK = "ok"
MAIN = "lab"  # Target.name of the lab's own containerd


@dataclass(frozen=True)
class Case:
    name: str  # unique case name (image key, plus "+creds"/"+badcreds" variants)
    key: str  # LabInfo.images key
    expect: str  # OK, or a substring the CRI error message must contain ({dns}: the resolver)
    code: str = ""  # expected gRPC status code name (failures only)
    creds: str = ""  # "" (anonymous), "good", "bad"
    fill_disk: bool = False  # fill the containerd tmpfs before pulling
    # runtime ("1.7", "2") -> (expect, code) where that containerd says it differently
    by_runtime: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def expectation(self, runtime: str) -> tuple[str, str]:
        """(expect, code) on containerd ``runtime``."""
        return self.by_runtime.get(runtime, (self.expect, self.code))


NEWER = ("1.7", "2")  # containerd builds whose remotes/docker texts name the failed request


def _newer(expect: str, code: str = "UNKNOWN") -> dict[str, tuple[str, str]]:
    """The same (expect, code) on 1.7 and 2.x."""
    return dict.fromkeys(NEWER, (expect, code))


def _token_status(kind: str, registry: str, realm: str, repository: str, status: str) -> str:
    """1.7+'s token failure: the GET to the realm with its scope and service (the registry's
    host:port, as the lab's challenges name it), then the status."""
    scope = quote(f"repository:{repository}:pull", safe="")
    service = quote(REGISTRIES[registry], safe="")
    return (
        f"failed to fetch {kind} token: unexpected status from GET request to "
        f"{realm}?scope={scope}&service={service}: {status}"
    )


CASES: list[Case] = [
    Case("good", "good", OK),
    Case("good_digest", "good_digest", OK),
    Case("tls", "tls", OK),
    Case("mirrored", "mirrored", OK),
    Case("dockerhub_mirror", "dockerhub_mirror", OK),
    Case("private+creds", "private", OK, creds="good"),
    # 1.7+ asks for credentials before it sends the HEAD again: no 401 in the text
    Case(
        "private",
        "private",
        "401 Unauthorized",
        "UNKNOWN",
        by_runtime=_newer("authorization failed: no basic auth credentials"),
    ),
    Case("private+badcreds", "private", "401 Unauthorized", "UNKNOWN", creds="bad"),
    Case("token_public", "token_public", OK),
    Case("token_public+creds", "token_public", OK, creds="good"),
    Case(
        "token_public+badcreds",
        "token_public",
        "failed to fetch oauth token: unexpected status: 401 Unauthorized",
        "UNKNOWN",
        creds="bad",
        by_runtime=_newer(
            _token_status("oauth", "token", TOKEN_REALM, "public/good", "401 Unauthorized")
        ),
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
        by_runtime=_newer(
            _token_status("oauth", "token", TOKEN_REALM, "private/good", "401 Unauthorized")
        ),
    ),
    Case("untrusted", "untrusted", "x509: certificate signed by unknown authority", "UNKNOWN"),
    Case("mismatch", "mismatch", "http: server gave HTTP response to HTTPS client", "UNKNOWN"),
    Case("refused", "refused", "connect: connection refused", "UNKNOWN"),
    Case("blackhole", "blackhole", "net/http: TLS handshake timeout", "UNKNOWN"),
    Case(
        "nxdomain",
        "nxdomain",
        "lookup nxdomain.pullcheck.test on {dns}: no such host",
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
        # 2.x prints the registry's error on its own line after the status
        by_runtime={
            "2": (
                "429 Too Many Requests\ntoomanyrequests: You have reached your pull rate limit",
                "UNKNOWN",
            )
        },
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
        by_runtime=_newer(
            _token_status(
                "anonymous",
                "token_down",
                f"http://{REGISTRIES['token_down']}/token",
                "pullcheck/good",
                "503 Service Temporarily Unavailable",
            )
        ),
    ),
    Case("reset", "reset", "connection reset by peer", "UNKNOWN"),
    Case("corrupt", "corrupt", "archive/tar: invalid tar header", "UNKNOWN"),
    Case(
        "foreign_platform",
        "foreign_platform",
        "no match for platform in manifest: not found",
        "NOT_FOUND",
        # 2.x's CRI plugin asks for the image config first and names the index's digest
        by_runtime={
            "2": (
                "get image config descriptor: no match for platform in manifest sha256:",
                "NOT_FOUND",
            )
        },
    ),
    Case("blob_gone", "blob_gone", "from remote: not found", "NOT_FOUND"),
    Case("big", "big", OK),
    Case("disk_full", "good", "no space left on device", "UNKNOWN", fill_disk=True),
]


@dataclass(frozen=True)
class Target:
    """Where the cases are pulled: the lab's own containerd, or one lab node's."""

    name: str  # MAIN, or the node's name
    runtime: str  # lab.runtimes name
    endpoint: str  # CRI endpoint
    dns: str  # "host:port" of the resolver the containerd asks
    lab_dir: str
    content_dir: str = ""  # the lab containerd's root (MAIN only; a node fills its own)

    @contextlib.contextmanager
    def full_disk(self) -> Iterator[None]:
        """The target's image filesystem full for the duration."""
        if self.name == MAIN:
            filler = fill(Path(self.content_dir))
            try:
                yield
            finally:
                filler.unlink()
            return
        nodefaults.set_fault(self.lab_dir, self.name, "disk-full", True)
        try:
            yield
        finally:
            nodefaults.set_fault(self.lab_dir, self.name, "disk-full", False)


def main_target(info: LabInfo) -> Target:
    """The lab's own containerd (the system's 1.6, on loopback)."""
    dns = f"{info.dns_server}:{DNS_PORT}"
    return Target(MAIN, "1.6", info.endpoint, dns, info.dir, info.content_dir)


def node_target(info: LabInfo, runtime: str) -> Target:
    """The first lab node that runs containerd ``runtime`` and has no fault; LabError if none."""
    runtimes.check(runtime)
    paths = lab_paths(info)
    for name in sorted(info.nodes, key=node_index):
        try:
            state = NodeFiles(paths, name).load()
        except (OSError, ValueError, TypeError):
            continue
        if state.runtime == runtime and not state.faults:
            return Target(name, runtime, info.nodes[name], f"{netns.GATEWAY}:{DNS_PORT}", info.dir)
    raise LabError(
        f"no lab node without faults runs containerd {runtime}; start one, e.g. "
        f"`python -m lab up --nodes N --runtime {runtime}` (new nodes) or a scenario file "
        f'with runtime = "{runtime}" (`python -m lab scenario FILE`)'
    )


@dataclass
class Result:
    case: Case
    ref: str
    code: str  # "OK" or gRPC status code name
    message: str
    seconds: float
    runtime: str = "1.6"
    dns: str = ""

    @property
    def expected(self) -> tuple[str, str]:
        """(expected substring, expected code) on this result's runtime and resolver."""
        expect, code = self.case.expectation(self.runtime)
        return expect.replace("{dns}", self.dns), code

    @property
    def passed(self) -> bool:
        expect, code = self.expected
        if expect == OK:
            return self.code == "OK"
        code_ok = not code or self.code == code
        return code_ok and expect in self.message


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


def run_case(
    info: LabInfo, case: Case, timeout: float = 90.0, target: Target | None = None
) -> Result:
    """Pull ``case``'s image through ``target`` (default: the lab's own containerd)."""
    where = target or main_target(info)
    ref = info.images[case.key]
    username, password = "", ""
    if case.creds == "good":
        username, password = info.username, info.password
    elif case.creds == "bad":
        username, password = info.username, "not-the-password"
    with contextlib.suppress(grpc.RpcError):
        cri.remove(where.endpoint, ref)
    with where.full_disk() if case.fill_disk else contextlib.nullcontext():
        started = time.monotonic()
        try:
            image_id = cri.pull(where.endpoint, ref, username, password, timeout=timeout)
            code, message = "OK", image_id
        except grpc.RpcError as e:
            code, message = cri.error_text(e)
        seconds = time.monotonic() - started
    if code == "OK":
        with contextlib.suppress(grpc.RpcError):
            cri.remove(where.endpoint, ref)
    return Result(case, ref, code, message, seconds, where.runtime, where.dns)


def select(keys: list[str] | None) -> list[Case]:
    """The cases named (by case name or image key) in ``keys``; all when empty."""
    return [c for c in CASES if not keys or c.name in keys or c.key in keys]


def run(
    info: LabInfo,
    keys: list[str] | None = None,
    markdown: bool = False,
    runtime: str | None = None,
) -> int:
    """Run the cases (``keys``: only those) on the lab's containerd, or on a lab node running
    ``runtime``; print each outcome (or a markdown table); 1 if any is not as designed."""
    target = main_target(info) if runtime is None else node_target(info, runtime)
    results = []
    for case in select(keys):
        r = run_case(info, case, target=target)
        results.append(r)
        if not markdown:
            mark = "PASS" if r.passed else "FAIL"
            print(f"{mark} {case.name:<24} {r.code:<10} {r.seconds:5.1f}s  {r.ref}")
            if r.code != "OK":
                print(f"     {r.message}")
            if not r.passed:
                expect, code = r.expected
                print(f"     expected: {code} {expect!r}")
    where = "the lab's containerd" if target.name == MAIN else target.name
    version = runtimes.describe(target.runtime)
    if markdown:
        print(f"{version}, through {where} (CRI `{target.endpoint}`)\n")
        print(_table(results))
    failed = [r.case.name for r in results if not r.passed]
    summary = (
        f"{len(results) - len(failed)}/{len(results)} cases as designed on {version} ({where})"
    )
    print(summary + (f"; unexpected: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _table(results: list[Result]) -> str:
    lines = ["| case | image | gRPC code | time | observed message |", "|---|---|---|---|---|"]
    for r in results:
        if r.code == "OK":
            msg = f"image id `{r.message}`"
        else:
            # one table row: a line break in the text is shown as ``\n``
            msg = "`" + r.message.replace("|", "\\|").replace("\n", "\\n") + "`"
        lines.append(f"| {r.case.name} | `{r.ref}` | {r.code} | {r.seconds:.1f}s | {msg} |")
    return "\n".join(lines)
