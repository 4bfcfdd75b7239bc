"""A node's settings: the paths remedies show are the node's own, not the agent pod's mounts."""

from __future__ import annotations

import pytest

from agent.pulltest import NodeSettings


@pytest.mark.parametrize(
    ("config_path", "host_root", "shown"),
    [
        ("/host/etc/containerd/certs.d", "/host", "/etc/containerd/certs.d"),
        ("/host/etc/containerd/certs.d", "/host/", "/etc/containerd/certs.d"),
        (
            "/host/etc/containerd/certs.d:/host/etc/docker/certs.d",
            "/host",
            "/etc/containerd/certs.d",
        ),
        ("/etc/containerd/certs.d", "", "/etc/containerd/certs.d"),
        ("/etc/containerd/certs.d", "/host", "/etc/containerd/certs.d"),  # not under the root
        ("/hostile/certs.d", "/host", "/hostile/certs.d"),  # a prefix of a name is not a root
    ],
)
def test_hosts_dir_is_the_nodes_path(config_path: str, host_root: str, shown: str) -> None:
    settings = NodeSettings(registry_config_path=config_path, host_root=host_root)
    assert settings.hosts_dir == shown
