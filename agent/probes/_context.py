"""What every probe receives: node settings, what to check, credentials, and the chain's state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from agent import __version__
from agent.credentials import Credential
from agent.models import ProbeResult

__all__ = ["Challenge", "EndpointState", "ProbeContext"]


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge (RFC 9110 §11.6.1)."""

    scheme: str  # as sent, e.g. "Bearer", "Basic"
    params: dict[str, str] = field(default_factory=dict)  # names lower-cased
    token68: str = ""

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"

    @property
    def is_basic(self) -> bool:
        return self.scheme.lower() == "basic"

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")

    @property
    def error(self) -> str:
        return self.params.get("error", "")


@dataclass
class EndpointState:
    """What the chain learned so far about one endpoint; filled in by the probes in order.

    Holds secrets (``authorization``), so it is never serialised, logged or put into a result.
    """

    addresses: list[str] | None = None  # resolved by the dns probe; None = not resolved yet
    dns_error: ProbeResult | None = None  # the failed dns result, when resolution failed
    connected: str | None = None  # the address the tcp probe connected to
    tls_ok: bool | None = None
    api_status: int | None = None  # GET /v2/ status
    challenge: Challenge | None = None  # the /v2/ challenge
    # hostname -> address to connect to, for every host the chain resolved (registry, token realm)
    host_addresses: dict[str, str] = field(default_factory=dict)
    authorization: str | None = field(
        default=None, repr=False
    )  # header value for manifest requests
    token_scope: str = ""  # scope the bearer token in `authorization` was issued for
    credential_index: int | None = (
        None  # which of ProbeContext.credentials worked (None = anonymous)
    )


@dataclass
class ProbeContext:
    """Settings shared by the probes of one run, plus a per-endpoint mutable :attr:`state`.

    ``repository`` is the path without the registry (``library/nginx``) and ``tag_or_digest`` the
    object to look up (``1.0`` or ``sha256:…``); with either missing the manifest probe is skipped.
    Credentials are tried in order; with none the registry is asked anonymously (kubelet's rule).
    """

    resolv_conf: str = "/etc/resolv.conf"
    hosts_file: str = "/etc/hosts"  # read before DNS (Go resolver order files -> dns)
    timeout: float = 5.0  # seconds, per step (each query, connect, handshake, request)
    use_system_trust: bool = True  # verify against the system store (ssl.create_default_context)
    cafile: str | None = None  # extra CA bundle trusted for every endpoint
    repository: str | None = None
    tag_or_digest: str | None = None
    credentials: list[Credential] = field(default_factory=list, repr=False)
    dns_port: int = 53  # port of the resolv.conf nameservers; only tests change it
    user_agent: str = f"pullcheck/{__version__}"
    # When set (a platform like "linux/amd64"), a successful manifest probe also GETs the
    # manifest (and the platform's manifest from an index) to add up the image size. A manifest
    # GET counts as a Docker Hub pull, so this is only done for a configured size limit.
    measure_size_for: str | None = None
    state: EndpointState = field(default_factory=EndpointState)

    def for_endpoint(self) -> ProbeContext:
        """A copy with fresh state, for probing another endpoint (concurrently or not)."""
        return dataclasses.replace(self, state=EndpointState())

    def secrets(self) -> list[str]:
        """Every secret this context knows, for redaction."""
        found: list[str] = []
        for cred in self.credentials:
            found.extend(s for s in (cred.password, cred.identity_token) if s)
        if self.state.authorization:
            found.append(self.state.authorization.partition(" ")[2])
        return found
