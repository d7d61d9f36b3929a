"""How a sub-command reaches the local stack without importing the ``dicomlab`` CLI that runs it.

The CLI is the top layer; core, services and training never import it. A sub-command that can fall
back on the running local stack (``dicomlab synth --upload``, ``dicomlab manifest`` without
``DICOMLAB_MANIFEST__*``, ``dicomlab train run --local-stack``) asks :func:`local_env` for its
``DICOMLAB_<PACKAGE>__*`` variables; the ``dicomlab`` CLI puts a :data:`LocalEnv` on the parsed
arguments (attribute :data:`ARG`) that reads them from the running stack. Run any other way
(``python -m dicomlab_training``) there is none, and the answer is a clear :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dicomlab_core.errors import ConfigError

LocalEnv = Callable[[str], dict[str, str]]
"""``package -> {"DICOMLAB_<PACKAGE>__...": value}`` for the running local stack."""

ARG = "local_env"
"""The attribute of the parsed arguments holding the :data:`LocalEnv` (set by the ``dicomlab`` CLI)."""


def local_env(args: argparse.Namespace, package: str) -> dict[str, str]:
    """The running local stack's variables for ``package``, or a :class:`ConfigError` saying what to do."""
    provider: LocalEnv | None = getattr(args, ARG, None)
    if provider is None:
        raise ConfigError(f"no local stack here: run it through the `dicomlab` command (after `dicomlab stack up`), "
                          f"or set the DICOMLAB_{package.upper()}__* variables")
    return provider(package)
