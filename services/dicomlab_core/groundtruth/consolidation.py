"""The consolidation (post-annotation) contract: the request Ground Truth sends, the consolidated content
of one data object (the value of the label attribute) and the response entries.

The consolidated content of one data object::

    {"findings": {"Cardiomegaly": {"value": "present", "confidence": 0.93, "agreement": 0.67, "answers": 3}},
     "method": "dawid-skene",
     "workers": [{"workerId": "...", "answer": <the answer exactly as received (usually a JSON string)>}],
     "rejected": [{"workerId": "...", "reason": "...", "answer": <the malformed answer exactly as received>}],
     "notLabeledBy": [{"workerId": "...", "reason": "not labeled: could not load (HTTP 403)", "answer": ...}],
     "flags": ["no-valid-answer"]}

A worker who could not label an object (the worker page's "Skip: could not load") submits
``{"skipped": {"reason": "could not load", "detail": "HTTP 403"}}`` and no findings: parsing raises
:class:`~dicomlab_core.groundtruth.worker_answer.AnswerSkipped` for it, and consolidation lists the worker
under ``notLabeledBy`` (no answer from them, not an answer of absent findings, not a malformed one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth.worker_answer import WorkerAnswer
from dicomlab_core.labels import FindingState, validate_label_set

METADATA_SUFFIX = "-metadata"
"""The suffix of the metadata key next to a label attribute (``<attr>-metadata``)."""


class Flag(StrEnum):
    """Notes on a consolidated object that a reviewer should see."""

    NO_VALID_ANSWER = "no-valid-answer"
    """Nobody gave a valid answer: every finding is uncertain."""
    SINGLE_ANSWER = "single-answer"
    """Only one valid answer: nothing to agree with."""
    TIE = "tie"
    """At least one finding was a present/absent tie settled by the tie rule."""
    NO_FINDING_CONFLICT = "no-finding-conflict"
    """The consensus had No Finding present together with another finding; No Finding was dropped."""


_STATE_TEXT: dict[FindingState, str] = {s: s.value for s in FindingState}


class FindingConsensus(NamedTuple):
    """The consolidated value of one finding on one object (a tuple: 100,000s are built per batch)."""

    value: FindingState
    confidence: float
    """Posterior probability of ``value`` (Dawid–Skene) or the winning vote share (majority), 4 places."""
    agreement: float
    """Fraction of the readers who answered this finding and agree with ``value``, 4 places."""
    answers: int
    """How many readers answered this finding (present/absent/uncertain)."""

    def to_json(self) -> dict[str, Any]:
        return {"value": _STATE_TEXT[self.value], "confidence": self.confidence, "agreement": self.agreement,
                "answers": self.answers}


class RejectedAnswer(NamedTuple):
    """A worker answer excluded from consolidation, kept with its raw text (every raw answer is kept)."""

    worker_id: str
    reason: str
    raw: Any = None
    """The answer exactly as received (None when there was none to keep, e.g. no ``annotationData``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workerId": self.worker_id, "reason": self.reason}
        if self.raw is not None:
            out["answer"] = self.raw
        return out


@dataclass(frozen=True)
class ConsolidatedLabel:
    """The consolidated content of one data object: the value of the label attribute."""

    findings: dict[str, FindingConsensus]
    method: str
    workers: tuple[WorkerAnswer, ...] = ()
    rejected: tuple[RejectedAnswer | tuple[str, str], ...] = ()
    """Answers excluded as malformed: (worker id, reason[, raw answer as received])."""
    flags: tuple[Flag, ...] = ()
    not_labeled: tuple[RejectedAnswer, ...] = ()
    """Workers who said they could not label the object (``AnswerSkipped``): no answer from them."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"findings": {k: v.to_json() for k, v in self.findings.items()},
                               "method": self.method,
                               "workers": [{"workerId": w.worker_id, "answer": w.raw} for w in self.workers]}
        if self.rejected:
            out["rejected"] = [RejectedAnswer(*r).to_json() for r in self.rejected]
        if self.not_labeled:
            out["notLabeledBy"] = [r.to_json() for r in self.not_labeled]
        if self.flags:
            out["flags"] = [f.value for f in self.flags]
        return out


# --------------------------------------------------------------------------------------------- request/response


@dataclass(frozen=True)
class PostAnnotationRequest:
    """The validated fields of a post-annotation (consolidation) event."""

    s3_uri: str
    """``payload.s3Uri``: the annotation file (a JSON array, one entry per data object)."""
    attribute: str
    """``labelAttributeName``: where the consolidated content goes in the output manifest."""
    labels: tuple[str, ...]
    role_arn: str | None
    job_arn: str


def parse_post_request(event: Any, default_labels: Sequence[str]) -> PostAnnotationRequest:
    """Validate a post-annotation event; :class:`BadRequest` names what is wrong.

    ``labelCategories`` (when sent) is the label set; else ``default_labels``.
    """
    if not isinstance(event, Mapping):
        raise BadRequest("post-annotation request must be a JSON object")
    payload = event.get("payload")
    uri = payload.get("s3Uri") if isinstance(payload, Mapping) else None
    if not isinstance(uri, str) or not uri:
        raise BadRequest("post-annotation request needs 'payload.s3Uri'")
    attr = event.get("labelAttributeName")
    if not isinstance(attr, str) or not attr or attr.endswith(METADATA_SUFFIX):
        raise BadRequest("post-annotation request needs a valid 'labelAttributeName'")
    categories = event.get("labelCategories")
    if categories is not None and (not isinstance(categories, list)
                                   or not all(isinstance(c, str) for c in categories)):
        raise BadRequest("'labelCategories' must be a list of strings")
    role = event.get("roleArn")
    labels = validate_label_set(categories, field="labelCategories") if categories else tuple(default_labels)
    return PostAnnotationRequest(uri, attr, labels,
                                 role if isinstance(role, str) and role else None,
                                 str(event.get("labelingJobArn", "")))


def response_entry(object_id: str, attribute: str, content: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of the post-annotation response: the consolidated content of one data object."""
    return {"datasetObjectId": object_id, "consolidatedAnnotation": {"content": {attribute: content}}}
