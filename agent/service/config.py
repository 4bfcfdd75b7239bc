"""Configuration of the agent and the aggregator: one YAML file plus environment overrides.

The file (``--config``, default :data:`agent.defaults.CONFIG_FILE`; absent there → defaults) is
read by pydantic-settings' YAML source and validated strictly: an unknown key or a bad value is
an error naming the key (:func:`agent.validation.describe_errors`), invalid YAML names the line.
Environment variables override it, nested keys joined by ``__``:
``PULLCHECK_AGENT__LISTEN=127.0.0.1:9000``, ``PULLCHECK_READ_ONLY=true``,
``PULLCHECK_ALLOW='["docker.io/*"]'`` (lists as JSON).

Sizes are pydantic's :class:`~pydantic.ByteSize` (``500MB``, ``2GiB``, ``1073741824``) plus
Kubernetes' quantity suffixes (``2Gi``), at most :data:`MAX_SIZE` bytes.
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from fnmatch import fnmatchcase
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from agent import defaults
from agent.errors import InvalidInput
from agent.validation import describe_errors, describe_yaml_error, join_problems

__all__ = [
    "LEASE_JITTER_FACTOR",
    "MAX_FILE_BYTES",
    "MAX_SIZE",
    "AgentSection",
    "AgentTlsSection",
    "AggregatorSection",
    "ConfigError",
    "DiscoverySection",
    "LeaderElectionSection",
    "Limits",
    "PodDiagnosisSection",
    "PrepullSection",
    "Settings",
    "Size",
    "load_settings",
]

#: the largest size a key takes: the CRI reports sizes as 64-bit integers
MAX_SIZE: Final = 2**63 - 1
#: the largest configuration file read (a ConfigMap holds at most 1 MiB)
MAX_FILE_BYTES: Final = 1024 * 1024

# a number (at most 30 digits on either side of the point: MAX_SIZE has 19) and a unit
_SIZE_TEXT: Final = re.compile(r"\s*(\d{1,30}(?:\.\d{1,30})?)\s*([A-Za-z]{0,8})\s*")

# the file load_settings() is reading, for Settings.settings_customise_sources
_reading: ContextVar[Path | None] = ContextVar("pullcheck_config_file", default=None)


class ConfigError(InvalidInput, ValueError):
    """The configuration is invalid; the message names the file, key and reason."""


def _size_input(value: Any) -> Any:
    """What :class:`~pydantic.ByteSize` lacks: the whole text must be a size (ByteSize ignores
    trailing text), ``Ki``/``Mi``/``Gi``/``Ti`` mean ``KiB``…, and nan, inf and negative
    numbers are refused with their own message."""
    if isinstance(value, str):
        match = _SIZE_TEXT.fullmatch(value)
        if match is None:
            raise ValueError(f"{value[:40]!r} is not a size like 500MiB, 2GB, 2Gi or 1073741824")
        number, unit = match.groups()
        return f"{number}{unit}B" if unit[-1:] in ("i", "I") else f"{number}{unit}"
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError("must be a finite, non-negative number of bytes")
    return value


#: a number of bytes: ``1073741824``, ``"1GiB"``, ``"500MB"``, ``"2Gi"``
Size = Annotated[ByteSize, BeforeValidator(_size_input), Field(le=MAX_SIZE)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Limits(_Section):
    """Guards that keep a node and its registries safe from the API's callers."""

    max_image_size: Size = Field(
        default=ByteSize(0), description="bytes; 0 = no limit (sizes: 2GiB, 500MB)"
    )
    min_free_space: Size = Field(
        default=ByteSize(0), description="bytes free on the image fs; 0 = no check"
    )
    pull_concurrency: int = Field(default=2, ge=1, le=64)
    pull_queue: int = Field(default=8, ge=0, le=10_000)
    result_ttl: float = Field(default=30.0, ge=0, description="seconds a result is reused")
    default_timeout: float = Field(default=defaults.PULL_TIMEOUT, gt=0, le=3600)
    max_timeout: float = Field(default=900.0, gt=0, le=3600)
    rate_limit_per_minute: int = Field(default=120, ge=0, description="per client; 0 = off")
    rate_limit_burst: int = Field(default=30, ge=1)
    max_body_bytes: Size = Field(default=ByteSize(64 * 1024), ge=1024, le=16 * 1024 * 1024)
    max_url_bytes: Size = Field(
        default=ByteSize(8 * 1024),
        ge=1024,
        le=1024**2,
        description="request target (path?query); → 414",
    )
    max_header_bytes: Size = Field(
        default=ByteSize(16 * 1024),
        ge=1024,
        le=1024**2,
        description="all header names and values; → 431",
    )


class AgentSection(_Section):
    listen: str = "0.0.0.0:8479"
    runtime_endpoint: str | None = None  # None → $CONTAINER_RUNTIME_ENDPOINT → auto-detect
    resolv_conf: str = str(defaults.RESOLV_CONF)
    hosts_file: str = str(defaults.HOSTS_FILE)
    registry_config_path: str = defaults.REGISTRY_CONFIG_PATH
    # where the node's root is mounted (the DaemonSet's /host): remedies name the node's paths
    host_root: str = Field(default="", max_length=4096)
    ca_file: str | None = None
    probe_timeout: float = Field(default=defaults.PROBE_TIMEOUT, gt=0, le=120)
    connectivity_ttl: float = Field(default=60.0, ge=0)
    recent_registries: int = Field(default=16, ge=0, le=256)
    # HTTPS: the agent's certificate (chain) and key, PEM; both or neither (components/agent-tls)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def tls(self) -> tuple[str, str] | None:
        """(certificate file, key file) when the agent serves HTTPS, else None."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file, self.tls_key_file

    @model_validator(mode="after")
    def _tls_pair(self) -> AgentSection:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        return self


class DiscoverySection(_Section):
    mode: Literal["dns", "endpointslices", "static"] = "dns"
    # dns: a headless Service name; its A/AAAA records are the agents
    service: str = "pullcheck-agent.pullcheck.svc.cluster.local"
    # endpointslices: the agent Service's namespace and name (label kubernetes.io/service-name)
    namespace: str = "pullcheck"
    service_name: str = "pullcheck-agent"
    # static: "host:port" or "node=host:port"
    agents: list[str] = []
    agent_port: int = Field(default=8479, ge=1, le=65535)
    agent_scheme: Literal["http", "https"] = "http"
    refresh: float = Field(default=10.0, gt=0)  # new nodes get on_new_node jobs within 30 s
    resolv_conf: str = str(defaults.RESOLV_CONF)
    # dns: the port of resolv_conf's nameservers (tests run a DNS server on a high port)
    dns_port: int = Field(default=53, ge=1, le=65535)
    # dns and endpointslices: which address families make targets. "any" takes both; with
    # endpointslices an agent in both an IPv4 and an IPv6 slice is kept once, by its IPv4 address
    ip_family: Literal["any", "ipv4", "ipv6"] = "any"
    # seconds one refresh (all its DNS queries, or its API request) may take
    timeout: float = Field(default=10.0, gt=0, le=120)
    # endpointslices: the EndpointSlice port to use (else the slice's first port, else agent_port)
    port_name: str = "http"
    # endpointslices: a kubeconfig file (out of cluster, development); None → in-cluster:
    # api_url (None → https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT), the service
    # account's token file (re-read when the API server answers 401) and CA bundle
    kubeconfig: str | None = None
    api_url: str | None = None
    api_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
    api_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

    @model_validator(mode="after")
    def _static_agents(self) -> DiscoverySection:
        """A bad static entry is a configuration error at load, named, not a crash at start."""
        if self.mode == "static":
            # the one parser; imported here because the discovery module imports this one
            from agent.cluster.discovery import parse_static

            parse_static(self)
        return self


class PrepullSection(_Section):
    """Warm-cache jobs the aggregator runs (see agent/prepull)."""

    jobs_file: str = str(defaults.JOBS_FILE)  # absent at this default path → no jobs
    poll_interval: float = Field(default=5.0, gt=0, le=300, description="job-file reload poll")
    tick: float = Field(default=1.0, gt=0, le=60, description="schedule and new-node check")


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: client-go's leader-election jitter: an acquire retry waits retry_period x [1, 1 + factor]
LEASE_JITTER_FACTOR = 1.2


class LeaderElectionSection(_Section):
    """Which aggregator replica runs the scheduled work (pre-pull jobs): agent/cluster/leader.py.

    ``auto``: ``lease`` in a Kubernetes pod ($KUBERNETES_SERVICE_HOST set), else ``always``.
    ``lease``: the replicas elect one leader through the ``coordination.k8s.io/v1`` Lease
    ``lease_namespace/lease_name``, as client-go's leader election does; the API is reached with
    the client settings of ``discovery`` (in-cluster service account, ``api_url``, or
    ``kubeconfig``). ``always``: this process leads without a Lease (one aggregator, outside
    Kubernetes): never run two replicas with it.
    """

    mode: Literal["auto", "lease", "always"] = "auto"
    lease_name: str = Field(default="pullcheck-aggregator", min_length=1, max_length=253)
    lease_namespace: str | None = None  # None → $POD_NAMESPACE, else discovery.namespace
    # seconds a follower waits, from the last change of the Lease it saw, before taking over
    lease_duration: int = Field(default=15, ge=1, le=3600)
    # seconds the leader keeps retrying a failed renewal before it stops leading
    renew_deadline: float = Field(default=10.0, gt=0, le=3600)
    # seconds between tries to acquire or renew
    retry_period: float = Field(default=2.0, gt=0, le=600)
    identity: str | None = Field(default=None, min_length=1, max_length=128)  # None → $POD_NAME
    # how the other replicas reach this one; None → http://$POD_IP:<listen port>
    advertise_url: str | None = Field(default=None, max_length=2048)

    @field_validator("lease_name")
    @classmethod
    def _lease_name(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a DNS subdomain (lowercase, digits, '-', '.')")
        return value

    @field_validator("lease_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a namespace name (a DNS label)")
        return value

    @field_validator("identity")
    @classmethod
    def _identity(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise ValueError("must be printable, without leading or trailing spaces")
        return value

    @field_validator("advertise_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s?#]+/?$", value):
            raise ValueError(f"{value!r} is not a base URL like http://10.0.0.7:8480")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionSection:
        # client-go's rules: a leader gives up before a follower may take over, and retries
        # at least once within the deadline
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration:g} s) must be greater than "
                f"renew_deadline ({self.renew_deadline:g} s)"
            )
        if self.renew_deadline <= LEASE_JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline:g} s) must be greater than "
                f"{LEASE_JITTER_FACTOR:g} x retry_period ({self.retry_period:g} s)"
            )
        return self


class AgentTlsSection(_Section):
    """How the aggregator checks the agents' HTTPS certificates (``discovery.agent_scheme:
    https``; components/agent-tls)."""

    # the CA bundle (PEM) the agents' certificates chain to; None → the system trust store
    ca_file: str | None = None
    # the DNS name the agents' certificate carries, checked instead of the address the
    # aggregator dials (agents are reached by pod IP); None → the address itself
    server_name: str | None = Field(default=None, min_length=1, max_length=253)

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a DNS name (lowercase, digits, '-', '.')")
        return value


class PodDiagnosisSection(_Section):
    """Automatic diagnosis of image-pull failures (agent/cluster/pods; off by default,
    components/pod-diagnosis): watch pods, test each failing image on its node with the pod's
    own pull secrets, publish the verdict as an Event on the pod, metrics and ``GET /v1/pods``."""

    enabled: bool = False
    # namespaces to watch; empty → every namespace (cluster-wide list/watch of pods)
    namespaces: list[str] = Field(default=[], max_length=256)
    # seconds a verdict for one image x node x pull-secret fingerprint is reused
    dedup_ttl: float = Field(default=600.0, ge=1, le=86400)
    # cluster-wide pull tests per minute, and how many run at once
    tests_per_minute: int = Field(default=30, ge=1, le=6000)
    max_concurrent_tests: int = Field(default=4, ge=1, le=256)
    # tests waiting for a slot; beyond this the newest failing container waits for the next
    # change of its pod (bounded memory)
    max_pending: int = Field(default=1000, ge=1, le=100_000)
    # failing containers tracked (GET /v1/pods); beyond this the oldest are dropped
    max_tracked: int = Field(default=5000, ge=1, le=100_000)
    # seconds a watch request lasts before it is renewed (the server's timeoutSeconds)
    watch_timeout: int = Field(default=300, ge=10, le=3600)
    # seconds one pull test may take (mode pull), bounded by limits.max_timeout
    test_timeout: float = Field(default=120.0, gt=0, le=3600)
    # registries named in metrics; past this many distinct ones the label is "other"
    max_registry_labels: int = Field(default=20, ge=1, le=200)

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a namespace name (a DNS label)")
        return sorted(set(value))


class AggregatorSection(_Section):
    listen: str = "0.0.0.0:8480"
    max_in_flight: int = Field(default=64, ge=1, le=4096)
    node_timeout: float = Field(default=330.0, gt=0, le=3600)
    discovery: DiscoverySection = DiscoverySection()
    prepull: PrepullSection = PrepullSection()
    leader_election: LeaderElectionSection = LeaderElectionSection()
    agent_tls: AgentTlsSection = AgentTlsSection()
    # send credentials (pull secrets, creds, docker configs) to agents reached over plain
    # HTTP; false → such a test is refused, naming the node (use HTTPS: components/agent-tls)
    allow_plain_http_credentials: bool = False
    pod_diagnosis: PodDiagnosisSection = PodDiagnosisSection()


class Settings(BaseSettings):
    """Everything either process reads. Shared keys first, then one section per process."""

    model_config = SettingsConfigDict(
        env_prefix="PULLCHECK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )

    token_file: str = str(defaults.TOKEN_FILE)
    auth: bool = True  # False only for local experiments; health endpoints never need it
    allow: list[str] = Field(
        default=["docker.io/*", "registry.k8s.io/*", "quay.io/*", "ghcr.io/*"],
        description="globs over normalised image names (domain/path) an API caller may test",
    )
    registries: list[str] = Field(
        default=["docker.io"], description="registries /v1/connectivity always probes"
    )
    read_only: bool = False  # resolve mode and probes only: never a pull
    limits: Limits = Limits()
    agent: AgentSection = AgentSection()
    aggregator: AggregatorSection = AggregatorSection()

    def allows(self, name: str) -> bool:
        """Whether the normalised image name (``domain/path``) matches an allow glob."""
        return any(fnmatchcase(name, pattern) for pattern in self.allow)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment overrides the file (a source, so its keys are validated like any)
        file = _reading.get()
        if file is None:
            return env_settings, init_settings
        return env_settings, init_settings, _ConfigFile(settings_cls, yaml_file=file)


class _ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with errors that name the file (and the line)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file_path}: {describe_yaml_error(exc)}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file_path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{file_path}: cannot read: {exc.strerror or exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file_path}: the top level must be a mapping of keys")
        return data


def load_settings(path: Path | None = None) -> Settings:
    """The settings from ``path`` and the environment (the environment wins).

    ``path`` None means :data:`agent.defaults.CONFIG_FILE`, and defaults when that is absent;
    a ``path`` given must exist. Raises :class:`ConfigError`.
    """
    source = path or defaults.CONFIG_FILE
    exists = source.is_file()
    if not exists and source.exists():
        raise ConfigError(f"{source}: not a regular file")
    if not exists and path is not None:
        raise ConfigError(f"{source}: no such file")
    if exists and source.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES // 1024} KiB")
    reading = _reading.set(source if exists else None)
    try:
        return Settings()
    except ValidationError as exc:
        problems = describe_errors(exc.errors(), model=Settings)
        raise ConfigError(f"{source}: {join_problems(problems)}") from None
    except SettingsError as exc:  # a PULLCHECK_* variable that is not valid JSON
        raise ConfigError(f"environment: {exc}") from None
    finally:
        _reading.reset(reading)
