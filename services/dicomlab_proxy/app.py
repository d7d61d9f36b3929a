"""The DICOMweb CORS proxy: the only door from browsers to the PACS.

``gunicorn -c python:dicomlab_core.gunicorn_conf 'dicomlab_proxy.app:create_app()'`` (gthread
workers: bodies stream). See :mod:`dicomlab_proxy.routes` for what is reachable,
:mod:`dicomlab_proxy.access` for tokens and scope, :mod:`dicomlab_proxy.streaming` for the upstream.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from dicomlab_core.config import masked
from dicomlab_core.errors import ServiceUnavailable
from dicomlab_core.logging import configure_logging
from dicomlab_core.web import install_common
from dicomlab_proxy import hardening, observe, routes
from dicomlab_proxy.config import Config, load
from dicomlab_proxy.cors import Cors

logger = logging.getLogger(__name__)


def create_app(config: Config | None = None) -> Flask:
    """Build the proxy app from ``config`` (default: from the environment)."""
    if config is None:
        config = load()
        configure_logging(config.log_level, service=observe.SERVICE)
    logger.info("proxy configuration", extra={"config": masked(config)})
    # Defence in depth: urllib3 (libraries use it; the proxy has its own client) logs request lines, query
    # included, at DEBUG, and tokens and QIDO terms must never reach a log.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    app = Flask(__name__)
    state = routes.new_state(config)
    app.extensions["dicomlab_proxy"] = state
    methods = ("GET", "HEAD", "OPTIONS", *(("POST",) if config.stow_enabled else ()))
    cors = Cors(config.allowed_origins, max_age=config.cors_max_age, methods=methods)

    def ready() -> None:
        if not state.upstream.ping(config.ready_timeout):
            raise ServiceUnavailable("the PACS is not reachable")

    @app.before_request
    def _guard() -> Response | None:
        observe.start()
        hardening.check_target(request.environ, max_query_chars=config.max_query_chars)
        hardening.check_headers(request.environ, max_header_bytes=config.max_header_bytes)
        if request.method == "OPTIONS":
            return cors.preflight(request.headers.get("Origin"),
                                  request.headers.get("Access-Control-Request-Method"))
        return None

    install_common(app, service=observe.SERVICE, ready=ready, observe_requests=False)
    routes.register(app, config)

    @app.after_request
    def _headers(response: Response) -> Response:
        cors.decorate(response, request.headers.get("Origin"), preflight=request.method == "OPTIONS")
        if g.get("proxy_identity") is not None and response.status_code < 400:
            # Images and files are fetched cross-origin by the viewers on purpose.
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return observe.observe(response)

    return app
