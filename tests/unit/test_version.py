"""One version everywhere: the package, `pullcheck --version`, the image and the manifests.

scripts/image.sh tags the image with the package version; tests/image checks the built image
answers `--version` with it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from agent import __version__
from agent.cli import cli

REPO = Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE_NAME = "ghcr.io/pullcheck/pullcheck"


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _container_images(doc: dict[str, Any]) -> list[str]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [c["image"] for c in spec.get("containers", []) + spec.get("initContainers", [])]


def test_the_package_version_is_what_pullcheck_version_prints() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION
    assert __version__ == VERSION
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"pullcheck, version {VERSION}"


def test_the_image_label_is_the_package_version() -> None:
    labels = re.findall(
        r'org\.opencontainers\.image\.version="([^"]*)"', (REPO / "Dockerfile").read_text()
    )
    assert labels == [VERSION]


def test_every_manifest_names_the_image_at_the_package_version() -> None:
    images = [
        image
        for path in sorted((REPO / "manifests").rglob("*.yaml"))
        for doc in _yaml_documents(path)
        for image in _container_images(doc)
    ]
    assert len(images) >= 2  # the agent DaemonSet and the aggregator Deployment at least
    assert all(image == f"{IMAGE_NAME}:{VERSION}" for image in images), images
    tags = [
        entry.get("newTag")
        for path in sorted((REPO / "manifests").rglob("kustomization.yaml"))
        for doc in _yaml_documents(path)
        for entry in doc.get("images", [])
        if entry["name"] == IMAGE_NAME
    ]
    assert tags and all(tag == VERSION for tag in tags), tags


def test_the_readme_install_path_uses_the_package_version() -> None:
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install on a cluster") :]
    tags = set(re.findall(r"pullcheck:(\d+\.\d+\.\d+)", install))
    assert tags == {VERSION}, tags
