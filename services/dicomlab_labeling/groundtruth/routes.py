"""``/gt/*``: the Ground Truth callbacks over HTTP (the same code as the Lambda handlers).

- ``POST /gt/pre-annotation``: body = Ground Truth's pre-annotation event; answer = its response.
- ``POST /gt/post-annotation``: body = the post-annotation event; answer = the consolidation array.

Ground Truth itself only invokes Lambdas; these endpoints serve a thin Lambda/API-Gateway forwarder,
other schedulers and tests. They require ``Authorization: Bearer <GT__SERVICE_TOKEN>`` unless
``GT__CALLBACK_AUTH=none`` (only behind IAM auth, e.g. API Gateway with AWS_IAM, or a private network).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import Counter

from dicomlab_core import fastjson
from dicomlab_core.errors import BadRequest, ServiceUnavailable, Unauthorized
from dicomlab_labeling.config import CallbackAuth
from dicomlab_labeling.groundtruth import callbacks
from dicomlab_labeling.groundtruth.callbacks import CallbackContext
from dicomlab_labeling.state import LabelingServices, services

logger = logging.getLogger(__name__)

bp = Blueprint("gt", __name__, url_prefix="/gt")

GT_TASKS = Counter("dicomlab_gt_pre_annotations_total", "Ground Truth tasks prepared, by outcome.", ("outcome",))
GT_OBJECTS = Counter("dicomlab_gt_consolidated_objects_total", "Data objects consolidated, by method.",
                     ("method",))
GT_REJECTED = Counter("dicomlab_gt_rejected_answers_total", "Worker answers excluded as malformed.")


EXTENSION_KEY = "dicomlab_labeling_gt"


def setup(app: Flask, shared: LabelingServices) -> CallbackContext:
    """The app's one callback context (it caches the S3/STS clients), sharing the app's clients; a start-up
    step of ``create_app``."""
    ctx = CallbackContext(config=shared.config, orthanc=shared.orthanc, signer=shared.signer)
    app.extensions[EXTENSION_KEY] = ctx
    return ctx


def _context() -> CallbackContext:
    found: CallbackContext = current_app.extensions[EXTENSION_KEY]
    return found


@bp.before_request
def _authenticate() -> None:
    gt = services().config.gt
    if gt.callback_auth is CallbackAuth.NONE:
        return
    if not gt.service_token:
        raise ServiceUnavailable("the Ground Truth callbacks are disabled: set DICOMLAB_LABELING__GT__SERVICE_TOKEN")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(),
                                                             gt.service_token.reveal().encode()):
        raise Unauthorized("a valid service token is required", headers={"WWW-Authenticate": "Bearer"})


def _event() -> Any:
    event = request.get_json(silent=True)
    if event is None:
        raise BadRequest("the request body must be JSON")
    return event


@bp.post("/pre-annotation")
def pre_annotation() -> Response:
    result = callbacks.pre_annotation(_event(), _context())
    GT_TASKS.labels("task" if result["isHumanAnnotationRequired"] else "skipped").inc()
    return jsonify(result)


@bp.post("/post-annotation")
def post_annotation() -> Response:
    response, result = callbacks.post_annotation_with_report(_event(), _context())
    methods: dict[str, int] = {}
    for method in result.columns.methods:  # not result.labels: no typed object per data object
        methods[method] = methods.get(method, 0) + 1
    for method, count in methods.items():
        GT_OBJECTS.labels(method).inc(count)
    GT_REJECTED.inc(len(result.report.rejected))
    # orjson: a batch response is 100s of MB, several times faster to write than with jsonify
    return Response(fastjson.dumps(response), mimetype="application/json")
