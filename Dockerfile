# pullcheck node agent image. Runs as a host-network DaemonSet with the CRI socket, the node's
# /etc/resolv.conf, /etc/hosts, trust store and /etc/containerd/certs.d mounted read-only.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 0
ENTRYPOINT ["pullcheck"]
CMD ["--help"]
