"""Request metrics and the access log, written when the last byte has left (or the client left).

:func:`dicomlab_core.web.install_common` observes requests in ``after_request``, which for a
streamed body runs before a single byte is sent: it would log no size and no real duration. The
proxy therefore installs it with ``observe_requests=False`` and records its own requests: the request
counter and the time-to-headers histogram in ``after_request``, and the access log line plus bytes
and time-to-last-byte when the relay ends.

The access log is the audit trail of reads: each line names the route template (never the raw path or
query, which may carry a token or search terms), the study/series/instance (or Orthanc ID) the scope
decision was made on — for a search, the filter the proxy wrote —, the grant that allowed it, the
token id (``jti``) and opaque subject (``assignment:42``; ``service:<n>`` for a service caller) and
whether the token was de-identified. Never the token itself, never a patient's name or ID.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Response, g, request

from dicomlab_core.web import HTTP_LATENCY, HTTP_REQUESTS, method_label, route_label
from dicomlab_proxy.access import Identity
from dicomlab_proxy.metrics import CLIENT_ABORTS, RESPONSE_BYTES, STREAM_DURATION
from dicomlab_proxy.scope import Target

SERVICE = "proxy"
access_logger = logging.getLogger("dicomlab.access")
_QUIET_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})


@dataclass(frozen=True)
class Audit:
    """Who read what: the access-log fields of one request (all safe to log, see the module docstring)."""

    token_id: str | None = None
    subject: str | None = None
    deidentified: bool = False
    target: Target | None = None
    grant: str | None = None

    def fields(self) -> dict[str, Any]:
        target = self.target or Target()
        return {"token_id": self.token_id, "token_subject": self.subject, "deid": self.deidentified,
                "study": target.study, "series": target.series, "instance": target.instance,
                "orthanc_id": target.orthanc_id, "grant": self.grant}


def current_audit() -> Audit:
    """The audit fields of the request being handled (from what authentication and the scope check left in ``g``)."""
    identity: Identity | None = g.get("proxy_identity")
    grant = g.get("proxy_grant")
    if identity is None:
        return Audit(target=g.get("proxy_target"))
    return Audit(token_id=identity.key, subject=identity.subject, deidentified=identity.deidentified,
                 target=g.get("proxy_target"), grant=str(grant) if grant is not None else
                 ("service" if identity.service else None))


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
                       current_audit())
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
                   audit: Audit, relay: str | None = None) -> None:
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
               "relay": relay, **audit.fields()},
    )
