# pullcheck image: the node agent, the aggregator and the CLI (ENTRYPOINT pullcheck).
#
#   docker build -t REGISTRY/pullcheck:0.1.0 .         # or: podman build / buildah bud
#
# The tag is the package version (pyproject.toml), which `pullcheck --version` prints and the
# manifests name (tests/unit/test_version.py checks they agree). scripts/image.sh builds it
# here on a base made from Debian packages and smoke-tests it the way the DaemonSet runs it.
#
# The agent runs as a host-network DaemonSet with the CRI socket, the node's resolv.conf, hosts,
# trust store and containerd's certs.d mounted read-only (manifests/base). The image's default
# user is non-root (65532); the DaemonSet runs the agent as uid 0 only because the CRI socket is
# root-owned, with every capability dropped.
#
# Build arguments:
#   BASE           both stages' base: Debian with Python >= 3.11 and its venv module. The
#                  default is pinned to an exact Python patch release and Debian release (never
#                  a floating tag); override it for a mirror or a digest:
#                    --build-arg BASE=python:3.11.17-slim-bookworm@sha256:<digest>
#   PIP_CERT       a CA bundle for pip inside the build (a TLS-inspecting proxy): mount it
#                  read-only into the build and name it here (podman/buildah: -v FILE:PATH:ro)
#   PIP_INDEX_URL  a package index mirror
# Both PIP_* reach the build stage only (empty: pip's defaults); neither is in the image.
ARG BASE=python:3.11.17-slim-bookworm

# --- build: the CRI stubs and a virtualenv with pullcheck and its dependencies ---------------
FROM ${BASE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_PROGRESS_BAR=off
WORKDIR /src

# binutils for strip alone (some wheels ship their extensions with debug information: uvloop's
# is 13.6 of its 14 MB). The stub generator in a virtualenv of its own (never the base's system
# Python), at the versions of the dev extra (pyproject.toml). Everything installs from binary
# wheels: there is no compiler in either stage, and none is needed.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && python3 -m venv /opt/tools \
    && /opt/tools/bin/pip install --quiet grpcio-tools==1.85.1 mypy-protobuf==5.1.0

# The runtime virtualenv has no pip: the tools' pip installs into it (--python). The
# dependencies first, from pyproject.toml alone, so this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python3 -m venv --without-pip /opt/pullcheck \
    && /opt/tools/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && /opt/tools/bin/pip --python /opt/pullcheck/bin/python install --quiet -r /tmp/requirements.txt \
    && find /opt/pullcheck -name '*.so' -exec strip --strip-debug {} +

COPY README.md ./
COPY proto ./proto
COPY agent ./agent
# agent/cri/_pb is not copied in (.dockerignore): the stubs are generated here from proto/,
# so the image never ships stale ones.
RUN /opt/tools/bin/python proto/generate.py \
    && test -f agent/cri/_pb/runtime/v1/api_pb2.py \
    && test -f agent/cri/_pb/runtime/v1alpha2/api_pb2_grpc.py
RUN /opt/tools/bin/pip wheel --quiet --no-deps --wheel-dir /wheels . \
    && /opt/tools/bin/pip --python /opt/pullcheck/bin/python install --quiet --no-deps /wheels/*.whl \
    && /opt/tools/bin/pip --python /opt/pullcheck/bin/python check \
    && /opt/pullcheck/bin/pullcheck --version

# --- runtime: the same base, the virtualenv, a non-root user; no compiler, no pip -----------
FROM ${BASE}
LABEL org.opencontainers.image.title="pullcheck" \
      org.opencontainers.image.description="Diagnose Kubernetes image pulls from the container runtime's own vantage point" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
# MALLOC_ARENA_MAX: glibc gives each thread that allocates its own malloc arena, up to 8 per
# core; two bound the agent's resident memory on many-core nodes (the asyncio executor's
# threads, grpc's). Measured on 2 cores it changes nothing (docs/benchmarks.md, "Agent memory").
ENV PATH=/opt/pullcheck/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
RUN groupadd --gid 65532 pullcheck \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --no-log-init \
       --shell /usr/sbin/nologin pullcheck
# Same Python at the same path in both stages, so the virtualenv works as copied (its modules
# already compiled: a read-only root filesystem never caches bytecode); root-owned and
# read-only to the runtime user.
COPY --from=build /opt/pullcheck /opt/pullcheck
USER 65532:65532
EXPOSE 8479 8480
ENTRYPOINT ["pullcheck"]
CMD ["--help"]
