"""Seed images: OCI image layouts built from scratch, deterministic content.

* ``good``     - 3 gzip layers (~1.5 MB, incompressible pseudo-random files), host platform.
* ``corrupt``  - one *uncompressed* layer (``application/vnd.oci.image.layer.v1.tar``) whose bytes
                 are not a tar archive, so unpacking fails with ``archive/tar: invalid tar header``.
* ``foreign``  - an image index that lists only a manifest for the *other* architecture.
* ``blobgone`` - a normal single-layer image with unique content; its layer blob's data file is
                 deleted from the registry storage after the push (see ``blob_data_file``).
* ``reset``    - one 1 MiB incompressible layer of its own (no other pull puts it into containerd's
                 store), pulled only through the reset proxy (``lab/faults.py``), which cuts it.
* ``big``      - 64 MiB in 8 gzip layers of incompressible pseudo-random data, host platform: a
                 pull that costs something (the pull-cost benchmark). Built once per lab directory
                 and kept in ``<dir>/seed-cache`` (see ``cached_layout``), which survives restarts.

Layouts are written under ``<dir>/seed/<name>`` with the tag ``1.0`` and pushed with skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

TAG = "1.0"
MTIME = 1_700_000_000  # fixed timestamp for tar entries
CREATED = "2023-11-14T22:13:20Z"

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
}


def host_arch() -> str:
    """The host architecture in GOARCH naming (amd64, arm64, ...)."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def foreign_arch() -> str:
    """An architecture the host cannot run: arm64 on amd64 hosts, amd64 otherwise."""
    return "arm64" if host_arch() != "arm64" else "amd64"


def _platform(arch: str) -> dict[str, str]:
    p = {"architecture": arch, "os": "linux"}
    if arch == "arm64":
        p["variant"] = "v8"
    return p


def pseudo_random(seed: str, size: int) -> bytes:
    """Deterministic, incompressible bytes."""
    return hashlib.shake_256(seed.encode()).digest(size)


def _fast_random(seed: str, size: int) -> bytes:
    """Deterministic, incompressible bytes, quickly (not for anything secret)."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Blob:
    media_type: str
    data: bytes
    platform: dict[str, str] | None = None

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if self.platform:
            d["platform"] = self.platform
        return d


@dataclass
class Layout:
    """An OCI image layout in memory: all blobs plus the top-level descriptor for tag ``1.0``."""

    name: str
    top: Blob
    blobs: list[Blob] = field(default_factory=list)
    # digests of interesting blobs, e.g. {"layer": "sha256:..."}
    notes: dict[str, str] = field(default_factory=dict)

    def write(self, root: Path) -> Path:
        path = root / self.name
        blob_dir = path / "blobs" / "sha256"
        blob_dir.mkdir(parents=True, exist_ok=True)
        for blob in [*self.blobs, self.top]:
            (blob_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
        top = self.top.descriptor()
        top["annotations"] = {"org.opencontainers.image.ref.name": TAG}
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}
        (path / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        return path

    @property
    def digest(self) -> str:
        return self.top.digest


def make_tar(files: dict[str, bytes]) -> bytes:
    """A deterministic tar archive; parent directories are added automatically."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = MTIME
                    info.uname = info.gname = "root"
                    tar.addfile(info)
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            info.mtime = MTIME
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image(
    name: str,
    arch: str,
    layers: list[tuple[str, bytes, bytes]],
    cmd: list[str],
) -> tuple[Blob, list[Blob]]:
    """Build config + manifest. ``layers`` = [(media_type, blob_bytes, uncompressed_tar_bytes)]."""
    layer_blobs = [Blob(mt, data) for mt, data, _ in layers]
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        **({"variant": "v8"} if arch == "arm64" else {}),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "Labels": {"org.opencontainers.image.title": f"pullcheck lab {name}"},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for _, _, tar in layers]},
        "history": [
            {"created": CREATED, "created_by": f"pullcheck lab seed layer {i}"}
            for i in range(len(layers))
        ],
    }
    config_blob = Blob(MT_CONFIG, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
        "annotations": {"org.opencontainers.image.title": f"pullcheck lab {name}"},
    }
    manifest_blob = Blob(MT_MANIFEST, json.dumps(manifest, indent=2).encode(), _platform(arch))
    return manifest_blob, [config_blob, *layer_blobs]


def _gzip_layer(files: dict[str, bytes], level: int = 6) -> tuple[str, bytes, bytes]:
    tar = make_tar(files)
    return MT_LAYER_GZIP, gzip.compress(tar, compresslevel=level, mtime=0), tar


def build_good(arch: str | None = None) -> Layout:
    arch = arch or host_arch()
    layers = [
        _gzip_layer(
            {
                "etc/os-release": b'NAME="pullcheck lab"\nID=pullcheck\nVERSION_ID=1.0\n',
                "etc/hostname": b"pullcheck\n",
                "bin/app": b"#!/bin/sh\necho pullcheck lab image\n",
                "usr/share/pullcheck/base.bin": pseudo_random("good-layer-0", 512 * 1024),
            }
        ),
        _gzip_layer(
            {
                "app/data.bin": pseudo_random("good-layer-1", 640 * 1024),
                "app/README": b"seed image for the pullcheck lab\n",
            }
        ),
        _gzip_layer(
            {
                "app/config.json": b'{"greeting": "hello from pullcheck"}\n',
                "app/assets/blob.bin": pseudo_random("good-layer-2", 384 * 1024),
            }
        ),
    ]
    top, blobs = _image("good", arch, layers, ["/bin/app"])
    return Layout("good", top, blobs)


def build_corrupt() -> Layout:
    garbage = pseudo_random("corrupt-layer", 8 * 1024)
    # make sure it is not accidentally a valid header block (a zero block would read as EOF)
    garbage = b"\xffPULLCHECK-NOT-A-TAR\xff" + garbage
    top, blobs = _image("corrupt", host_arch(), [(MT_LAYER_TAR, garbage, garbage)], ["/bin/app"])
    return Layout("corrupt", top, blobs, notes={"layer": sha256(garbage)})


def build_foreign() -> Layout:
    arch = foreign_arch()
    layer = _gzip_layer({"app/foreign.txt": f"built for linux/{arch}\n".encode()})
    manifest, blobs = _image("foreign", arch, [layer], ["/bin/app"])
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [manifest.descriptor()],
    }
    top = Blob(MT_INDEX, json.dumps(index, indent=2).encode())
    return Layout("foreign", top, [*blobs, manifest], notes={"arch": arch})


def build_blobgone() -> Layout:
    layer = _gzip_layer({"app/blobgone.bin": pseudo_random("blobgone-layer", 64 * 1024)})
    top, blobs = _image("blobgone", host_arch(), [layer], ["/bin/app"])
    return Layout("blobgone", top, blobs, notes={"layer": blobs[1].digest})


def build_reset() -> Layout:
    layer = _gzip_layer({"app/reset.bin": pseudo_random("reset-layer", 1024 * 1024)})
    top, blobs = _image("reset", host_arch(), [layer], ["/bin/app"])
    return Layout("reset", top, blobs, notes={"layer": blobs[1].digest})


BIG_LAYERS = 8
BIG_LAYER_BYTES = 8 * 1024 * 1024
# bump when build_big changes, so that a lab directory's cached copy is rebuilt
BIG_RECIPE = f"big-v1-{BIG_LAYERS}x{BIG_LAYER_BYTES}"


def build_big(arch: str | None = None) -> Layout:
    """64 MiB in 8 gzip layers, each one incompressible file.

    The bytes come from a seeded Mersenne Twister (reproducible, 40x faster than shake_256 here);
    gzip level 1 still Huffman-codes them, so the runtime decompresses as for a real layer, and
    builds in a third of level 6's time (the data does not compress at any level).
    """
    arch = arch or host_arch()
    layers = [
        _gzip_layer({f"big/layer-{i}.bin": _fast_random(f"big-layer-{i}", BIG_LAYER_BYTES)}, 1)
        for i in range(BIG_LAYERS)
    ]
    top, blobs = _image("big", arch, layers, ["/bin/sh"])
    return Layout("big", top, blobs)


def seed_big(seed_dir: Path, cache_dir: Path) -> str:
    """Make ``<seed_dir>/big`` the big layout kept in ``cache_dir`` (built there the first time,
    written under a temporary name so a half-written copy never counts; copies of older recipes
    are deleted) and return its manifest digest."""
    path = cache_dir / BIG_RECIPE
    if not (path / "index.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        for old in cache_dir.iterdir():
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        layout = build_big()
        layout.name = f".{BIG_RECIPE}.{os.getpid()}.tmp"
        layout.write(cache_dir).replace(path)
    link = seed_dir / "big"
    link.unlink(missing_ok=True)
    link.symlink_to(path)
    index = json.loads((path / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def build_all(seed_dir: Path) -> dict[str, Layout]:
    layouts = {
        "good": build_good(),
        "corrupt": build_corrupt(),
        "foreign": build_foreign(),
        "blobgone": build_blobgone(),
        "reset": build_reset(),
    }
    for layout in layouts.values():
        layout.write(seed_dir)
    return layouts


def blob_data_file(storage_root: Path, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob's bytes."""
    hexdigest = digest.removeprefix("sha256:")
    return (
        storage_root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest
    ) / "data"


# --------------------------------------------------------------------------- pushing with skopeo


@dataclass
class Push:
    """One ``skopeo copy oci:<seed>/<layout>:1.0 docker://<dest>``."""

    layout: str
    dest: str  # full reference, with the lab host name
    tls: bool = False  # verify TLS with the lab CA (else plain HTTP)
    creds: bool = False  # push with the lab user's credentials
    all: bool = False  # --all (image indexes)


def big_push(registries: dict[str, str]) -> Push:
    return Push("big", f"{registries['plain']}/pullcheck/big:1.0")


def push_plan(registries: dict[str, str]) -> list[Push]:
    plain, tls, auth, token = (registries[k] for k in ("plain", "tls", "auth", "token"))
    return [
        big_push(registries),  # first: the longest, the others run beside it
        Push("good", f"{plain}/pullcheck/good:1.0"),
        Push("good", f"{plain}/ratelimited/app:1.0"),
        Push("good", f"{plain}/ratelimited-get/app:1.0"),
        Push("good", f"{plain}/denied/app:1.0"),
        Push("good", f"{plain}/broken/app:1.0"),
        Push("corrupt", f"{plain}/pullcheck/corrupt:1.0"),
        Push("foreign", f"{plain}/pullcheck/foreign:1.0", all=True),
        Push("blobgone", f"{plain}/pullcheck/blobgone:1.0"),
        Push("reset", f"{plain}/pullcheck/reset:1.0"),
        Push("good", f"{tls}/pullcheck/good:1.0", tls=True),
        Push("good", f"{auth}/pullcheck/private:1.0", tls=True, creds=True),
        Push("good", f"{token}/public/good:1.0", tls=True, creds=True),
        Push("good", f"{token}/private/good:1.0", tls=True, creds=True),
    ]


def prepare_skopeo(skopeo_dir: Path, ca_file: Path) -> None:
    """Private config for skopeo so nothing from /etc/containers or ~/.docker leaks in."""
    (skopeo_dir / "registries.d").mkdir(parents=True, exist_ok=True)
    (skopeo_dir / "certs").mkdir(parents=True, exist_ok=True)
    (skopeo_dir / "certs" / "ca.crt").write_bytes(ca_file.read_bytes())
    (skopeo_dir / "policy.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n"
    )
    (skopeo_dir / "registries.conf").write_text("unqualified-search-registries = []\n")
    (skopeo_dir / "auth.json").write_text('{"auths": {}}\n')


def skopeo_argv(
    push: Push, seed_dir: Path, skopeo_dir: Path, tmp_dir: Path, resolv_conf: Path, creds: str
) -> list[str]:
    """The skopeo command, wrapped so it resolves names with the lab resolver.

    It runs in a private mount namespace where /etc/resolv.conf is the lab's and /var/lib is an
    empty tmpfs (skopeo running as root would otherwise create
    /var/lib/containers/cache/blob-info-cache-v1.boltdb on the host).
    """
    script = (
        f'mount --bind "{resolv_conf}" /etc/resolv.conf '
        "&& mount -t tmpfs -o size=16m,mode=755 pullcheck-lab /var/lib "
        '&& exec skopeo "$@"'
    )
    args = [
        "skopeo",
        "--policy",
        str(skopeo_dir / "policy.json"),
        "--registries.d",
        str(skopeo_dir / "registries.d"),
        "--tmpdir",
        str(tmp_dir),
        "copy",
        "--preserve-digests",
        "--retry-times",
        "2",
        "--dest-authfile",
        str(skopeo_dir / "auth.json"),
    ]
    if push.all:
        args.append("--all")
    if push.tls:
        args += ["--dest-cert-dir", str(skopeo_dir / "certs")]
    else:
        args.append("--dest-tls-verify=false")
    args += ["--dest-creds", creds] if push.creds else ["--dest-no-creds"]
    args += [f"oci:{seed_dir / push.layout}:{TAG}", f"docker://{push.dest}"]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, *args]
