"""The labeling service's app factory: ``gunicorn 'dicomlab_labeling.app:create_app()'``.

``create_app`` reads like a list: config, shared clients, named start-up steps (:func:`init_steps`: the
token key ring, the database and its migrations, the start-up admin, the Ground Truth callback context),
common endpoints, blueprints. Blueprints reach the shared objects through
:func:`dicomlab_labeling.state.services` and never import this module; a new feature adds one line to
:func:`blueprints` (and, when it owns state, one step to :func:`init_steps`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask

from dicomlab_core.config import masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.web import install_common
from dicomlab_labeling.config import LabelingConfig, load
from dicomlab_labeling.groundtruth import routes as gt_routes
from dicomlab_labeling.state import EXTENSION_KEY, LabelingServices
from dicomlab_labeling.workflow import api_state, routes_api, routes_ui

logger = logging.getLogger(__name__)

InitStep = tuple[str, Callable[[Flask, LabelingServices], None]]
"""A named start-up step: what it does (logged), and the function doing it."""


def blueprints() -> list[Blueprint]:
    """Every feature of the service; add a blueprint here with one line."""
    return [
        gt_routes.bp,
        routes_api.bp,
        routes_ui.bp,
    ]


def _check_token_keys(app: Flask, shared: LabelingServices) -> None:
    try:
        shared.signer  # noqa: B018 - parse the key ring now: a bad key stops start-up, not the first request
    except ValueError as exc:
        raise ConfigError(f"DICOMLAB_LABELING__TOKEN_KEYS: {exc}") from None


def _orthanc_ready(app: Flask, shared: LabelingServices) -> None:
    # one short try per probe; raises UpstreamError when Orthanc is unreachable, hung or refuses us
    shared.ready_checks.append(lambda: shared.orthanc.ping())


def _open_database(app: Flask, shared: LabelingServices) -> None:
    api = api_state.setup(app, shared.config, shared.signer, shared.orthanc)
    shared.ready_checks.append(api.ping)


def _migrate_database(app: Flask, shared: LabelingServices) -> None:
    api_state.migrate(api_state.state_of(app))


def _seed_admin(app: Flask, shared: LabelingServices) -> None:
    api_state.seed_admin(api_state.state_of(app))


def _ground_truth_context(app: Flask, shared: LabelingServices) -> None:
    gt_routes.setup(app, shared)


def init_steps() -> list[InitStep]:
    """What runs once per app before it serves, in order."""
    return [
        ("parse the token signing keys", _check_token_keys),
        ("check Orthanc on /readyz", _orthanc_ready),
        ("open the labeling database", _open_database),
        ("migrate the labeling database to head", _migrate_database),
        ("seed the start-up admin", _seed_admin),
        ("build the Ground Truth callback context", _ground_truth_context),
    ]


def create_app(config: LabelingConfig | None = None) -> Flask:
    """Build the labeling app from ``config`` (default: the environment)."""
    config = config or load()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    if config.session_secret:
        app.config["SECRET_KEY"] = config.session_secret.reveal()
    shared = LabelingServices(config)
    app.extensions[EXTENSION_KEY] = shared
    logger.info("labeling service configured", extra={"config": masked(config)})
    for name, step in init_steps():
        logger.debug("labeling start-up: %s", name)
        step(app, shared)
    install_common(app, service="labeling", ready=shared.ready)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    return app
