"""gunicorn settings shared by every service: ``gunicorn -c python:dicomlab_core.gunicorn_conf ...``.

Threaded workers (gthread) so responses can stream; the Prometheus multiprocess directory is reset
when the master starts and dead workers are marked; access logs come from the apps (JSON, scrubbed),
so gunicorn's own access log is off. Everything is overridable with the usual GUNICORN_CMD_ARGS.
"""

from __future__ import annotations

import os
from typing import Any

from dicomlab_core.metrics import mark_worker_dead, metrics_bind, reset_multiprocess_dir

# The public port, and the metrics port (DICOMLAB_METRICS_PORT, default 9090) that only answers /metrics
# (see dicomlab_core.web): the app tells them apart by the local port of the socket a request came in on.
bind = [os.environ.get("DICOMLAB_BIND", "0.0.0.0:8080")]
bind.append(metrics_bind(bind[0]))
workers = int(os.environ.get("DICOMLAB_WORKERS", "2"))
# gthread, except that a connection gets a thread only once its request head (and a small body) is
# complete, read by the event loop under DICOMLAB_HEADER_TIMEOUT / DICOMLAB_BODY_TIMEOUT: slow clients
# cannot take the threads.
worker_class = "dicomlab_core.gthread_worker.HeadFirstThreadWorker"
threads = int(os.environ.get("DICOMLAB_THREADS", "16"))
timeout = int(os.environ.get("DICOMLAB_WORKER_TIMEOUT", "120"))
graceful_timeout = 25
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("DICOMLAB_LOG_LEVEL", "info").lower()
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
control_socket_disable = True


def on_starting(server: Any) -> None:
    reset_multiprocess_dir()


def child_exit(server: Any, worker: Any) -> None:
    mark_worker_dead(worker.pid)
