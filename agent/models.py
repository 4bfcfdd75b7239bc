"""Result models shared by probes, the pull test and the CLI.

Everything here is serialised as the public JSON interface (``--json``), so fields are only ever
added, never renamed. No model may hold a credential: callers pass only redacted text.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from agent.causes import Cause as Cause  # re-exported: the vocabulary lives in agent.causes


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Phase(_Model):
    """One timed step of a probe or of the pull test."""

    name: str
    ok: bool
    duration_ms: float
    detail: str = ""


# --- probe evidence, one model per probe kind (discriminated by ``kind``) -------------------


class DnsAnswer(_Model):
    rdtype: Literal["A", "AAAA"]
    name: str = ""  # the absolute name queried (after search-list expansion)
    addresses: list[str] = []
    rcode: str = ""  # NOERROR, NXDOMAIN, SERVFAIL, TIMEOUT, ...
    server: str = ""  # the nameserver that answered (or was last tried)
    duration_ms: float = 0.0


class DnsEvidence(_Model):
    kind: Literal["dns"] = "dns"
    host: str
    resolv_conf: str
    nameservers: list[str] = []
    source: Literal["literal", "hosts-file", "dns"] = "dns"
    answers: list[DnsAnswer] = []
    addresses: list[str] = []


class TcpEvidence(_Model):
    kind: Literal["tcp"] = "tcp"
    address: str
    port: int
    family: Literal["ipv4", "ipv6"]


class TlsEvidence(_Model):
    kind: Literal["tls"] = "tls"
    address: str
    port: int
    server_name: str
    verified: bool = False
    skip_verify: bool = False
    ca_files: list[str] = []
    version: str = ""
    cipher: str = ""
    subject: str = ""
    issuer: str = ""
    sans: list[str] = []
    not_before: str = ""
    not_after: str = ""
    verify_error: str = ""


class HttpEvidence(_Model):
    kind: Literal["http"] = "http"
    method: str
    url: str
    status: int | None = None
    api_version: str = ""  # Docker-Distribution-API-Version
    www_authenticate: str = ""
    auth_scheme: str = ""  # Bearer / Basic / "" (none)
    realm: str = ""
    service: str = ""
    error_codes: list[str] = []  # registry error codes from a JSON body


class TokenEvidence(_Model):
    kind: Literal["token"] = "token"
    realm: str
    service: str = ""
    scope: str = ""
    status: int | None = None
    authenticated: bool = False  # credentials were sent (never the credentials themselves)
    credential_source: str = ""  # Credential.source of the credentials that got the token
    expires_in: int | None = None
    error_codes: list[str] = []


class ManifestEvidence(_Model):
    kind: Literal["manifest"] = "manifest"
    url: str
    method: str = "HEAD"  # GET when the registry answered HEAD with 405 (containerd retries so)
    status: int | None = None
    digest: str = ""
    media_type: str = ""
    content_length: int | None = None
    ratelimit_limit: str = ""
    ratelimit_remaining: str = ""
    ratelimit_source: str = ""
    error_codes: list[str] = []
    repository_exists: bool | None = None  # from tags/list when the manifest was missing
    # config + layer sizes of the node platform's manifest (only measured for the size guard)
    image_size: int | None = None
    platform: str = ""  # the platform image_size was measured for


Evidence = Annotated[
    DnsEvidence | TcpEvidence | TlsEvidence | HttpEvidence | TokenEvidence | ManifestEvidence,
    Field(discriminator="kind"),
]


#: the probes of an endpoint's chain, in chain order
ProbeName = Literal["dns", "tcp", "tls", "http", "token", "manifest"]
_E = TypeVar(
    "_E", DnsEvidence, TcpEvidence, TlsEvidence, HttpEvidence, TokenEvidence, ManifestEvidence
)


class ProbeResult(_Model):
    """What every probe returns: success, timed phases, evidence, and a cause on failure."""

    probe: ProbeName
    target: str  # host, address:port, or URL — never carries credentials
    success: bool
    duration_ms: float
    phases: list[Phase] = []
    cause: Cause | None = None
    error: str = ""  # one line, redacted
    evidence: Evidence | None = None
    # probes run on this one's behalf just before it (the token realm's dns → tcp → tls): part of
    # the returned value, listed ahead of it by the chain; not part of the JSON
    _preceding: list[ProbeResult] = PrivateAttr(default_factory=list)

    @property
    def preceding(self) -> list[ProbeResult]:
        return list(self._preceding)

    def after(self, preceding: list[ProbeResult]) -> ProbeResult:
        """This result with ``preceding`` as the probes run on its behalf before it."""
        self._preceding = list(preceding)
        return self


class Endpoint(_Model):
    """One registry host containerd would contact for an image, in the order it tries them."""

    url: str  # scheme://host[:port][/path]
    scheme: Literal["http", "https"]
    host: str  # hostname or IP literal, no brackets
    port: int
    path: str = "/v2"
    role: Literal["mirror", "upstream"]
    capabilities: list[str] = ["pull", "resolve"]
    ca_files: list[str] = []
    client_certs: list[tuple[str, str]] = []  # (cert, key) paths
    skip_verify: bool = False
    # HTTPS is tried first and plain HTTP when the server answers plain HTTP (containerd's
    # default for loopback registries since 1.6.24/1.7.7; see agent.hosts). In a report, an
    # http:// endpoint with this set is one the probes reached through that fallback.
    http_fallback: bool = False
    override_path: bool = False
    namespace: str = ""  # original registry host when a mirror serves it (sent as ?ns=)
    config_file: str = ""  # the hosts.toml that defined it, "" when defaulted


class EndpointReport(_Model):
    """The probe chain for one endpoint: dns -> tcp -> tls -> http (/v2/) -> token -> manifest."""

    endpoint: Endpoint
    success: bool
    cause: Cause | None = None
    summary: str = (
        ""  # one line naming what failed where, e.g. "TCP connect to 127.0.0.1:15098 refused"
    )
    duration_ms: float = 0.0
    probes: list[ProbeResult] = []

    def evidence(self, kind: type[_E], *, first: bool = False) -> _E | None:
        """The evidence of the last (or ``first``) probe that left one of ``kind``: the one walk
        endpoint → probes → evidence, for every reader. The first is the endpoint's own where
        the token realm's probes follow it (their tcp and tls come later in ``probes``)."""
        for probe in self.probes if first else reversed(self.probes):
            if isinstance(probe.evidence, kind):
                return probe.evidence
        return None

    @property
    def manifest(self) -> ManifestEvidence | None:
        """The evidence of this endpoint's manifest probe, when it ran."""
        return self.evidence(ManifestEvidence)

    @property
    def address(self) -> str:
        """The address the chain connected to ("" before the TCP probe succeeded)."""
        tcp = self.evidence(TcpEvidence, first=True)
        return tcp.address if tcp is not None else ""


def manifests(reports: list[EndpointReport], *, working: bool = False) -> list[ManifestEvidence]:
    """The manifest evidence of ``reports`` in the runtime's order (only endpoints that worked,
    with ``working``): the one walk endpoints → probes → manifest, for every reader."""
    return [r.manifest for r in reports if r.manifest is not None and (r.success or not working)]


class Finding(_Model):
    """A failure seen on the path that is not the verdict's cause.

    The cause of a failed test is the one that still blocks the pull once everything before it
    is fixed; every other failure found on the way (a dead mirror in front of an upstream that
    answers, the runtime's own text when the probes went further) is a finding. A successful
    pull can have findings too (a mirror that failed while the upstream worked).
    """

    cause: Cause
    summary: str  # one line naming what failed where
    endpoint: str = ""  # the endpoint URL it concerns; "" when it is the runtime's own error
    source: Literal["probe", "runtime"] = "probe"


class RuntimeInfo(_Model):
    endpoint: str
    api_version: str  # "v1" or "v1alpha2", as negotiated
    runtime_name: str = ""
    runtime_version: str = ""
    runtime_api_version: str = ""


class ImageResult(_Model):
    present_before: bool
    image_id: str = ""
    repo_digest: str = ""
    size_bytes: int | None = None
    removed: bool = False  # removed after the test because it was not present before


class CredentialAttempt(_Model):
    """One credential tried for a pull, named by where it came from — never by its secret."""

    source: str  # "anonymous", "--creds", "--auth", "docker-config:/path[quay.io]"
    ok: bool
    cause: Cause | None = None
    error: str = ""


class PullTestResult(_Model):
    """The JSON object ``pullcheck pull --json`` prints (schema in the README)."""

    schema_version: int = 1
    pullcheck_version: str
    node: str
    image: str  # as given
    reference: str = ""  # normalised (containerd's form), "" when invalid
    mode: Literal["resolve", "pull"]
    success: bool
    cause: Cause | None = None
    summary: str = ""
    remedy: str = ""
    runtime_error: str = ""  # the runtime's own text, redacted, when the pull failed
    # the words of runtime_error that decided the cause ("" when the probes decided)
    deciding_fragment: str = ""
    # a guard stopped the pull before any download (success false, cause null)
    refused: Literal["", "image_too_large", "insufficient_space"] = ""
    warnings: list[str] = []  # notes that are not failures (an ignored hosts.toml, ...)
    findings: list[Finding] = []  # other failures on the path (see Finding)
    started_at: str  # RFC 3339, UTC
    duration_ms: float
    phases: list[Phase] = []
    runtime: RuntimeInfo | None = None
    image_info: ImageResult | None = None
    credentials: list[CredentialAttempt] = []
    endpoints: list[EndpointReport] = []
    # the endpoint a successful test went through: the only one the runtime contacts, or the
    # first that answered the probes ("" when neither is known)
    via: str = ""

    @property
    def digest(self) -> str:
        """What the node resolved the image to: the digest it pulled, else the one a working
        endpoint's manifest HEAD answered ("" when neither is known)."""
        if self.image_info is not None and "@" in self.image_info.repo_digest:
            return self.image_info.repo_digest.rsplit("@", 1)[1]
        found = [m.digest for m in manifests(self.endpoints, working=True) if m.digest]
        return found[0] if found else ""


class ProbeReport(_Model):
    """The JSON object ``pullcheck probe --json`` prints: the registry path without the runtime."""

    schema_version: int = 1
    pullcheck_version: str
    node: str
    target: str  # as given
    registry: str = ""
    reference: str = ""  # normalised image reference, "" when a registry was given
    success: bool
    cause: Cause | None = None
    summary: str = ""
    remedy: str = ""
    warnings: list[str] = []
    findings: list[Finding] = []  # other failures on the path (see Finding)
    started_at: str
    duration_ms: float
    endpoints: list[EndpointReport] = []
