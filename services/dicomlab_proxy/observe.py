"""Request metrics and the access log, written when the last byte has left (or the client left).

:func:`dicomlab_core.web.install_common` observes requests in ``after_request``, which for a
streamed body runs before a single byte is sent: it would log no size and no real duration. The
proxy therefore installs it with ``observe_requests=False`` and records its own requests: the request
counter and the time-to-headers histogram in ``after_request``, and the access log line plus bytes
and time-to-last-byte when the relay ends.

The access log holds the route template, never the path or query (UIDs, tokens), and the token
id (``jti``), never the token or the subject's name.
"""

from __future__ import annotations

import logging
import time

from flask import Response, g, request

from dicomlab_core.web import HTTP_LATENCY, HTTP_REQUESTS, route_label
from dicomlab_proxy.access import Identity
from dicomlab_proxy.metrics import CLIENT_ABORTS, RESPONSE_BYTES, STREAM_DURATION

SERVICE = "proxy"
access_logger = logging.getLogger("dicomlab.access")
_QUIET_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})


def start() -> None:
    g.proxy_started = time.perf_counter()


def observe(response: Response) -> Response:
    """Record the request at header time; log now unless a relay will log when it ends."""
    started = g.get("proxy_started")
    route = route_label()
    if started is None or route in _QUIET_ROUTES:
        return response
    elapsed = time.perf_counter() - started
    HTTP_REQUESTS.labels(SERVICE, request.method, route, str(response.status_code)).inc()
    HTTP_LATENCY.labels(SERVICE, request.method, route).observe(elapsed)
    if not g.get("proxy_streamed"):
        log_completion(request.method, route, response.status_code, response.content_length or 0, elapsed,
                       "complete", g.get("proxy_identity"))
    return response


def log_completion(method: str, route: str, status: int, sent: int, seconds: float, outcome: str,
                   identity: Identity | None, relay: str | None = None) -> None:
    """One access-log line and the byte/duration metrics for a finished (or abandoned) response.

    ``relay`` says how a streamed body travelled: ``splice`` (kernel, zero-copy) or ``copy``.
    """
    RESPONSE_BYTES.labels(route).inc(sent)
    STREAM_DURATION.labels(route, outcome).observe(seconds)
    if outcome == "aborted":
        CLIENT_ABORTS.labels(route).inc()
    access_logger.info(
        "%s %s %d", method, route, status,
        extra={"method": method, "route": route, "status": status, "bytes": sent,
               "duration_ms": round(seconds * 1000, 2), "outcome": outcome,
               "token_id": identity.key if identity is not None else None, "relay": relay},
    )
