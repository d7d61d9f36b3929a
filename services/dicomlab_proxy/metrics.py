"""Proxy-specific Prometheus metrics (requests by route/status and latency come from :mod:`dicomlab_core.web`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from dicomlab_core.metrics import LATENCY_BUCKETS_SECONDS

RESPONSE_BYTES = Counter("dicomlab_proxy_response_bytes_total", "Body bytes sent to clients, by route.",
                         ("route",))
STREAM_DURATION = Histogram("dicomlab_proxy_stream_duration_seconds",
                            "Time from request start to the last body byte (or abort), by route and outcome.",
                            ("route", "outcome"), buckets=LATENCY_BUCKETS_SECONDS)
UPSTREAM_ERRORS = Counter("dicomlab_proxy_upstream_errors_total",
                          "Failures talking to Orthanc, by kind (connect, connect_timeout, read_timeout, "
                          "protocol, midstream, status_5xx, auth, deid).", ("kind",))
TOKEN_REJECTIONS = Counter("dicomlab_proxy_token_rejections_total", "Refused tokens, by reason.", ("reason",))
CLIENT_ABORTS = Counter("dicomlab_proxy_client_aborts_total",
                        "Responses abandoned by the client before the last byte, by route.", ("route",))
RATE_LIMITED = Counter("dicomlab_proxy_rate_limited_total", "Requests refused by the per-token rate limit.")
REQUESTS_REFUSED = Counter("dicomlab_proxy_requests_refused_total",
                           "Requests refused before routing (hardening), by reason.", ("reason",))
