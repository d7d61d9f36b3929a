"""The manifest service's Flask app: ``gunicorn 'dicomlab_manifest.app:create_app()'``."""

from __future__ import annotations

import logging

from flask import Flask

from dicomlab_core.config import load_config, masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.logging import configure_logging
from dicomlab_core.web import install_common
from dicomlab_manifest import routes
from dicomlab_manifest.config import PREFIX, Config
from dicomlab_manifest.service import ManifestService

logger = logging.getLogger(__name__)


def create_app(config: Config | None = None, *, service: ManifestService | None = None,
               resume_jobs: bool = True) -> Flask:
    """Build the app: config, Orthanc client and store, job runner, routes, health and metrics."""
    if config is None:
        config = load_config(Config, PREFIX)
        configure_logging(config.log_level, service="manifest")
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not config.service_token:
        raise ConfigError(f"{PREFIX}__SERVICE_TOKEN is required (the bearer token callers of the API present)")
    logger.info("manifest service configuration", extra={"config": masked(config)})
    service = service or ManifestService(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.extensions["dicomlab_manifest"] = service

    def ready() -> None:
        service.client.ping()  # one short try (ORTHANC__PROBE_TIMEOUT), never the retried 60 s path

    install_common(app, service="manifest", ready=ready)
    app.register_blueprint(routes.blueprint)
    if resume_jobs:
        service.runner.resume_unfinished()
    return app
