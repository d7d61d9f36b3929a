"""The pre-annotation contract: the request Ground Truth sends for one data object, and our answer.

Request: ``{"version": "2018-10-16", "labelingJobArn": "<arn>", "dataObject": {<one input manifest line>}}``.
Response: ``{"taskInput": {...}, "isHumanAnnotationRequired": true}``; ``taskInput`` becomes ``task.input``
in the worker template. The flag is a boolean in the documentation, the reference sample sent the string
``"true"``: :func:`human_annotation_required` reads both, :func:`response` writes the boolean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth.input_manifest import ManifestError, ManifestLine, parse_manifest_line

DATA_OBJECT_KEY = "dataObject"
JOB_ARN_KEY = "labelingJobArn"
TASK_INPUT_KEY = "taskInput"
HUMAN_REQUIRED_KEY = "isHumanAnnotationRequired"


@dataclass(frozen=True)
class PreAnnotationRequest:
    """The validated fields of a pre-annotation event."""

    line: ManifestLine
    """The data object: one input manifest line, every key kept."""
    job_arn: Any
    """``labelingJobArn`` as sent (not checked: only used to name the job)."""


def parse_request(event: Any) -> PreAnnotationRequest:
    """Validate a pre-annotation event; :class:`BadRequest` names what is wrong."""
    if not isinstance(event, Mapping) or not isinstance(event.get(DATA_OBJECT_KEY), Mapping):
        raise BadRequest(f"pre-annotation request needs a '{DATA_OBJECT_KEY}' object")
    try:
        line = parse_manifest_line(event[DATA_OBJECT_KEY], where=DATA_OBJECT_KEY)
    except ManifestError as exc:
        raise BadRequest(exc.description) from None
    return PreAnnotationRequest(line=line, job_arn=event.get(JOB_ARN_KEY))


def response(task_input: Mapping[str, Any], *, human_required: bool = True) -> dict[str, Any]:
    """The pre-annotation response for one data object."""
    return {TASK_INPUT_KEY: dict(task_input), HUMAN_REQUIRED_KEY: human_required}


def human_annotation_required(answer: Mapping[str, Any]) -> bool:
    """Read ``isHumanAnnotationRequired`` as Ground Truth does: the boolean, or the string "true"."""
    value = answer.get(HUMAN_REQUIRED_KEY)
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")
