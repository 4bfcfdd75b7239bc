"""The floor for a pull test: one CRI PullImage, then RemoveImage, and nothing else.

What ``crictl pull IMAGE && crictl rmi IMAGE`` does, in the least Python can do it: synchronous
grpc and the project's pre-generated ``runtime.v1`` stubs, loaded without running any of
pullcheck's own package code. ``bench/bench_pullcost.py`` runs it as a whole process.

Usage: ``python bench/cri_pull_bare.py unix:///path/to/cri.sock IMAGE``
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import grpc

_AGENT = Path(__file__).resolve().parent.parent / "agent"


def _stub_packages() -> None:
    """Make ``agent`` and ``agent.cri`` bare namespace packages, so that importing the generated
    stubs (which import each other as ``agent.cri._pb…``) runs no pullcheck code."""
    for name, path in (("agent", _AGENT), ("agent.cri", _AGENT / "cri")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package


def main(endpoint: str, image: str) -> None:
    _stub_packages()
    from agent.cri._pb.runtime.v1 import api_pb2, api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        images = api_pb2_grpc.ImageServiceStub(channel)
        spec = api_pb2.ImageSpec(image=image)
        ref = images.PullImage(api_pb2.PullImageRequest(image=spec)).image_ref
        images.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.rsplit("Usage: ", 1)[1].strip())
    main(sys.argv[1], sys.argv[2])
