"""Export a job: the Ground Truth output manifest, CSVs, COCO, and optionally DICOM SR back to the PACS.

- ``labeling/<job>/manifests/output/output.manifest`` — one line per answered image, the input
  manifest keys copied through, the consolidated content under the label attribute ``<job>`` and
  ``<job>-metadata`` (written by :func:`dicomlab_core.groundtruth.output_manifest_line`, the same
  code the Ground Truth path uses, so training reads both alike).
- ``labeling/<job>/labels.csv`` — one row per image, one column per finding: 1 present, 0 absent,
  -1 uncertain, empty when nobody answered the image.

Gold-standard images (:mod:`dicomlab_labeling.workflow.gold`) are in none of these files: their answers are
known already and are left out of the consolidation of the ordinary images too.
- ``labeling/<job>/coco.json`` and ``labeling/<job>/chexpert.csv`` — the ROIs as COCO and the labels as
  a CheXpert-style CSV (:mod:`dicomlab_labeling.workflow.export_formats`).

Idempotent: the content depends only on the database (``creation-date`` is the time of the latest
answer/adjudication of the image, not the export time), so a re-export writes the same bytes; SRs
use deterministic UIDs (:mod:`dicomlab_labeling.workflow.sr`).
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

from sqlalchemy.orm import Session

from dicomlab_core.groundtruth import ConsolidatedLabel, dump_line, output_manifest_line
from dicomlab_core.labels import FindingState
from dicomlab_core.objectstore import ObjectStore
from dicomlab_core.orthanc import OrthancClient
from dicomlab_labeling.config import ConsolidationSettings
from dicomlab_labeling.workflow import assist, export_formats, gold, results
from dicomlab_labeling.workflow.models import Job

logger = logging.getLogger(__name__)

ASSISTANCE_SUFFIX = "-assistance"
"""The output manifest key (``<job>-assistance``) of the AI-assistance records; not a label attribute."""
CSV_VALUES = {FindingState.PRESENT: "1", FindingState.ABSENT: "0", FindingState.UNCERTAIN: "-1"}


def manifest_key(job: Job) -> str:
    return f"labeling/{job.name}/manifests/output/output.manifest"


def csv_key(job: Job) -> str:
    return f"labeling/{job.name}/labels.csv"


def coco_key(job: Job) -> str:
    return f"labeling/{job.name}/coco.json"


def chexpert_key(job: Job) -> str:
    return f"labeling/{job.name}/chexpert.csv"


def consolidated_items(session: Session, job: Job,
                       settings: ConsolidationSettings) -> list[tuple[results.TaskAnswers, ConsolidatedLabel]]:
    """Every task with its final label (consensus, or the adjudication where a reviewer decided)."""
    labels = list(job.labels)
    loaded = results.load(session, job)
    items = gold.ordinary(loaded)  # gold images are known answers, not new labels
    answered, consolidated = gold.consolidate([i for i in loaded if i.answers], labels, settings)
    final = {i.task.id: results.apply_adjudication(label, i.adjudication, labels)
             for i, label in zip(answered, consolidated.labels, strict=True)}
    out = []
    for item in items:
        if item.task.id in final:
            out.append((item, final[item.task.id]))
        elif item.adjudication is not None:
            empty = ConsolidatedLabel(findings={}, method="none")
            out.append((item, results.apply_adjudication(empty, item.adjudication, labels)))
    return out


def _creation_date(item: results.TaskAnswers) -> Any:
    stamps = [s.created_at for _, s in item.answers]
    if item.adjudication is not None:
        stamps.append(item.adjudication.created_at)
    return max(stamps)


def _with_assistance(job: Job, item: results.TaskAnswers, line: dict[str, Any]) -> dict[str, Any]:
    """Add ``<job>-assistance`` (what each reader saw of the model) for jobs with AI assistance."""
    entry = assist.export_entry(job, item.task, item.answers)
    if entry is not None:
        line[f"{job.name}{ASSISTANCE_SUFFIX}"] = entry
    return line


def build(session: Session, job: Job, settings: ConsolidationSettings
          ) -> tuple[bytes, bytes, list[tuple[results.TaskAnswers, ConsolidatedLabel]]]:
    """The manifest and CSV bytes, and the final labels (for SR write-back)."""
    labels = list(job.labels)
    final = consolidated_items(session, job, settings)
    by_task = {item.task.id: label for item, label in final}
    lines = [dump_line(_with_assistance(job, item, output_manifest_line(
                 item.task.manifest_line, job.name, label, job_name=job.name, creation_date=_creation_date(item))))
             for item, label in final]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "sop_instance_uid", "study_instance_uid", "series_instance_uid", "answers",
                     "method", *labels])
    for item in gold.ordinary(results.load(session, job)):
        label = by_task.get(item.task.id)
        values = [CSV_VALUES[label.findings[n].value] if label is not None and n in label.findings else ""
                  for n in labels]
        writer.writerow([item.task.source, item.task.sop_instance_uid, item.task.study_instance_uid,
                         item.task.series_instance_uid, len(item.answers), label.method if label else "", *values])
    manifest = ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
    return manifest, buffer.getvalue().encode("utf-8"), final


def export_job(session: Session, job: Job, *, store: ObjectStore, settings: ConsolidationSettings,
               orthanc: OrthancClient | None = None, sr: bool | None = None) -> dict[str, Any]:
    """Write the manifest, the CSVs and COCO (and SRs when ``sr``); returns where and how many.

    ``orthanc`` gives the images' sizes for COCO and is where SRs go; ``sr`` defaults to whether it is given.
    """
    manifest, table, final = build(session, job, settings)
    labels = list(job.labels)
    dimensions = export_formats.orthanc_dimensions(orthanc) if orthanc is not None else None
    store.put_bytes(manifest_key(job), manifest, "application/x-ndjson")
    store.put_bytes(csv_key(job), table, "text/csv")
    store.put_bytes(coco_key(job), export_formats.coco_json(job, final, labels, dimensions), "application/json")
    store.put_bytes(chexpert_key(job), export_formats.chexpert_csv(final, labels), "text/csv")
    outcome: dict[str, Any] = {"manifestUri": store.uri(manifest_key(job)), "csvUri": store.uri(csv_key(job)),
                               "cocoUri": store.uri(coco_key(job)), "chexpertCsvUri": store.uri(chexpert_key(job)),
                               "images": len(final), "sr": None}
    if orthanc is not None and (sr is None or sr):
        from dicomlab_labeling.workflow.sr import write_back

        outcome["sr"] = write_back(orthanc, job, final)
    logger.info("exported labeling job", extra={"job": job.name, "images": len(final)})
    return outcome
