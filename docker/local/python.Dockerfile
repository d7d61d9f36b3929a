# The Python layer of the locally made base (scripts/images.sh): Debian bookworm's Python 3.11 with venv
# and a `python` command, on the debootstrap minbase image imported as localhost/debian-min:bookworm.
# It stands in for python:3.11-slim-bookworm where no registry is reachable; release builds keep the
# digest-pinned upstream base (docker/*.Dockerfile's PYTHON_IMAGE default).
ARG DEBIAN_IMAGE=localhost/debian-min:bookworm
FROM ${DEBIAN_IMAGE}
# The building machine's site CAs (scripts/images.sh copies /usr/local/share/ca-certificates/*.crt into
# ca/): pip's own bundle would not trust an HTTPS-intercepting proxy or a private mirror.
COPY ca/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python-is-python3 \
 && update-ca-certificates >/dev/null \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
