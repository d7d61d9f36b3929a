"""AWS Lambda entry points for the Ground Truth callbacks, the same code as ``/gt/*``.

Handler settings: ``dicomlab_labeling.groundtruth.lambda_handlers.pre_annotation`` and
``dicomlab_labeling.groundtruth.lambda_handlers.post_annotation`` (runtime python3.11). Configuration comes from
the same ``DICOMLAB_LABELING__*`` environment variables as the service. The pre-annotation function
needs the token keys, the proxy's public URL and Orthanc (network access from the function's VPC,
its password from the environment); the post-annotation function needs none of them: it reads the
annotation files (with the job's ``roleArn`` assumed, or with its execution role) and consolidates,
so a throwaway signing key is generated for it and the real one never has to be deployed there.
The context is built once per Lambda container and reused across invocations.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dicomlab_core.config import env_name, load_config
from dicomlab_core.logging import configure_logging
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, signer_from_entries
from dicomlab_labeling.config import ENV_PREFIX, LabelingConfig
from dicomlab_labeling.groundtruth import callbacks
from dicomlab_labeling.groundtruth.callbacks import CallbackContext

logger = logging.getLogger(__name__)

_contexts: dict[str, CallbackContext] = {}


def _context(kind: str) -> CallbackContext:
    ctx = _contexts.get(kind)
    if ctx is None:
        configure_logging(os.environ.get("DICOMLAB_LOG_LEVEL", "INFO"), service=f"labeling-lambda-{kind}")
        environ = dict(os.environ)
        if kind == "post":
            environ.setdefault(env_name(ENV_PREFIX, "token_keys"), KeyRing.generate_entry("unused"))
        config = load_config(LabelingConfig, ENV_PREFIX, environ)
        ctx = CallbackContext(config=config, orthanc=OrthancClient(config.orthanc),
                              signer=signer_from_entries(config.token_keys))
        _contexts[kind] = ctx
    return ctx


def pre_annotation(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda handler: Ground Truth pre-annotation (one data object)."""
    return callbacks.pre_annotation(event, _context("pre"))


def post_annotation(event: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    """Lambda handler: Ground Truth post-annotation (consolidation of one annotation file)."""
    return callbacks.post_annotation(event, _context("post"))
