"""What the labeling app's blueprints share, and how they reach it: :func:`services`.

Blueprints import this module, never :mod:`dicomlab_labeling.app` (which imports the blueprints), so the
app and its features form no import cycle (an import-linter contract keeps it so). Each wing's own state
is a typed object built by a named start-up step of ``create_app`` and kept by the wing:
the self-hosted workflow's :class:`~dicomlab_labeling.workflow.api_state.ApiState` (database, queue,
store) and the Ground Truth wing's callback context (:mod:`dicomlab_labeling.groundtruth.routes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from flask import current_app

from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import TokenSigner, signer_from_entries
from dicomlab_labeling.config import LabelingConfig

EXTENSION_KEY = "dicomlab_labeling"


@dataclass
class LabelingServices:
    """What every blueprint shares: the config and the clients built from it (lazily, once)."""

    config: LabelingConfig
    ready_checks: list[Callable[[], None]] = field(default_factory=list)
    """Called by ``/readyz``; each raises a ``ServiceError`` when a dependency is not ready."""

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
