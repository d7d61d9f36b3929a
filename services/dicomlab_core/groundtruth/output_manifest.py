"""The output manifest (``<output>/<job>/manifests/output/output.manifest``, JSON Lines).

:func:`output_manifest_line` writes the Ground Truth shape with the consolidated content
(:class:`~dicomlab_core.groundtruth.consolidation.ConsolidatedLabel`); :func:`read_output_manifest` reads
ours and real Ground Truth output (both metadata spellings; consolidated, raw per-worker or empty ``{}`` +
``worker-response-ref`` content) into :class:`LabeledObject` rows for training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomlab_core.groundtruth.consolidation import METADATA_SUFFIX, ConsolidatedLabel
from dicomlab_core.groundtruth.input_manifest import (
    LABELS_KEY,
    SOURCE_KEY,
    SOURCE_REF_KEY,
    ManifestError,
    ManifestLine,
    parse_manifest_line,
)
from dicomlab_core.groundtruth.worker_answer import (  # the answer module's private helpers: one copy
    _EXACT_STATES,
    AnswerError,
    WorkerAnswer,
    _is_map,
    parse_worker_answer,
)
from dicomlab_core.labels import FindingState

logger = logging.getLogger(__name__)

CUSTOM_TYPE = "groundtruth/custom"
"""The metadata ``type`` we write; ``groundTruth/custom`` is read as the same."""
CREATION_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
"""Ground Truth's ``creation-date`` format (no zone; UTC)."""


def is_custom_type(value: Any) -> bool:
    """Both spellings of the custom task type (``groundtruth/custom``, ``groundTruth/custom``)."""
    return isinstance(value, str) and value.lower() == CUSTOM_TYPE


def output_metadata(job_name: str, *, creation_date: datetime | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``<attr>-metadata`` object, hyphenated lower-case as Ground Truth writes it."""
    when = (creation_date or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    meta: dict[str, Any] = {"type": CUSTOM_TYPE, "job-name": job_name, "human-annotated": "yes",
                            "creation-date": when.strftime(CREATION_DATE_FORMAT)}
    meta.update(extra or {})
    return meta


def output_manifest_line(data_object: ManifestLine | Mapping[str, Any], attribute: str,
                         content: ConsolidatedLabel | Mapping[str, Any], *, job_name: str,
                         creation_date: datetime | None = None,
                         metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One output manifest object: the input keys unchanged, then ``<attr>`` and ``<attr>-metadata``."""
    if not attribute or attribute.endswith(METADATA_SUFFIX):
        raise ManifestError(f"invalid label attribute name {attribute!r}")
    base = data_object.data if isinstance(data_object, ManifestLine) else data_object
    line = {k: v for k, v in base.items() if k not in (attribute, attribute + METADATA_SUFFIX)}
    line[attribute] = content.to_json() if isinstance(content, ConsolidatedLabel) else dict(content)
    line[attribute + METADATA_SUFFIX] = output_metadata(job_name, creation_date=creation_date, extra=metadata)
    return line


@dataclass(frozen=True)
class LabeledObject:
    """One labelled image from an output manifest, in the form training consumes."""

    source: str
    """``source`` (Orthanc ID) or ``source-ref`` (object URI)."""
    labels: tuple[str, ...]
    values: dict[str, float | None]
    """Per label: 1.0 present, 0.0 absent, None uncertain or unanswered."""
    sop_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    attribute: str = ""
    job_name: str | None = None
    confidence: dict[str, float] = field(default_factory=dict)
    """Per label, the consolidation confidence where the manifest has one."""
    worker_response_ref: str | None = None
    """Set when the label attribute was empty and the answers live in a worker-response file."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other key of the line (input keys copied through)."""

    @property
    def is_source_ref(self) -> bool:
        return "://" in self.source


_VALUES = {FindingState.PRESENT: 1.0, FindingState.ABSENT: 0.0, FindingState.UNCERTAIN: None}


def label_attributes(line: Mapping[str, Any]) -> list[str]:
    """The Ground Truth custom label attributes of a manifest line (oldest first by ``creation-date``)."""
    attrs = []
    for key, value in line.items():
        if key.endswith(METADATA_SUFFIX) and isinstance(value, Mapping) and is_custom_type(value.get("type")):
            attr = key[: -len(METADATA_SUFFIX)]
            if attr in line:
                attrs.append(attr)
    return sorted(attrs, key=lambda a: str(line[a + METADATA_SUFFIX].get("creation-date", "")))


def _votes(answers: Iterable[WorkerAnswer], labels: Sequence[str]) -> dict[str, float | None]:
    """Per-label majority of raw answers (ties and uncertain-only → None): a reader's fallback only."""
    present = dict.fromkeys(labels, 0)
    absent = dict.fromkeys(labels, 0)
    for answer in answers:
        for label, state in answer.findings.items():
            if label in present:
                if state is FindingState.PRESENT:
                    present[label] += 1
                elif state is FindingState.ABSENT:
                    absent[label] += 1
    return {label: 1.0 if present[label] > absent[label] else 0.0 if absent[label] > present[label] else None
            for label in labels}


def _answers_from(items: Any, labels: Sequence[str] | None) -> list[WorkerAnswer]:
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        worker = str(item.get("workerId", ""))
        data = item.get("annotationData", item.get("answerContent", item.get("answer", item)))
        content = data.get("content", data) if isinstance(data, Mapping) else data
        try:
            out.append(parse_worker_answer(content, worker_id=worker, labels=labels))
        except AnswerError as exc:
            logger.info("skipping an unreadable worker answer in an output manifest", extra={"reason": exc.reason})
    return out


def _content_values(content: Any, labels: Sequence[str] | None) -> tuple[dict[str, float | None], dict[str, float]]:
    """Values and confidences from a label attribute's content, whichever shape it has."""
    if not isinstance(content, Mapping) or not content:
        return {}, {}
    findings = content.get("findings")
    if isinstance(findings, Mapping) and findings and all(isinstance(v, Mapping) for v in findings.values()):
        values: dict[str, float | None] = {}
        confidence: dict[str, float] = {}
        for label, item in findings.items():
            try:
                state = FindingState(str(item.get("value")))
            except ValueError:
                values[label] = None
                continue
            values[label] = _VALUES[state]
            if isinstance(item.get("confidence"), int | float):
                confidence[label] = float(item["confidence"])
        return values, confidence
    for key in ("annotationsFromAllWorkers", "annotations", "answers"):
        if key in content:
            answers = _answers_from(content[key], labels)
            known = labels or sorted({k for a in answers for k in a.findings})
            return _votes(answers, known), {}
    try:
        single = parse_worker_answer(content, labels=labels)
    except AnswerError:
        return {}, {}
    known = labels or list(single.findings)
    return _votes([single], known), {}


def answer_from_content(content: Any, labels: Sequence[str] | None = None) -> dict[str, Any] | None:
    """A label attribute's content as one clean answer (``{"findings": {label: state}, "rois": [...]}``).

    Used to show a previous job's label in a review/adjustment task. Consolidated content gives its
    consensus states and the ROIs drawn for findings that ended up present; raw answers (one, or
    ``annotationsFromAllWorkers``) give their majority (ties left out) and all their ROIs.
    None when nothing readable is there.
    """
    if not _is_map(content) or not content:
        return None
    findings_in = content.get("findings")
    if _is_map(findings_in) and findings_in and all(_is_map(v) for v in findings_in.values()):
        findings = {label: str(item.get("value")) for label, item in findings_in.items()
                    if str(item.get("value")) in _EXACT_STATES}
        answers = _answers_from([w for w in content.get("workers", []) if _is_map(w)], None)
        rois = [r.to_json() for a in answers for r in a.rois
                if r.finding is None or findings.get(r.finding) == "present"]
        return {"findings": findings, "rois": rois}
    answers = []
    for key in ("annotationsFromAllWorkers", "annotations", "answers"):
        if key in content:
            answers = _answers_from(content[key], labels)
            break
    else:
        try:
            answers = [parse_worker_answer(content, labels=labels)]
        except AnswerError:
            return None
    names = labels or sorted({k for a in answers for k in a.findings})
    votes = _votes(answers, names)
    states = {label: "present" if v == 1.0 else "absent" for label, v in votes.items() if v is not None}
    return {"findings": states, "rois": [r.to_json() for a in answers for r in a.rois]}


def labeled_object(line: Mapping[str, Any], *, attribute: str | None = None, labels: Sequence[str] | None = None,
                   fetch: Callable[[str], bytes] | None = None) -> LabeledObject:
    """Read one output manifest object (see :func:`read_output_manifest`)."""
    base = parse_manifest_line(line, where="output manifest line")
    attrs = label_attributes(line)
    if attribute is None:
        if not attrs:
            raise ManifestError("output manifest line has no Ground Truth custom label attribute")
        # A chained job's line carries every earlier job's attribute: take the newest.
        attribute = attrs[-1]
    elif attribute not in line:
        raise ManifestError(f"output manifest line has no label attribute {attribute!r}")
    meta = line.get(attribute + METADATA_SUFFIX)
    meta = meta if isinstance(meta, Mapping) else {}
    label_set = base.labels or (tuple(labels) if labels else None)
    values, confidence = _content_values(line[attribute], label_set)
    ref = meta.get("worker-response-ref", meta.get("worker_response_ref"))
    if not values and isinstance(ref, str) and fetch is not None:
        try:
            response = json.loads(fetch(ref))
        except ValueError as exc:
            raise ManifestError(f"worker response {ref} is not valid JSON") from exc
        answers = _answers_from(response.get("answers") if isinstance(response, Mapping) else None, label_set)
        values = _votes(answers, label_set or sorted({k for a in answers for k in a.findings}))
    names = label_set or tuple(values)
    skip = {SOURCE_KEY, SOURCE_REF_KEY, LABELS_KEY, attribute, attribute + METADATA_SUFFIX}
    return LabeledObject(
        source=base.ref, labels=tuple(names), values={n: values.get(n) for n in names},
        sop_uid=base.sop_uid, study_uid=base.study_uid, series_uid=base.series_uid, attribute=attribute,
        job_name=meta.get("job-name", meta.get("job_name")), confidence=confidence,
        worker_response_ref=ref if isinstance(ref, str) else None,
        extra={k: v for k, v in line.items() if k not in skip})


def read_output_manifest(lines: Iterable[str | bytes], *, attribute: str | None = None,
                         labels: Sequence[str] | None = None,
                         fetch: Callable[[str], bytes] | None = None) -> Iterator[LabeledObject]:
    """Read a Ground Truth output manifest (ours or AWS's) as :class:`LabeledObject` rows.

    ``attribute`` picks the label attribute (default: the line's Ground Truth custom attribute, the
    newest by ``creation-date`` in chained jobs). ``labels`` is the label set when lines carry none.
    Consolidated content is read as is; raw per-worker answers (``annotationsFromAllWorkers``, the
    reference sample's pass-through output) are reduced by a per-label majority vote with ties as
    None; an empty attribute with a ``worker-response-ref`` is resolved through ``fetch(uri)`` if given.
    """
    for number, text in enumerate(lines, 1):
        line = text.decode("utf-8") if isinstance(text, bytes) else text
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"output manifest line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, Mapping):
            raise ManifestError(f"output manifest line {number}: expected a JSON object")
        try:
            yield labeled_object(data, attribute=attribute, labels=labels, fetch=fetch)
        except ManifestError as exc:
            raise ManifestError(f"output manifest line {number}: {exc.description}") from None
