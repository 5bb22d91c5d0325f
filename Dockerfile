# syntax=docker/dockerfile:1.7
#
# serlens image: Ray head, Ray GPU worker, RayJob driver and MLflow server all run it.
#
#   docker build -t serlens:0.1.0 .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t serlens:0.1.0 .
#
# One Ray version everywhere: this tag, rayVersion in k8s/ and ray[serve]==2.52.0 in
# pyproject.toml (tests/unit/deploy checks that they agree).
ARG RAY_IMAGE=rayproject/ray:2.52.0-py311-gpu

# ---------------------------------------------------------------------------------------
# build: wheels of serlens and of every dependency, on the same Python and glibc as the
# final image, so the final stage installs offline from /home/ray/wheels.
FROM ${RAY_IMAGE} AS build

# The rayproject/ray GPU images ship CUDA but no torch: take a CUDA build of torch from
# the PyTorch index (the CUDA version it names must be supported by the nodes' driver).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# The base image runs as `ray`; folders made here (not by WORKDIR, which makes them as root)
# stay writable for the in-tree build.
RUN mkdir -p /home/ray/build /home/ray/wheels
WORKDIR /home/ray/build
COPY --chown=1000:100 pyproject.toml README.md LICENSE NOTICE ./
COPY --chown=1000:100 shared/ shared/
COPY --chown=1000:100 services/ services/
COPY --chown=1000:100 deploy/ deploy/

# torch first, from its index; the second pass finds it in /home/ray/wheels (the +cuXXX
# local version sorts above PyPI's plain one) and fetches the rest from PyPI.
RUN pip wheel --no-cache-dir --wheel-dir /home/ray/wheels \
        --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        "torch==${TORCH_VERSION}" \
    && pip wheel --no-cache-dir --wheel-dir /home/ray/wheels \
        --find-links /home/ray/wheels "torch==${TORCH_VERSION}" .

# ---------------------------------------------------------------------------------------
# final: the Ray image plus serlens, installed from the wheels only (no index, no network).
FROM ${RAY_IMAGE}

ARG SERLENS_VERSION=0.1.0
LABEL org.opencontainers.image.title="serlens" \
      org.opencontainers.image.description="WavLM fine-tuned for speech emotion recognition: CKA against eGeMAPS and layer-wise probes per checkpoint, on Ray" \
      org.opencontainers.image.version="${SERLENS_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/rayproject/ray:2.52.0-py311-gpu"

# Nothing is downloaded at start: weights come from the volume mounted at /models.
# On Kubernetes the root filesystem is read-only: only /tmp and ~/.cache (emptyDirs) are
# writable, so matplotlib's config and Python's bytecode are kept off the rest.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Made by `ray` so that the default workdir ./serlens-work can be created in it.
RUN mkdir -p /home/ray/serlens
WORKDIR /home/ray/serlens

# A bind mount, not a COPY: the wheels (torch with its CUDA libraries is several GB)
# never become a layer of their own. The import check fails the build, not the first pod.
RUN --mount=type=bind,from=build,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --find-links /tmp/wheels "serlens==${SERLENS_VERSION}" \
    && python -c "import ray, torch, opensmile, transformers, mlflow, serlens; \
raise SystemExit(ray.__version__ != '2.52.0')" \
    && serlens run --help >/dev/null

# The run configs ship inside the package (`serlens run --config crema-d`); this copy is for
# `serve run deploy/serve_config.yaml` and for reading them: `serlens run --config deploy/crema-d.yaml`.
COPY --chown=1000:100 deploy/ deploy/

# The base image's `ray` user (uid 1000, gid 100 `users`).
USER 1000

# 8000 Serve HTTP, 8265 Ray dashboard and job API, 6379 Ray GCS, 5000 MLflow.
EXPOSE 8000 8265 6379 5000

# No HEALTHCHECK: one image plays four roles (Ray head, Ray worker, job driver, MLflow) with
# different health endpoints, and Kubernetes ignores HEALTHCHECK; the probes live in k8s/.
HEALTHCHECK NONE

# Local use: docker run -p 8000:8000 serlens:0.1.0 (the API on the demo workdir).
CMD ["serlens", "serve", "--host", "0.0.0.0"]
