# TEST-ONLY stand-in for docker.io/library/postgres (make deploy-smoke; no registry is reachable here):
# Debian's PostgreSQL 15 run as uid 999 like the official image, with an entry point that honours the
# same contract the chart relies on (POSTGRES_USER/PASSWORD/DB, PGDATA, /docker-entrypoint-initdb.d).
ARG DEBIAN_IMAGE=localhost/debian-min:bookworm
FROM ${DEBIAN_IMAGE}
# No cluster from the package's postinst: the entry point creates one in PGDATA on first start.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/sh postgres \
 && mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER 999:999
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
