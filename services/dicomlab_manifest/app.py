"""The manifest service's Flask app: ``gunicorn 'dicomlab_manifest.app:create_app()'``."""

from __future__ import annotations

import logging

from flask import Flask

from dicomlab_core.appfactory import InitStep, build_app, load_once, require_secrets
from dicomlab_core.errors import ConfigError
from dicomlab_manifest import routes
from dicomlab_manifest.config import PREFIX, Config
from dicomlab_manifest.service import ManifestService

logger = logging.getLogger(__name__)

REQUIRED_SECRETS = (("patient_key_secret",), ("service_token",), ("orthanc", "password"))
"""Secrets the deployed service cannot start without (the chart and the local stack set them)."""
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest request body (a selection spec is a few kB)."""


def create_app(config: Config | None = None, *, service: ManifestService | None = None,
               resume_jobs: bool = True) -> Flask:
    """Build the app: config, Orthanc client and store, job runner, routes, health and metrics."""
    from_env = config is None
    config = load_once(config, Config, PREFIX, required=REQUIRED_SECRETS)
    if not from_env:  # loading validated it; a config given by the caller is checked here, once
        try:
            config.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        require_secrets(config, PREFIX, [("service_token",)])  # the bearer token callers of the API present
    manifests = service or ManifestService(config)

    def ready() -> None:
        manifests.client.ping()  # one short try (ORTHANC__PROBE_TIMEOUT), never the retried 60 s path

    def register_service(app: Flask) -> None:
        app.extensions["dicomlab_manifest"] = manifests

    def resume(app: Flask) -> None:
        if resume_jobs:
            manifests.runner.resume_unfinished()

    return build_app(
        __name__, service="manifest", config=config, configure_logs=from_env, log_level=config.log_level,
        steps=[
            InitStep("the manifest service: Orthanc client, object store, job runner", register_service),
            InitStep("resume the builds a previous process left unfinished", resume),
        ],
        routes=[routes.blueprint],
        ready=ready, max_content_length=MAX_REQUEST_BYTES,
    )
