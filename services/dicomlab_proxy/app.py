"""The DICOMweb CORS proxy: the only door from browsers to the PACS.

``gunicorn -c python:dicomlab_core.gunicorn_conf 'dicomlab_proxy.app:create_app()'`` (gthread
workers: bodies stream). See :mod:`dicomlab_proxy.routes` for what is reachable,
:mod:`dicomlab_proxy.access` for tokens and scope, :mod:`dicomlab_proxy.streaming` for the upstream.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from dicomlab_core.appfactory import InitStep, build_app, load_once
from dicomlab_core.errors import ServiceUnavailable
from dicomlab_proxy import hardening, observe, routes
from dicomlab_proxy.config import PREFIX, Config
from dicomlab_proxy.cors import Cors

logger = logging.getLogger(__name__)

REQUIRED_SECRETS = (("token_keys",), ("orthanc", "password"))
"""Secrets the deployed proxy cannot start without (the chart and the local stack set them)."""


def create_app(config: Config | None = None) -> Flask:
    """Build the proxy app from ``config`` (default: from the environment)."""
    from_env = config is None
    config = load_once(config, Config, PREFIX, required=REQUIRED_SECRETS)
    state = routes.new_state(config)
    methods = ("GET", "HEAD", "OPTIONS", *(("POST",) if config.stow_enabled else ()))
    cors = Cors(config.allowed_origins, max_age=config.cors_max_age, methods=methods)

    def ready() -> None:
        if not state.upstream.ping(config.ready_timeout):
            raise ServiceUnavailable("the PACS is not reachable")

    def quiet_urllib3(app: Flask) -> None:
        # Defence in depth: urllib3 (libraries use it; the proxy has its own client) logs request lines,
        # query included, at DEBUG, and tokens and QIDO terms must never reach a log.
        logging.getLogger("urllib3").setLevel(logging.WARNING)

    def register_state(app: Flask) -> None:
        app.extensions["dicomlab_proxy"] = state

    def guard(app: Flask) -> None:
        @app.before_request
        def _guard() -> Response | None:
            observe.start()
            hardening.check_target(request.environ, max_query_chars=config.max_query_chars)
            hardening.check_headers(request.environ, max_header_bytes=config.max_header_bytes)
            if request.method == "OPTIONS":
                return cors.preflight(request.headers.get("Origin"),
                                      request.headers.get("Access-Control-Request-Method"))
            return None

    def proxy_routes(app: Flask) -> None:
        routes.register(app, config)

    def response_headers(app: Flask) -> None:
        @app.after_request
        def _headers(response: Response) -> Response:
            cors.decorate(response, request.headers.get("Origin"), preflight=request.method == "OPTIONS")
            if g.get("proxy_identity") is not None and response.status_code < 400:
                # Images and files are fetched cross-origin by the viewers on purpose.
                response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
            return observe.observe(response)

    return build_app(
        __name__, service=observe.SERVICE, config=config, configure_logs=from_env, log_level=config.log_level,
        steps=[
            InitStep("keep urllib3's request lines out of the logs", quiet_urllib3),
            InitStep("the upstream client and token verifier", register_state),
            InitStep("the request guard: size limits, CORS preflights", guard),
        ],
        routes=[proxy_routes, response_headers],
        ready=ready, observe_requests=False,
    )
