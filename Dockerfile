# syntax=docker/dockerfile:1
#
# onnxplain's gRPC Explain service. Two targets share every layer but the runtime:
#   docker build -t onnxplain:cpu .                 (the default: last stage, `cpu`)
#   docker build -t onnxplain:gpu --target gpu .    (onnxruntime-gpu, the CUDA execution provider)
# The model repository is not baked in: mount one at /models (read-only is enough).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build the project's wheel in a throwaway stage, so no build tool lands in the runtime image.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Everything the service needs, CPU runtime included.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
# The root filesystem may be read-only (Kubernetes: readOnlyRootFilesystem): /tmp is then the
# one writable place (an emptyDir or tmpfs). HOME and XDG_CACHE_HOME point there because
# onnxruntime keeps a cache file under $XDG_CACHE_HOME (else $HOME/.cache) and CUDA its kernel
# cache under $HOME/.nv; PYTHONDONTWRITEBYTECODE keeps Python from writing .pyc files.
RUN python -m venv /opt/venv \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin onnxplain
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(ls /wheels/onnxplain-*.whl)[serve]"
COPY deploy/healthcheck.py /opt/onnxplain/healthcheck.py
# Numeric, so that orchestrators can verify the user is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 50051
# Healthy means grpc.health.v1 answers SERVING; a draining server (SIGTERM) turns unhealthy.
# With --tls-cert, also pass --health-port 8081 and set ONNXPLAIN_HEALTH_ADDRESS=127.0.0.1:8081:
# the check speaks plaintext.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/onnxplain/healthcheck.py"]
# Inside the container the server must listen on every interface; compose publishes the port on
# the host's loopback only.
ENTRYPOINT ["onnxplain", "serve"]
CMD ["--models", "/models", "--host", "0.0.0.0", "--port", "50051", "--device", "cpu"]

# CUDA execution provider. onnxruntime-gpu replaces onnxruntime (both ship the `onnxruntime`
# module, so they must not coexist); its `cuda` and `cudnn` extras bring the CUDA libraries as
# wheels, so the slim base suffices and the host only provides the driver (NVIDIA Container
# Toolkit). The default needs a driver for CUDA 13 (>= 580); on a CUDA 12 host build with
#   --build-arg ONNXRUNTIME_GPU="onnxruntime-gpu[cuda,cudnn]==1.23.2"
FROM runtime AS gpu
ARG ONNXRUNTIME_GPU="onnxruntime-gpu[cuda,cudnn]==1.31.1"
USER 0
# The NVIDIA wheels keep their shared libraries in site-packages; registering those folders with
# the dynamic loader lets onnxruntime's CUDA provider find them without LD_LIBRARY_PATH.
# (DL3013: the version is pinned, in the build argument.)
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3013
RUN pip uninstall --yes onnxruntime \
    && pip install "${ONNXRUNTIME_GPU}" \
    && find /opt/venv/lib/python3.11/site-packages/nvidia -name 'lib*.so*' -printf '%h\n' \
       | sort -u > /etc/ld.so.conf.d/onnxplain-nvidia.conf \
    && ldconfig
USER 10001:10001
CMD ["--models", "/models", "--host", "0.0.0.0", "--port", "50051", "--device", "cuda"]

FROM runtime AS cpu
