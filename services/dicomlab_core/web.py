"""Flask building blocks every service uses: health probes, ``/metrics``, request metrics, access log.

``install_common(app, service=..., ready=...)`` adds them in one call from ``create_app``.
``/metrics`` answers only on the metrics port (``DICOMLAB_METRICS_PORT``, a second gunicorn bind): the
port is taken from the local address of the socket the request arrived on (``SERVER_PORT``, set by the
server, not by the client), so the public port answers 404 and the metrics port answers nothing else.
The access log is one JSON line per request with method, route template (not the raw path, which
can carry UIDs), status, duration and bytes; never query strings, headers, or bodies. Every
response carries ``X-Content-Type-Options: nosniff``. :class:`BoundedCheck` keeps a readiness check
within its deadline when a dependency hangs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, abort, g, jsonify, request
from prometheus_client import Counter, Histogram

from dicomlab_core.errors import ServiceError, ServiceUnavailable, register_error_handlers
from dicomlab_core.metrics import LATENCY_BUCKETS_SECONDS, metrics_port, render_latest

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("dicomlab.access")

# The service label is ``dicomlab_service``, not ``service``: the Prometheus Operator sets ``service`` (and job,
# namespace, pod, instance, container, endpoint) on every target and would rename ours exported_service.
HTTP_REQUESTS = Counter("dicomlab_http_requests_total", "HTTP requests handled, by service, route and status.",
                        ("dicomlab_service", "method", "route", "status"))
HTTP_LATENCY = Histogram("dicomlab_http_request_duration_seconds", "Time to the response headers, by route.",
                         ("dicomlab_service", "method", "route"), buckets=LATENCY_BUCKETS_SECONDS)

ReadyCheck = Callable[[], None]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The request method as a metric label: a standard method, else ``OTHER``.

    gunicorn accepts any upper-case token as a method, so labelling with it verbatim would let a
    client create new time series at will.
    """
    return method if method in _METHODS else "OTHER"


def route_label() -> str:
    """The matched route template (``/studies/<study>``), bounded in cardinality, free of UIDs."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


class BoundedCheck:
    """A readiness check that answers within ``timeout_s`` even when its dependency hangs.

    The check runs in a helper thread; a probe that does not get its result in time fails with
    :class:`ServiceUnavailable`. A check still running from an earlier probe is waited on again
    instead of starting another, so a hung dependency holds at most one thread, not one per probe.
    For dependencies whose client has no timeout of its own (a database connection from the pool).
    """

    def __init__(self, check: ReadyCheck, timeout_s: float, what: str) -> None:
        self.check, self.timeout_s, self.what = check, timeout_s, what
        self._lock = threading.Lock()
        self._pending: Future[None] | None = None

    def _run(self, future: Future[None]) -> None:
        try:
            self.check()
        except BaseException as exc:  # handed to the probe that waits for it
            future.set_exception(exc)
        else:
            future.set_result(None)

    def __call__(self) -> None:
        with self._lock:
            if self._pending is None or self._pending.done():
                self._pending = Future()
                threading.Thread(target=self._run, args=(self._pending,), name=f"ready-{self.what}",
                                 daemon=True).start()
            pending = self._pending
        try:
            pending.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise ServiceUnavailable(f"{self.what} did not answer within {self.timeout_s:g} s") from None


METRICS_PATH = "/metrics"
_ON_METRICS_PORT = "dicomlab.metrics_port"
"""WSGI environ key set by :class:`MetricsPortGate`: True when the request came in on the metrics port."""


def is_metrics_request() -> bool:
    """True for a scrape: ``/metrics`` requested on the metrics port."""
    return request.path == METRICS_PATH and bool(request.environ.get(_ON_METRICS_PORT))


class MetricsPortGate:
    """WSGI middleware: the metrics port serves ``/metrics`` only; elsewhere ``/metrics`` is not found.

    Requests on the metrics port never reach the app's other routes, so that port (open to Prometheus)
    is not a second door into the service.
    """

    def __init__(self, wsgi_app: Any, port: int) -> None:
        self.wsgi_app = wsgi_app
        self.port = str(port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        on_metrics_port = str(environ.get("SERVER_PORT", "")) == self.port
        environ[_ON_METRICS_PORT] = on_metrics_port
        if on_metrics_port and environ.get("PATH_INFO") != METRICS_PATH:
            body = json.dumps({"code": HTTPStatus.NOT_FOUND.value, "name": "Not Found",
                               "description": "the metrics port serves /metrics only"}).encode()
            start_response("404 NOT FOUND", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body))),
                                             ("X-Content-Type-Options", "nosniff")])
            return [body]
        result: Iterable[bytes] = self.wsgi_app(environ, start_response)
        return result


def install_common(app: Flask, *, service: str, ready: ReadyCheck | None = None,
                   observe_requests: bool = True) -> None:
    """Register error handlers, ``/healthz``, ``/readyz``, ``/metrics`` and request metrics/logging.

    ``observe_requests=False`` leaves the request metrics and access log to the app (the proxy, whose
    bodies are still streaming when ``after_request`` runs, records them when the last byte has left).
    """
    register_error_handlers(app)

    @app.after_request
    def _nosniff(response: Response) -> Response:
        # Browsers must take our JSON (and everything else) for what its Content-Type says.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        if ready is not None:
            try:
                ready()
            except ServiceError as exc:
                return jsonify(status="not ready", reason=exc.description), HTTPStatus.SERVICE_UNAVAILABLE
        return jsonify(status="ready"), HTTPStatus.OK

    app.wsgi_app = MetricsPortGate(app.wsgi_app, metrics_port())  # type: ignore[method-assign]

    @app.get(METRICS_PATH)
    def metrics() -> Response:
        if not is_metrics_request():
            abort(HTTPStatus.NOT_FOUND)  # exactly like an unknown route on the public port
        body, content_type = render_latest()
        return Response(body, content_type=content_type)

    if not observe_requests:
        return

    @app.before_request
    def _start_timer() -> None:
        g.dicomlab_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("dicomlab_started")
        if started is None:
            return response
        elapsed = time.perf_counter() - started
        route = route_label()
        if route in (METRICS_PATH, "/healthz", "/readyz"):
            return response
        method = method_label(request.method)
        HTTP_REQUESTS.labels(service, method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(service, method, route).observe(elapsed)
        access_logger.info(
            "%s %s %d", request.method, route, response.status_code,
            extra={"method": request.method, "route": route, "status": response.status_code,
                   "duration_ms": round(elapsed * 1000, 2),
                   "bytes": response.content_length if not response.is_streamed else None},
        )
        return response
