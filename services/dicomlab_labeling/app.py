"""The labeling service's app factory: ``gunicorn 'dicomlab_labeling.app:create_app()'``.

``create_app`` reads like a list: config, shared clients, common endpoints, blueprints. Blueprints
reach the shared objects through :func:`services` (``services().orthanc``, ``services().config``);
a new feature adds one line to :func:`blueprints`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flask import Blueprint, Flask, current_app

from dicomlab_core.config import masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import TokenSigner, signer_from_entries
from dicomlab_core.web import install_common
from dicomlab_labeling.config import LabelingConfig, load

logger = logging.getLogger(__name__)

EXTENSION_KEY = "dicomlab_labeling"


@dataclass
class LabelingServices:
    """What every blueprint shares: the config and the clients built from it (lazily, once)."""

    config: LabelingConfig
    ready_checks: list[Callable[[], None]] = field(default_factory=list)
    """Called by ``/readyz``; each raises a ``ServiceError`` when a dependency is not ready."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-app objects a feature builds once (e.g. the Ground Truth callback context)."""

    @cached_property
    def orthanc(self) -> OrthancClient:
        return OrthancClient(self.config.orthanc)

    @cached_property
    def signer(self) -> TokenSigner:
        return signer_from_entries(self.config.token_keys)

    def ready(self) -> None:
        for check in self.ready_checks:
            check()


def services() -> LabelingServices:
    """The :class:`LabelingServices` of the app handling the current request."""
    found: LabelingServices = current_app.extensions[EXTENSION_KEY]
    return found


def blueprints() -> list[Blueprint]:
    """Every feature of the service; add a blueprint here with one line."""
    from dicomlab_labeling.groundtruth.routes import bp as gt_bp
    from dicomlab_labeling.workflow.routes_api import bp as api_bp
    from dicomlab_labeling.workflow.routes_ui import bp as ui_bp

    return [
        gt_bp,
        api_bp,
        ui_bp,
    ]


def _orthanc_ready(shared: LabelingServices) -> None:
    shared.orthanc.ping()  # one short try; raises UpstreamError when Orthanc is unreachable, hung or refuses us


def create_app(config: LabelingConfig | None = None) -> Flask:
    """Build the labeling app from ``config`` (default: the environment)."""
    config = config or load()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    if config.session_secret:
        app.config["SECRET_KEY"] = config.session_secret.reveal()
    shared = LabelingServices(config)
    try:
        shared.signer  # noqa: B018 - parse the key ring now: a bad key stops start-up, not the first request
    except ValueError as exc:
        raise ConfigError(f"DICOMLAB_LABELING__TOKEN_KEYS: {exc}") from None
    shared.ready_checks.append(lambda: _orthanc_ready(shared))
    app.extensions[EXTENSION_KEY] = shared
    logger.info("labeling service configured", extra={"config": masked(config)})
    install_common(app, service="labeling", ready=shared.ready)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    return app
