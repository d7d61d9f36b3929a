# TEST-ONLY stand-in for docker.io/orthancteam/orthanc (make deploy-smoke; no registry is reachable here):
# Debian's Orthanc with its DICOMweb and PostgreSQL plugins, and an entry point that turns the chart's
# ORTHANC__SECTION__KEY / <PLUGIN>_PLUGIN_ENABLED environment into /tmp/orthanc.json like the upstream
# image's does. The chart keeps the upstream image for production.
ARG PYTHON_IMAGE=localhost/dicomlab-python:3.11-bookworm
FROM ${PYTHON_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends orthanc orthanc-dicomweb orthanc-postgresql \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && rm -rf /var/lib/orthanc/db* && chmod 0755 /var/lib/orthanc  # the pod's user (1000) mounts its volume below it
COPY orthanc-entrypoint.py /usr/local/bin/orthanc-entrypoint.py
USER 1000:1000
ENTRYPOINT ["python3", "/usr/local/bin/orthanc-entrypoint.py"]
