# The labeling service with its browser UI. Build from the repository root:
#   docker build -f docker/labeling.Dockerfile -t dicomlab-labeling .
# Stage 1 builds the Cornerstone3D bundle with Node (npm ci against package-lock.json, vite build);
# only the built assets reach the runtime image, never Node or node_modules.
# FRONTEND=prebuilt takes the bundle `make frontend` built instead (scripts/images.sh, where no registry
# serves a Node image); the build context must then hold services/dicomlab_labeling/static/dist.
# Base digests: recorded from public references to these tags; no registry is reachable where this
# repository is tested, so re-check them with `docker buildx imagetools inspect <image:tag>` when bumping.
ARG NODE_IMAGE=node:22-bookworm-slim@sha256:43ac6c60b8f89723f746e8a92ce91abd5017e627ce1ddfe4238355d3a30b772c
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG FRONTEND=node

FROM ${NODE_IMAGE} AS frontend_node
WORKDIR /src/services/dicomlab_labeling/frontend
COPY services/dicomlab_labeling/frontend/package.json services/dicomlab_labeling/frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY services/dicomlab_labeling/frontend/ ./
RUN npx vite build

FROM scratch AS frontend_prebuilt
COPY services/dicomlab_labeling/static/dist/ /src/services/dicomlab_labeling/static/dist/

# hadolint ignore=DL3006
FROM frontend_${FRONTEND} AS frontend

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
COPY scripts/build_frontend.py scripts/
COPY docker/slim_venv.py docker/
COPY services/ services/
COPY training/ training/
COPY --from=frontend /src/services/dicomlab_labeling/static/dist/ services/dicomlab_labeling/static/dist/
# The SRI manifest (entry -> file + sha384) is written by the same code `make frontend` uses.
RUN python -c "import sys; sys.path.insert(0, 'scripts'); import build_frontend; build_frontend.write_manifest()" \
 && /opt/venv/bin/pip install --only-binary=:all: -c constraints.txt '.[labeling]' \
 && /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/venv/bin/python docker/slim_venv.py /opt/venv \
      --import dicomlab_core.gunicorn_conf,dicomlab_labeling.app,dicomlab_labeling.workflow.migrate,dicomlab_labeling.workflow.export,dicomlab_labeling.workflow.sr,dicomlab_labeling.workflow.sr_report,gunicorn.app.wsgiapp,gunicorn.workers.gthread,boto3 \
      --botocore-services s3,sts,sso,sso-oidc,signin

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dicomlab-labeling" \
      org.opencontainers.image.description="Self-hosted labeling service, UI and Ground Truth callbacks" \
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
CMD ["gunicorn", "-c", "python:dicomlab_core.gunicorn_conf", "dicomlab_labeling.app:create_app()"]
