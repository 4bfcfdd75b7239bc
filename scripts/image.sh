#!/usr/bin/env bash
# Build pullcheck's container image here and smoke-test it against the lab, run the way the
# DaemonSet and the Deployment run it (tests/image). CI runs it (scripts/test.sh). As root.
#
#   bash scripts/image.sh                # base (cached) + image + smoke test
#   bash scripts/image.sh --build-only   # base + image
#   bash scripts/image.sh -- -k tls      # extra arguments after -- go to pytest
#
# 1. The base: no image can be pulled from a public registry here, so both stages build on a
#    Debian bookworm root filesystem made from Debian packages (mmdebstrap, as the official
#    Debian images are made) plus python3 and its venv module, imported with podman. Cached in
#    $PULLCHECK_IMAGE_CACHE (default /var/cache/pullcheck-image) by a hash of its recipe, and
#    rebuilt when the recipe changes or the tarball is a week old (security updates).
# 2. The image: `podman build` of the Dockerfile with --build-arg BASE=<that base>; pip in the
#    build reaches the package index with the host's CA bundle, mounted read-only.
# 3. The smoke test: `pytest tests/image` with PULLCHECK_IMAGE set, holding the lab lock
#    ($PULLCHECK_LAB_LOCK, default /tmp/pullcheck-lab.lock) so lab users on one machine take
#    turns.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) build_only=true ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "image.sh: unknown argument: $1 (usage: image.sh [--build-only] [-- PYTEST_ARGS])" >&2
       exit 2 ;;
  esac
  shift
done

for tool in podman mmdebstrap flock; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool is missing (bash scripts/setup.sh)" >&2; exit 1; }
done

VERSION=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=localhost/pullcheck:$VERSION
CACHE=${PULLCHECK_IMAGE_CACHE:-/var/cache/pullcheck-image}
CA_BUNDLE=${PULLCHECK_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
# This VM lacks CAP_SYS_RESOURCE: containers may not raise their limits to podman's defaults.
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
export PULLCHECK_IMAGE_ULIMITS="${ULIMITS[*]}"  # tests/image runs its containers with them

# --- 1. the base ---------------------------------------------------------------------------
# merged-usr hook: /usr merged as in Debian's images without the usrmerge package (and the
# ~50 MB of perl it pulls in); no documentation, manual pages or translations (as Debian's
# slim images).
BASE_RECIPE=(
  --variant=minbase --include=python3,python3-venv
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --aptopt='Acquire::Retries "3"'
  bookworm
)
recipe_hash=$(printf '%s\n' "${BASE_RECIPE[@]}" | sha256sum | cut -c1-12)
BASE=localhost/pullcheck-base:bookworm-$recipe_hash
base_tar=$CACHE/base-$recipe_hash.tar
mkdir -p "$CACHE"
if [ ! -s "$base_tar" ] || [ -n "$(find "$base_tar" -mtime +6)" ]; then
  echo "image.sh: making the base ($base_tar) from Debian packages" >&2
  start=$SECONDS
  if ! mmdebstrap --quiet --format=tar "${BASE_RECIPE[@]}" "$base_tar.tmp" >"$CACHE/mmdebstrap.log" 2>&1; then
    tail -30 "$CACHE/mmdebstrap.log" >&2
    rm -f "$base_tar.tmp"
    echo "image.sh: mmdebstrap failed (log above, all of it in $CACHE/mmdebstrap.log)" >&2
    exit 1
  fi
  mv "$base_tar.tmp" "$base_tar"
  find "$CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "base-$recipe_hash.tar" -delete
  podman import --quiet "$base_tar" "$BASE" >/dev/null  # the tag moves to the new base
  echo "image.sh: base made in $((SECONDS - start)) s" >&2
elif ! podman image exists "$BASE"; then
  podman import --quiet "$base_tar" "$BASE" >/dev/null
fi

# --- 2. the image --------------------------------------------------------------------------
# The build stage is tagged too, so that each build replaces the previous one (and its layers)
# instead of leaving it dangling; the last one stays as the layer cache of the next build.
build() {  # build TAG [podman build options]: build, then remove the image TAG named before
  local tag=$1 previous current
  shift
  previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  podman build --quiet --network host "${ULIMITS[@]}" --build-arg BASE="$BASE" "${CA_ARGS[@]}" \
    --tag "$tag" --file Dockerfile "$@" . >/dev/null
  current=$(podman image inspect --format '{{.Id}}' "$tag")
  if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true  # unless a container still uses it
  fi
}
CA_ARGS=()
if [ -f "$CA_BUNDLE" ]; then  # read-only into the build, for pip alone
  CA_ARGS=(--volume "$CA_BUNDLE:/etc/pullcheck-build-ca.pem:ro"
           --build-arg PIP_CERT=/etc/pullcheck-build-ca.pem)
fi
start=$SECONDS
build "localhost/pullcheck-build:$VERSION" --target build
build "$IMAGE"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image.sh: built $IMAGE ($((size / 1000000)) MB) in $((SECONDS - start)) s; its layers:" >&2
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | grep -v '^0 B' | cut -c1-100 >&2

if $build_only; then
  exit 0
fi

# --- 3. the smoke test ---------------------------------------------------------------------
export PULLCHECK_IMAGE=$IMAGE
exec flock "${PULLCHECK_LAB_LOCK:-/tmp/pullcheck-lab.lock}" \
  .venv/bin/python -m pytest -p no:cacheprovider tests/image "${pytest_args[@]}"
