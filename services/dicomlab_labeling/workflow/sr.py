"""Write labels back to the PACS as DICOM SR (TID 1500 Measurement Reports), via STOW-RS.

Per labelled image, in the image's study: one report per reader (their latest answer, person observer
``reader-<user id>``) and one for the consensus (device observer dicomlab) or, after a review, the
adjudication (the reviewer as person observer as well). The content is built by
:func:`dicomlab_labeling.workflow.sr_report.build_report` with highdicom's template classes.

The consensus report carries :func:`dicomlab_labeling.workflow.results.final_rois`: the adjudication's ROIs when
the reviewer drew any, otherwise the readers' ROIs of findings that ended up present.

Idempotent re-export: each report slot (job, image, observer) has its own Series Instance UID
derived from the slot, and its SOP Instance UID derives from the slot and the content. An unchanged
report finds its SR already in Orthanc and is skipped; a changed one (a new answer version, an
adjudication) is stored and the superseded SR of that series is deleted, so the PACS holds exactly
one SR per job, image and observer.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
import pydicom
from pydicom.uid import generate_uid

from dicomlab_core.errors import ServiceError
from dicomlab_core.groundtruth import AnswerError, ConsolidatedLabel, Roi, parse_worker_answer
from dicomlab_core.labels import FindingState
from dicomlab_core.orthanc import OrthancClient, ResourceLevel
from dicomlab_labeling.workflow.models import Job
from dicomlab_labeling.workflow.results import ADJUDICATED, TaskAnswers, final_rois
from dicomlab_labeling.workflow.sr_report import Observer, ReportContent, build_report

logger = logging.getLogger(__name__)

UID_PREFIX = "2.25."
SR_SERIES_NUMBER = 9901
"""Series Number of the consensus/adjudication reports."""
READER_SERIES_NUMBER = 9902
"""Series Number of the per-reader reports."""
CONSENSUS = "consensus"


@dataclass(frozen=True)
class Slot:
    """One report of one image: the consensus, or one reader's."""

    key: str
    """``consensus`` or ``reader-<user id>`` (also the person observer's pseudonym for readers)."""
    content: ReportContent


def reader_pseudonym(user_id: int) -> str:
    """A reader's name in an SR: their database id, never their username (which may be a real name)."""
    return f"reader-{user_id}"


def _uid(*parts: str) -> str:
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=list(parts)))


def series_uid(job: Job, source: str, key: str = CONSENSUS) -> str:
    """The Series Instance UID of a report slot (the consensus keeps the UID earlier versions used)."""
    if key == CONSENSUS:
        return _uid("dicomlab-sr-series", job.name, source)
    return _uid("dicomlab-sr-series", job.name, source, key)


def _digest(content: ReportContent) -> str:
    data = {"findings": {k: v.value for k, v in content.findings.items()},
            "rois": [r.to_json() for r in content.rois], "observer": [content.observer.person, content.observer.device],
            "final": content.final, "description": content.description, "version": 2}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def instance_uid(job: Job, source: str, slot: Slot) -> str:
    return _uid("dicomlab-sr", job.name, source, slot.key, _digest(slot.content))


def _answer(raw: object, labels: Sequence[str]) -> tuple[dict[str, FindingState], tuple[Roi, ...]] | None:
    try:
        parsed = parse_worker_answer(raw, labels=frozenset(labels))
    except AnswerError as exc:
        logger.warning("an answer that cannot be read is left out of the SR", extra={"reason": exc.reason})
        return None
    return parsed.findings, parsed.rois


def _ordered(findings: dict[str, FindingState], labels: Sequence[str]) -> dict[str, FindingState]:
    return {name: findings[name] for name in labels if name in findings}


def slots(job: Job, item: TaskAnswers, label: ConsolidatedLabel) -> Iterator[Slot]:
    """The reports of one image: each reader's, then the consensus/adjudication."""
    labels = list(job.labels)
    for _, submission in item.answers:
        parsed = _answer(submission.answer, labels)
        if parsed is None:
            continue
        findings, drawn = parsed
        key = reader_pseudonym(submission.user_id)
        yield Slot(key, ReportContent(findings=_ordered(findings, labels), rois=drawn, observer=Observer(person=key),
                                      description=f"dicomlab {job.name} {key}"))
    final = {name: c.value for name, c in label.findings.items()}
    person = None
    if label.method == ADJUDICATED and item.adjudication is not None:
        person = f"reviewer-{item.adjudication.reviewer_id}"
    yield Slot(CONSENSUS, ReportContent(findings=_ordered(final, labels), rois=final_rois(item, label, labels),
                                        observer=Observer(person=person, device=True),
                                        description=f"dicomlab {job.name} {label.method}",
                                        final=label.method == ADJUDICATED))


def build_sr(source: pydicom.Dataset, job: Job, orthanc_id: str, slot: Slot) -> hd.sr.Comprehensive3DSR:
    """The SR of one slot for one image, with its deterministic UIDs."""
    tracking = [_uid("dicomlab-roi", job.name, orthanc_id, slot.key, str(i), json.dumps(r.to_json(), sort_keys=True))
                for i, r in enumerate(slot.content.rois)]
    return build_report(source, slot.content, series_instance_uid=series_uid(job, orthanc_id, slot.key),
                        series_number=SR_SERIES_NUMBER if slot.key == CONSENSUS else READER_SERIES_NUMBER,
                        sop_instance_uid=instance_uid(job, orthanc_id, slot), tracking_uids=tracking)


def to_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _series_instances(orthanc: OrthancClient, uid: str) -> list[str]:
    found = orthanc.find(ResourceLevel.SERIES, {"SeriesInstanceUID": uid}, expand=True)
    return [str(i) for series in found for i in series.get("Instances", [])]


def write_back(orthanc: OrthancClient, job: Job, final: Sequence[tuple[TaskAnswers, ConsolidatedLabel]]
               ) -> dict[str, int]:
    """Store every report of every image (skipping unchanged ones, replacing superseded ones); returns counts.

    ``stored``/``skipped``/``replaced``/``failed`` count SRs; ``consensus`` and ``readers`` count the
    reports of each kind that are in the PACS after the call (stored now or already there).
    """
    counts = {"stored": 0, "skipped": 0, "replaced": 0, "failed": 0, "consensus": 0, "readers": 0}
    for item, label in final:
        source_id = item.task.source
        source: pydicom.Dataset | None = None
        for slot in slots(job, item, label):
            try:
                new_uid = instance_uid(job, source_id, slot)
                kind = "consensus" if slot.key == CONSENSUS else "readers"
                if orthanc.lookup_instance(new_uid) is not None:
                    counts["skipped"] += 1
                    counts[kind] += 1
                    continue
                if source is None:
                    source = pydicom.dcmread(io.BytesIO(orthanc.get_instance_file(source_id)), stop_before_pixels=True)
                report = build_sr(source, job, source_id, slot)
                result = orthanc.stow([to_bytes(report)], study_uid=str(source.StudyInstanceUID))
                failed = result.get("00081198")  # FailedSOPSequence
                if isinstance(failed, dict) and failed.get("Value"):
                    raise ServiceError("STOW-RS refused the SR")
                counts["stored"] += 1
                counts[kind] += 1
                new_id = orthanc.lookup_instance(new_uid)
                for old in _series_instances(orthanc, series_uid(job, source_id, slot.key)):
                    if old != new_id:
                        orthanc.delete(ResourceLevel.INSTANCE, old)
                        counts["replaced"] += 1
            except (ServiceError, ValueError, AttributeError) as exc:
                counts["failed"] += 1
                logger.warning("SR write-back failed for task %s (%s): %s", item.task.id, slot.key, exc)
    return counts
