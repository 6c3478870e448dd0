# zerolabel GPU worker: CUDA PyTorch base, the discovery engine, an RQ SimpleWorker.
ARG BASE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface
WORKDIR /app

# pydensecrf2 (mask refinement) is a source distribution: a C++ compiler builds it.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# The library alone: workers never need the HTTP server package.
COPY pyproject.toml README.md ./
COPY worker ./worker
# torch and torchvision come with the base image; the rest of the worker extra is added.
RUN --mount=type=cache,target=/root/.cache/pip pip install ".[worker]"

VOLUME ["/weights", "/cache"]
CMD ["zerolabel", "worker"]
