"""Docker Hub's names, in one place: how references, hosts.toml, keyrings and metrics spell it."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALIAS_HOSTS",
    "API_HOST",
    "DOMAIN",
    "KEYRING_KEY",
    "LEGACY_DOMAIN",
    "OFFICIAL_PREFIX",
    "canonical",
    "is_hub",
    "is_hub_api",
]

DOMAIN: Final = "docker.io"  # the domain of familiar names ("nginx" is docker.io/library/nginx)
LEGACY_DOMAIN: Final = "index.docker.io"  # the old name, read as docker.io
API_HOST: Final = "registry-1.docker.io"  # where the registry API of docker.io is served
OFFICIAL_PREFIX: Final = "library/"  # the path prefix of official images
# the key kubelet falls back to for Docker Hub images when no other key matches
KEYRING_KEY: Final = LEGACY_DOMAIN
# hosts people write for Docker Hub that kubelet never matches against docker.io images
ALIAS_HOSTS: Final = frozenset(
    {API_HOST, "registry.hub.docker.com", "hub.docker.com", "docker.com"}
)


def is_hub(domain: str) -> bool:
    """Is ``domain`` (a reference's registry, as containerd names it) Docker Hub?"""
    return domain == DOMAIN


def canonical(host: str) -> str:
    """``host`` as containerd names a registry: ``index.docker.io``/``docker.io`` (any case) →
    ``docker.io``; anything else unchanged."""
    return DOMAIN if host.lower() in (DOMAIN, LEGACY_DOMAIN) else host


def is_hub_api(domain: str, netloc: str) -> bool:
    """Is ``netloc`` Docker Hub's API host serving ``domain`` (so not a mirror of it)?"""
    return is_hub(domain) and netloc == API_HOST
