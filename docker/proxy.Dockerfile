# The DICOMweb CORS proxy. Build from the repository root:
#   docker build -f docker/proxy.Dockerfile -t dicomlab-proxy .
# Bases are pinned by digest (python:3.11-slim-bookworm); Python dependencies come from constraints.txt.
# Base digests: recorded from public references to these tags; no registry is reachable where this
# repository is tested, so re-check them with `docker buildx imagetools inspect <image:tag>` when bumping.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# binutils: docker/slim_venv.py strips the debug sections of compiled extensions (build stage only).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md* ./
COPY docker/slim_venv.py docker/
COPY services/ services/
COPY training/ training/
# Every dependency is locked by constraints.txt; wheels only, so no compiler is ever needed. Only what
# this service imports (the core dependencies and pydicom's data dictionary for de-identified metadata); no
# installer left in the runtime venv.
RUN /opt/venv/bin/pip install --only-binary=:all: -c constraints.txt '.[proxy]' \
 && /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/venv/bin/python docker/slim_venv.py /opt/venv \
      --import dicomlab_core.gunicorn_conf,dicomlab_proxy.app,gunicorn.app.wsgiapp,gunicorn.workers.gthread

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dicomlab-proxy" \
      org.opencontainers.image.description="DICOMweb CORS proxy in front of Orthanc" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 dicomlab \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dicomlab
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DICOMLAB_BIND=0.0.0.0:8080 PROMETHEUS_MULTIPROC_DIR=/var/run/prometheus-multiproc
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["gunicorn", "-c", "python:dicomlab_core.gunicorn_conf", "dicomlab_proxy.app:create_app()"]
