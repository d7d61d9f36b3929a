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

import functools
import logging
import time
from typing import Any

from flask import Response, g, request

from dicomlab_core.web import HTTP_LATENCY, HTTP_REQUESTS, method_label, route_label
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
    method, status = request.method, response.status_code
    counter, latency = _request_metrics(method_label(method), route, status)
    counter.inc()
    latency.observe(elapsed)
    if not g.get("proxy_streamed"):
        log_completion(method, route, status, response.content_length or 0, elapsed, "complete",
                       g.get("proxy_identity"))
    return response


@functools.lru_cache(maxsize=1024)
def _request_metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of one method/route/status (labels resolved once)."""
    return HTTP_REQUESTS.labels(SERVICE, method, route, str(status)), HTTP_LATENCY.labels(SERVICE, method, route)


@functools.lru_cache(maxsize=1024)
def _stream_metrics(route: str, outcome: str) -> tuple[Any, Any]:
    """The bytes counter and time-to-last-byte histogram of one route/outcome (labels resolved once)."""
    return RESPONSE_BYTES.labels(route), STREAM_DURATION.labels(route, outcome)


def log_completion(method: str, route: str, status: int, sent: int, seconds: float, outcome: str,
                   identity: Identity | None, relay: str | None = None) -> None:
    """One access-log line and the byte/duration metrics for a finished (or abandoned) response.

    ``relay`` says how a streamed body travelled: ``splice`` (kernel, zero-copy) or ``copy``.
    """
    sent_bytes, duration = _stream_metrics(route, outcome)
    sent_bytes.inc(sent)
    duration.observe(seconds)
    if outcome == "aborted":
        CLIENT_ABORTS.labels(route).inc()
    if not access_logger.isEnabledFor(logging.INFO):
        return
    access_logger.info(
        "%s %s %d", method, route, status,
        extra={"method": method, "route": route, "status": status, "bytes": sent,
               "duration_ms": round(seconds * 1000, 2), "outcome": outcome,
               "token_id": identity.key if identity is not None else None, "relay": relay},
    )
