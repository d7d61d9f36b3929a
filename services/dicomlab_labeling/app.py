"""The labeling service's app factory: ``gunicorn 'dicomlab_labeling.app:create_app()'``.

``create_app`` has the shape of every service's factory (:mod:`dicomlab_core.appfactory`): the config
loaded once, named start-up steps (:func:`init_steps`: the token key ring, the database and its
migrations, the start-up admin, the Ground Truth callback context), common endpoints, blueprints.
Blueprints reach the shared objects through :func:`dicomlab_labeling.state.services` and never import
this module; a new feature adds one line to :func:`blueprints` (and, when it owns state, one step to
:func:`init_steps`).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask

from dicomlab_core.appfactory import InitStep, build_app, load_once
from dicomlab_core.errors import ConfigError
from dicomlab_labeling.config import ENV_PREFIX, LabelingConfig
from dicomlab_labeling.groundtruth import routes as gt_routes
from dicomlab_labeling.state import EXTENSION_KEY, LabelingServices
from dicomlab_labeling.workflow import api_state, routes_api, routes_ui

logger = logging.getLogger(__name__)

REQUIRED_SECRETS = (("token_keys",), ("session_secret",), ("orthanc", "password"))
"""Secrets the deployed service cannot start without (the chart and the local stack set them); a config
given to :func:`create_app` directly (tests) may leave the session secret empty (a per-process one)."""


def blueprints() -> list[Blueprint]:
    """Every feature of the service; add a blueprint here with one line."""
    return [
        gt_routes.bp,
        routes_api.bp,
        routes_ui.bp,
    ]


def init_steps(shared: LabelingServices) -> list[InitStep]:
    """What runs once per app before it serves, in order."""

    def register(app: Flask) -> None:
        if shared.config.session_secret:
            app.config["SECRET_KEY"] = shared.config.session_secret.reveal()
        app.extensions[EXTENSION_KEY] = shared

    def check_token_keys(app: Flask) -> None:
        try:
            shared.signer  # noqa: B018 - parse the key ring now: a bad key stops start-up, not the first request
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}__TOKEN_KEYS: {exc}") from None

    def orthanc_ready(app: Flask) -> None:
        # one short try per probe; raises UpstreamError when Orthanc is unreachable, hung or refuses us
        shared.ready_checks.append(lambda: shared.orthanc.ping())

    def open_database(app: Flask) -> None:
        api = api_state.setup(app, shared.config, shared.signer, shared.orthanc)
        shared.ready_checks.append(api.ping)

    def ground_truth_context(app: Flask) -> None:
        gt_routes.setup(app, shared)

    return [
        InitStep("the shared services and the session key", register),
        InitStep("parse the token signing keys", check_token_keys),
        InitStep("check Orthanc on /readyz", orthanc_ready),
        InitStep("open the labeling database", open_database),
        InitStep("migrate the labeling database to head", lambda app: api_state.migrate(api_state.state_of(app))),
        InitStep("seed the start-up admin", lambda app: api_state.seed_admin(api_state.state_of(app))),
        InitStep("build the Ground Truth callback context", ground_truth_context),
    ]


def create_app(config: LabelingConfig | None = None) -> Flask:
    """Build the labeling app from ``config`` (default: the environment)."""
    from_env = config is None
    config = load_once(config, LabelingConfig, ENV_PREFIX, required=REQUIRED_SECRETS)
    shared = LabelingServices(config)
    return build_app(__name__, service="labeling", config=config, configure_logs=from_env,
                     log_level=config.log_level, steps=init_steps(shared), routes=blueprints(),
                     ready=shared.ready, max_content_length=config.max_request_bytes)
