"""Write consolidated findings back to the PACS as DICOM Comprehensive SR (highdicom), via STOW-RS.

One SR per labelled image, in the image's study, referencing the image (an IMAGE content item and
the evidence sequence). Content tree (root CONTAINER, each child by CONTAINS)::

    CONTAINER  (99DCMLAB, LBLREPORT, "Consolidated image labels")
      IMAGE    (99DCMLAB, SRCIMG, "Source image")            -> the labelled instance
      TEXT     (99DCMLAB, LBLJOB, "Labeling job")            = job name
      TEXT     (99DCMLAB, LBLMETHOD, "Consolidation method") = majority | dawid-skene | adjudicated
      CODE     <finding>  = present (SCT 52101004) | absent (SCT 2667000) | uncertain (SCT 42425007 Equivocal)
        NUM    (99DCMLAB, LBLCONF, "Consolidation confidence")  HAS PROPERTIES, UCUM "1"
        NUM    (99DCMLAB, LBLAGREE, "Reader agreement")          HAS PROPERTIES, UCUM "1"

Findings are SNOMED CT concepts where the CheXpert observation has a clear one (Cardiomegaly,
Pneumothorax, ...), else a code of the private scheme ``99DCMLAB`` derived from the label name
(see :data:`SNOMED_FINDINGS` and :func:`finding_code`).

Idempotent re-export: the SR's Series Instance UID is derived from (job, image), its SOP Instance UID
from (job, image, content). An unchanged label finds its SR already in Orthanc and is skipped; a
changed one (after adjudication) is stored and the superseded SR of that series is deleted, so the
PACS holds exactly one SR per job and image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import pydicom
from pydicom.uid import generate_uid

from dicomlab_core.errors import ServiceError
from dicomlab_core.groundtruth import ConsolidatedLabel
from dicomlab_core.labels import FindingState
from dicomlab_core.orthanc import OrthancClient, ResourceLevel
from dicomlab_labeling.models import Job
from dicomlab_labeling.results import TaskAnswers

logger = logging.getLogger(__name__)

SCHEME = "99DCMLAB"
UID_PREFIX = "2.25."
SR_SERIES_NUMBER = 9901
MANUFACTURER = "dicomlab"

REPORT = hd.sr.CodedConcept("LBLREPORT", SCHEME, "Consolidated image labels")
SOURCE_IMAGE = hd.sr.CodedConcept("SRCIMG", SCHEME, "Source image")
JOB = hd.sr.CodedConcept("LBLJOB", SCHEME, "Labeling job")
METHOD = hd.sr.CodedConcept("LBLMETHOD", SCHEME, "Consolidation method")
CONFIDENCE = hd.sr.CodedConcept("LBLCONF", SCHEME, "Consolidation confidence")
AGREEMENT = hd.sr.CodedConcept("LBLAGREE", SCHEME, "Reader agreement")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")

STATES = {FindingState.PRESENT: hd.sr.CodedConcept("52101004", "SCT", "Present"),
          FindingState.ABSENT: hd.sr.CodedConcept("2667000", "SCT", "Absent"),
          FindingState.UNCERTAIN: hd.sr.CodedConcept("42425007", "SCT", "Equivocal")}

SNOMED_FINDINGS = {
    "Cardiomegaly": ("8186001", "Cardiomegaly"),
    "Pneumothorax": ("36118008", "Pneumothorax"),
    "Pleural Effusion": ("60046008", "Pleural effusion"),
    "Pneumonia": ("233604007", "Pneumonia"),
    "Atelectasis": ("46621007", "Atelectasis"),
    "Edema": ("19242006", "Pulmonary edema"),
    "Consolidation": ("95436008", "Lung consolidation"),
    "Fracture": ("125605004", "Fracture of bone"),
}
"""CheXpert observations with an unambiguous SNOMED CT concept; the others use 99DCMLAB codes."""


def finding_code(label: str) -> hd.sr.CodedConcept:
    if label in SNOMED_FINDINGS:
        value, meaning = SNOMED_FINDINGS[label]
        return hd.sr.CodedConcept(value, "SCT", meaning)
    # SH allows 16 characters: the upper-case letters/digits of the label, or a hash when too long.
    compact = "".join(c for c in label.upper() if c.isalnum())
    value = compact if 0 < len(compact) <= 16 else "L" + hashlib.sha1(label.encode()).hexdigest()[:15]  # noqa: S324
    return hd.sr.CodedConcept(value, SCHEME, label[:64])


def _digest(job: Job, label: ConsolidatedLabel) -> str:
    content = {"job": job.name, "method": label.method,
               "findings": {k: [v.value.value, round(v.confidence, 4), round(v.agreement, 4)]
                            for k, v in sorted(label.findings.items())}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def series_uid(job: Job, source: str) -> str:
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["dicomlab-sr-series", job.name, source]))


def instance_uid(job: Job, source: str, label: ConsolidatedLabel) -> str:
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["dicomlab-sr", job.name, source, _digest(job, label)]))


def build_sr(source: pydicom.Dataset, job: Job, orthanc_id: str, label: ConsolidatedLabel,
             labels: Sequence[str]) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR for one image (deterministic UIDs; see the module docstring)."""
    root = hd.sr.ContainerContentItem(name=REPORT)
    items: list[Any] = [
        hd.sr.ImageContentItem(name=SOURCE_IMAGE, referenced_sop_class_uid=source.SOPClassUID,
                               referenced_sop_instance_uid=source.SOPInstanceUID,
                               relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=JOB, value=job.name, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
        hd.sr.TextContentItem(name=METHOD, value=label.method,
                              relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
    ]
    for name in labels:
        consensus = label.findings.get(name)
        if consensus is None:
            continue
        item = hd.sr.CodeContentItem(name=finding_code(name), value=STATES[consensus.value],
                                     relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        item.ContentSequence = hd.sr.ContentSequence([
            hd.sr.NumContentItem(name=CONFIDENCE, value=round(consensus.confidence, 4), unit=NO_UNITS,
                                 relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES),
            hd.sr.NumContentItem(name=AGREEMENT, value=round(consensus.agreement, 4), unit=NO_UNITS,
                                 relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES),
        ], is_root=False)
        items.append(item)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=root, series_instance_uid=series_uid(job, orthanc_id),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=instance_uid(job, orthanc_id, label), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=label.method == "adjudicated",
        series_description=f"dicomlab labels {job.name}"[:64])


def to_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _series_instances(orthanc: OrthancClient, uid: str) -> list[str]:
    found = orthanc.find(ResourceLevel.SERIES, {"SeriesInstanceUID": uid}, expand=True)
    return [str(i) for series in found for i in series.get("Instances", [])]


def write_back(orthanc: OrthancClient, job: Job, final: Sequence[tuple[TaskAnswers, ConsolidatedLabel]]
               ) -> dict[str, int]:
    """Store one SR per image (skipping unchanged ones, replacing superseded ones); returns counts."""
    counts = {"stored": 0, "skipped": 0, "replaced": 0, "failed": 0}
    labels = list(job.labels)
    for item, label in final:
        source_id = item.task.source
        try:
            new_uid = instance_uid(job, source_id, label)
            if orthanc.lookup_instance(new_uid) is not None:
                counts["skipped"] += 1
                continue
            source = pydicom.dcmread(io.BytesIO(orthanc.get_instance_file(source_id)), stop_before_pixels=True)
            report = build_sr(source, job, source_id, label, labels)
            result = orthanc.stow([to_bytes(report)], study_uid=str(source.StudyInstanceUID))
            failed = result.get("00081198")  # FailedSOPSequence
            if isinstance(failed, dict) and failed.get("Value"):
                raise ServiceError("STOW-RS refused the SR")
            counts["stored"] += 1
            new_id = orthanc.lookup_instance(new_uid)
            for old in _series_instances(orthanc, series_uid(job, source_id)):
                if old != new_id:
                    orthanc.delete(ResourceLevel.INSTANCE, old)
                    counts["replaced"] += 1
        except (ServiceError, ValueError, AttributeError) as exc:
            counts["failed"] += 1
            logger.warning("SR write-back failed for task %s: %s", item.task.id, exc)
    return counts
