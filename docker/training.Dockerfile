# The training image: `dicomlab train run` (single GPU, CPU) or under torchrun (multi-GPU / multi-node).
#   docker build -f docker/training.Dockerfile -t dicomlab-training .
# CUDA-enabled PyTorch: the lock's torch version installed from PyPI's default index, whose Linux wheels
# are the CUDA builds and bring the CUDA runtime, cuDNN and NCCL as nvidia-* wheels (the GPU driver comes
# from the node through the NVIDIA container toolkit). The development lock pins the "+cpu" variant of
# the same version; only that local-version suffix is rewritten here, so the version cannot drift.
# TORCH_VARIANT=cpu keeps the lock's "+cpu" pin instead and installs torch from docker/wheelhouse/
# (scripts/images.sh copies the wheel there from pip's find-links: pip inside a build cannot see it);
# that CPU image is what the deploy smoke trains with.
# One Python (3.11, as pyproject requires), one torch copy, base pinned by digest. compileall skips torch's
# py312_*.py test helpers (Python 3.12 syntax, never imported on 3.11).
# Base digests: recorded from public references to these tags; no registry is reachable where this
# repository is tested, so re-check them with `docker buildx imagetools inspect <image:tag>` when bumping.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cuda
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md* ./
COPY services/ services/
COPY training/ training/
COPY docker/wheelhouse/ /wheels/
RUN if [ "$TORCH_VARIANT" = cpu ]; then cp constraints.txt /tmp/constraints-cuda.txt; \
    else sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' constraints.txt > /tmp/constraints-cuda.txt; fi \
 && /opt/venv/bin/pip install --only-binary=:all: --find-links /wheels -c /tmp/constraints-cuda.txt '.[train]' \
 && /opt/venv/bin/python -m compileall -q -x '/py31[2-9]_[a-z_]+[.]py$' /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dicomlab-training" \
      org.opencontainers.image.description="MONAI DenseNet121 multi-label training (PyTorch: CUDA build, or CPU with TORCH_VARIANT=cpu)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 1000 dicomlab \
 && useradd --system --uid 1000 --gid 1000 --create-home --home-dir /home/dicomlab --shell /usr/sbin/nologin dicomlab
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/home/dicomlab \
    XDG_CACHE_HOME=/tmp/.cache TRITON_CACHE_DIR=/tmp/.triton TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
# The Job runs with a read-only root: every cache (torch.compile, Triton, matplotlib) goes to the /tmp emptyDir.
USER 1000:1000
WORKDIR /home/dicomlab
# A batch job: Kubernetes watches the process itself; there is no server to health-check.
HEALTHCHECK NONE
ENTRYPOINT ["dicomlab"]
CMD ["train", "run", "--help"]
