"""The lab's big seed image is built once per lab directory and reused from its seed cache."""

from __future__ import annotations

import json
from pathlib import Path

from lab import images


def test_big_layout_is_built_once_then_reused(tmp_path: Path) -> None:
    seed, cache = tmp_path / "seed", tmp_path / "seed-cache"
    seed.mkdir()
    cache.mkdir()
    (cache / "big-v0-old").mkdir()  # an older recipe's copy
    (cache / f".{images.BIG_RECIPE}.999.tmp").mkdir()  # a half-written copy does not count

    digest = images.seed_big(seed, cache)

    built = cache / images.BIG_RECIPE
    assert sorted(p.name for p in cache.iterdir()) == [images.BIG_RECIPE]
    assert (seed / "big").resolve() == built
    index = json.loads((built / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    blob = built / "blobs" / "sha256" / digest.removeprefix("sha256:")
    manifest = json.loads(blob.read_bytes())
    assert len(manifest["layers"]) == images.BIG_LAYERS
    assert images.sha256(images.build_big().top.data) == digest  # reproducible

    stamp = (built / "index.json").stat().st_mtime_ns
    assert images.seed_big(seed, cache) == digest
    assert (built / "index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert (seed / "big").resolve() == built
