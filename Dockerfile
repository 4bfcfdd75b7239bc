# pullcheck image: the node agent, the aggregator and the CLI (ENTRYPOINT pullcheck).
#
#   docker build -t ghcr.io/pullcheck/pullcheck:0.1.0 .
#
# The agent runs as a host-network DaemonSet with the CRI socket, the node's resolv.conf, hosts,
# trust store and containerd's certs.d mounted read-only (manifests/base). The image's default
# user is non-root (65532); the DaemonSet runs the agent as uid 0 only because the CRI socket is
# root-owned, with every capability dropped.
#
# Both stages use the same base, pinned to an exact Python patch release and Debian release
# (never a floating tag). Override it for a mirror or a digest:
#   --build-arg PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# --- build: generate the CRI stubs, build the wheel, install it into a virtualenv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# The stub generator, at the versions of the dev extra (pyproject.toml). Everything installs
# from binary wheels: there is no compiler in either stage, and none is needed.
RUN pip install grpcio-tools==1.85.1 mypy-protobuf==5.1.0

COPY pyproject.toml README.md ./
COPY proto ./proto
COPY agent ./agent
# agent/cri/_pb is not copied in (.dockerignore): the stubs are generated here from proto/,
# so the image never ships stale ones.
RUN python proto/generate.py \
    && test -f agent/cri/_pb/runtime/v1/api_pb2.py \
    && test -f agent/cri/_pb/runtime/v1alpha2/api_pb2_grpc.py

RUN pip wheel --wheel-dir /wheels . \
    && python -m venv /opt/pullcheck \
    && /opt/pullcheck/bin/pip install --no-index --find-links=/wheels pullcheck \
    && /opt/pullcheck/bin/pullcheck --help > /dev/null

# --- runtime: the same slim base, the virtualenv, nothing else ------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pullcheck" \
      org.opencontainers.image.description="Diagnose Kubernetes image pulls from the container runtime's own vantage point" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/pullcheck/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 65532 pullcheck \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pullcheck
# Same Python at the same path in both stages, so the virtualenv works as copied; root-owned
# and read-only to the runtime user.
COPY --from=build /opt/pullcheck /opt/pullcheck
USER 65532:65532
EXPOSE 8479 8480
ENTRYPOINT ["pullcheck"]
CMD ["--help"]
