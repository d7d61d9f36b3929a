# TEST-ONLY S3 for make deploy-smoke: moto's S3 server (the version constraints.txt locks), in place of
# the AWS bucket the chart's objectStore.url names.
ARG PYTHON_IMAGE=localhost/dicomlab-python:3.11-bookworm
FROM ${PYTHON_IMAGE}
ARG MOTO_VERSION=5.2.5
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: "moto[s3,server]==${MOTO_VERSION}"
USER 65534:65534
ENTRYPOINT ["/opt/venv/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
