"""The remedies: one action an operator can take per cause (and per mechanism within a cause).

Standard library only: the pull test's diagnosis fills in the host and port from its evidence,
the offline ``explain`` command from the image name alone.
"""

from __future__ import annotations

from typing import Final

from agent.causes import Cause
from agent.hostport import bracket, split_go

__all__ = ["remedy_text", "where"]

_VARIANT_REMEDIES: Final[dict[str, str]] = {
    "short_name": (
        "Use the fully qualified image name in the pod spec (docker.io/library/nginx:1.27, not "
        "nginx:1.27), or configure unqualified-search-registries or a short-name alias in the "
        "node's /etc/containers/registries.conf (short-name-mode)."
    ),
    "kubelet_qps": (
        "kubelet on this node throttles image pulls itself (registryPullQPS, default 5, and "
        "registryBurst, default 10, in the KubeletConfiguration): raise them (0 = no limit), or "
        "start fewer pods at once on the node; the registry is not involved."
    ),
    "signature_policy": (
        "The node's signature policy (/etc/containers/policy.json and registries.d for CRI-O "
        "and podman, or the cluster's image verification policy) rejected the image: sign the "
        "image as the policy requires, or adjust the policy for this registry or repository "
        "(and fix the file if it is invalid)."
    ),
    "hub_ambiguous": (
        "Registry {hostport} denies this pull: check the image name for typos (the registry "
        "answers the same for a repository that does not exist); if the repository is private, "
        "create an imagePullSecret (type kubernetes.io/dockerconfigjson) for it and reference it "
        "from the pod or its service account."
    ),
    "runtime_lost": (
        "The container runtime answered and then went away during the pull: find out why it "
        "stopped (`journalctl -u containerd`, its restart count, OOM kills in `dmesg`, a "
        "package upgrade or config reload restarting it), make sure it is running again, and "
        "run the test again; kubelet retries the pull once the runtime is back."
    ),
    "hub_library": (
        "Docker Hub has no official image of that name: fix the image name (add the "
        "organisation, e.g. myorg/app), or for a locally built image push it to a registry the "
        "node can reach, or load it onto the node (`ctr -n k8s.io images import`)."
    ),
}


def where(image: str) -> tuple[str, str]:
    """(host, host:port) of the image's registry for remedies without evidence."""
    if not image:
        return "the registry", "the registry port"
    first = image.split("/", 1)[0]
    if "/" not in image or ("." not in first and ":" not in first and first != "localhost"):
        return "docker.io", "docker.io"  # a Docker Hub short name
    registry = first
    split = split_go(registry)
    return (bracket(split[0]) if split else registry), registry


def remedy_text(
    cause: Cause,
    *,
    host: str,
    hostport: str,
    registry: str,
    platform: str = "",
    hosts_dir: str = "/etc/containerd/certs.d",
    variant: str = "",
    server_error: str = "",
    plain_http: bool = False,
) -> str:
    """The remedy for ``cause`` at ``host``/``hostport`` (``server_error``: the 5xx seen;
    ``plain_http``: the runtime speaks plain HTTP to the endpoint)."""
    if variant in _VARIANT_REMEDIES:
        return _VARIANT_REMEDIES[variant].format(hostport=hostport)
    if server_error:
        return (
            f"Registry {hostport} is failing on its side (HTTP {server_error}): check the "
            "registry's health and logs, its storage backend (disk space, object-store "
            "credentials and reachability) and any proxy or load balancer in front of it (a "
            "502, 503 or 504 often comes from the proxy, not the registry); if the outage "
            "passes, retry later."
        )
    if cause is Cause.HTTP_HTTPS_MISMATCH and plain_http:
        return (
            f"The endpoint {hostport} speaks TLS but the runtime uses plain HTTP: declare it in "
            f'{hosts_dir}/{hostport}/hosts.toml with `server = "https://{hostport}"` (and its '
            "`ca`, or `skip_verify = true`), or serve plain HTTP there."
        )
    node_platform = platform or "the node's platform"
    remedies: dict[Cause, str] = {
        Cause.INVALID_REFERENCE: (
            "Fix the image reference in the pod spec; it must follow the "
            "name[:tag][@digest] grammar with a lowercase repository."
        ),
        Cause.MANIFEST_NOT_FOUND: (
            f"The tag or digest does not exist in the repository on {hostport}: pin an existing "
            "tag (list them with `skopeo list-tags`) or push the missing one."
        ),
        Cause.REPOSITORY_NOT_FOUND: (
            f"The repository does not exist on {hostport}: check the image name and registry "
            "host for typos, or push the image there."
        ),
        Cause.UNAUTHORIZED: (
            f"Registry {hostport} wants credentials that were not given or were refused: fix or "
            "create the imagePullSecret (type kubernetes.io/dockerconfigjson) with a key matching "
            f"{registry}, and reference it from the pod or its service account."
        ),
        Cause.FORBIDDEN: (
            f"Registry {hostport} accepted the identity but denies pull access: grant that "
            "account pull permission on the repository, or use a pull secret for one that has it."
        ),
        Cause.RATE_LIMITED: (
            f"Registry {hostport} is rate-limiting pulls from this node's address: authenticate "
            "pulls with an imagePullSecret (higher limits), or pull through a cache or mirror "
            "(containerd hosts.toml) instead of the upstream registry."
        ),
        Cause.DNS_FAILURE: (
            f"The node cannot resolve {host}: fix the node's DNS (the resolver in its "
            "/etc/resolv.conf and its upstreams) or correct the registry host name."
        ),
        Cause.CONNECTION_REFUSED: (
            f"Nothing accepts connections on {hostport} from this node: allow egress to "
            f"{hostport} (firewall, security group, NetworkPolicy, proxy) and check that the "
            "registry is up on that port."
        ),
        Cause.TIMEOUT: (
            f"The endpoint {hostport} did not answer in time: allow egress to {hostport} "
            "(packets are being dropped), check any proxy on the path, or the registry's health."
        ),
        Cause.TLS_ERROR: (
            f"The TLS certificate of {host} is not trusted by the node: add its CA with "
            f'`ca = "/path/ca.crt"` in {hosts_dir}/{hostport}/hosts.toml (or the '
            "node trust store), or fix the certificate's names and validity."
        ),
        Cause.HTTP_HTTPS_MISMATCH: (
            f"The endpoint {hostport} speaks plain HTTP but the runtime uses HTTPS: declare it in "
            f'{hosts_dir}/{hostport}/hosts.toml with `server = "http://{hostport}"`, '
            "or serve the registry over TLS."
        ),
        Cause.PLATFORM_MISMATCH: (
            f"The image has no variant for {node_platform}: build and push it for that platform "
            "(a multi-arch index), or keep the pod off these nodes with a kubernetes.io/arch "
            "nodeSelector."
        ),
        Cause.LAYER_CORRUPT: (
            "A layer of the image is not a valid archive or does not match its digest: rebuild "
            "and re-push the image with valid layers."
        ),
        Cause.BLOB_NOT_FOUND: (
            f"Registry {hostport} serves the manifest but not one of its blobs (storage loss or "
            "an over-eager garbage collection): re-push the image."
        ),
        Cause.DISK_FULL: (
            "The node's image filesystem is full: free space (remove unused images with "
            "`crictl rmi --prune`, tune kubelet image GC thresholds) or enlarge the disk."
        ),
        Cause.RUNTIME_UNAVAILABLE: (
            "No container runtime answered on the CRI socket: start containerd or CRI-O, pass "
            "--endpoint, or mount the runtime socket into the agent."
        ),
        Cause.REGISTRY_ERROR: (
            f"Registry {hostport} (or its token service) is failing on its side with an HTTP "
            "5xx: check the registry's health and logs, its storage backend (disk space, "
            "object-store credentials and reachability) and any proxy or load balancer in front "
            "of it (a 502, 503 or 504 often comes from the proxy, not the registry); if the "
            "outage passes, retry later, or pull through a mirror meanwhile."
        ),
        Cause.CONNECTION_RESET: (
            f"The transfer from {hostport} was cut after it had started (reset by peer, "
            "unexpected EOF): check proxies, load balancers and firewalls on the path for idle "
            "or size limits and MTU problems, and the registry's own logs; retry, and if it "
            "recurs pull through a nearer mirror."
        ),
        Cause.IMAGE_NEVER_PULL: (
            "The pod's imagePullPolicy is Never and the image is not on the node: load the image "
            "onto the node (`ctr -n k8s.io images import`, or pre-pull it), or set "
            "imagePullPolicy to IfNotPresent."
        ),
        Cause.CANCELLED: (
            "The pull was cancelled before it finished (by the client, or by containerd's "
            "image_pull_progress_timeout on a stalled download): retry, and if it recurs check "
            "the network path to the registry for stalls."
        ),
        Cause.UNKNOWN: (
            "The failure matched no known cause: read the runtime error in the evidence and the "
            "probe results for each endpoint."
        ),
    }
    return remedies[cause]
