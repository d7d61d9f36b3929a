"""One shape for every service's app factory (proxy, manifest, labeling).

Each ``create_app`` reads the same way::

    from_env = config is None
    config = load_once(config, Config, PREFIX, required=REQUIRED_SECRETS)
    return build_app(__name__, service="manifest", config=config, configure_logs=from_env,
                     steps=[InitStep("...", ...), ...], routes=[blueprint, ...], ready=ready)

- the config is loaded (and validated) once: from the environment when none is given, where every
  required secret must be set (:func:`require_secrets`: a :class:`ConfigError` names the variable);
- JSON logging is configured once when the config came from the environment (a test or an embedding
  caller keeps its own logging), and the effective config is logged with secrets masked;
- named start-up steps run in order (each logged at debug), then the common hooks and endpoints
  (:func:`dicomlab_core.web.install_common`), then the routes (blueprints, or functions registering
  routes and hooks on the app).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask

from dicomlab_core.config import env_name, load_config, masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.logging import configure_logging
from dicomlab_core.web import ReadyCheck, install_common

logger = logging.getLogger(__name__)

C = TypeVar("C")

Routes = Blueprint | Callable[[Flask], None]
"""A blueprint to register, or a function adding routes and hooks to the app."""


@dataclass(frozen=True)
class InitStep:
    """One named start-up step of an app factory; ``name`` says what it does (it is logged)."""

    name: str
    run: Callable[[Flask], None]


def require_secrets(config: Any, prefix: str, required: Sequence[tuple[str, ...]]) -> None:
    """Raise :class:`ConfigError` naming the variable of the first empty secret among ``required`` (field paths)."""
    for path in required:
        value: Any = config
        for part in path:
            value = getattr(value, part)
        if not value:
            raise ConfigError(f"{env_name(prefix, *path)} is required (a secret) but not set")


def load_once(config: C | None, cls: type[C], prefix: str, *, required: Sequence[tuple[str, ...]] = ()) -> C:
    """The service's config: ``config`` as given, else loaded from ``<prefix>__*`` (which validates it)
    with every secret in ``required`` set. A config given by a caller (a test, an embedding program) is
    taken as it is."""
    if config is not None:
        return config
    loaded = load_config(cls, prefix)
    require_secrets(loaded, prefix, required)
    return loaded


def build_app(import_name: str, *, service: str, config: Any, configure_logs: bool, log_level: str = "INFO",
              steps: Sequence[InitStep] = (), routes: Sequence[Routes] = (), ready: ReadyCheck | None = None,
              observe_requests: bool = True, max_content_length: int | None = None) -> Flask:
    """The Flask app of ``service``: logging, the masked config, the start-up steps, common hooks, routes."""
    if configure_logs:
        configure_logging(log_level, service=service)
    logger.info("%s service configured", service, extra={"config": masked(config)})
    app = Flask(import_name)
    if max_content_length is not None:
        app.config["MAX_CONTENT_LENGTH"] = max_content_length
    for step in steps:
        logger.debug("%s start-up: %s", service, step.name)
        step.run(app)
    install_common(app, service=service, ready=ready, observe_requests=observe_requests)
    for item in routes:
        if isinstance(item, Blueprint):
            app.register_blueprint(item)
        else:
            item(app)
    return app
