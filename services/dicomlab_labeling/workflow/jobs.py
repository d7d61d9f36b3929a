"""Labeling jobs: created from an input manifest in the object store, one task per image.

A job names its label set (from the request, else the manifest's ``labels``, else the service
default), how many distinct readers each image needs (default 3), instructions, an optional due
date, whether readers may see patient identifiers (default no), the queue strategy and the lease.
Manifest lines are parsed by :mod:`dicomlab_core.groundtruth` and stored whole: export copies every
input key through to the output manifest unchanged. SOP/study/series UIDs come from the manifest's
own keys (the manifest service writes them) or, when missing, from Orthanc.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from dicomlab_core.errors import BadRequest, Conflict, NotFound
from dicomlab_core.groundtruth import ManifestLine, iter_manifest
from dicomlab_core.labels import parse_label_list
from dicomlab_core.objectstore import ObjectStore, StoreScope, open_store
from dicomlab_core.orthanc import OrthancClient
from dicomlab_labeling.workflow import assist, gold
from dicomlab_labeling.workflow.finding_defaults import check_default_finding_state
from dicomlab_labeling.workflow.models import Assignment, AssignmentStatus, Job, JobStatus, Strategy, Task
from dicomlab_labeling.workflow.window_presets import check_window_presets

logger = logging.getLogger(__name__)

MAX_READERS_PER_IMAGE = 50
UNCERTAINTY_KEY = "model-uncertainty"
"""Optional manifest key (0–1) written by model-assisted pre-labeling; drives uncertainty-first."""


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected an ISO 8601 date or time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: {value[:40]!r} is not an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_manifest(uri: str, default_store: ObjectStore, scope: StoreScope | None = None,
                  field: str = "manifestUri") -> list[ManifestLine]:
    """The lines of the manifest at ``uri``: a key in ``default_store``, or an ``s3://``/``file://`` URI inside
    ``scope`` (default: ``default_store`` alone); any other URI is refused with one message."""
    if "://" in uri:
        store_url, key = (scope or StoreScope([default_store.url])).locate(uri, field=field)
        store = default_store if store_url.rstrip("/") == default_store.url.rstrip("/") else open_store(store_url)
    else:
        store, key = default_store, uri
    try:
        data = store.get_bytes(key)
    except NotFound:
        raise BadRequest(f"{field}: no manifest {key!r} in the object store") from None
    return list(iter_manifest(data.decode("utf-8").splitlines()))


def _uids(line: ManifestLine, orthanc: OrthancClient | None) -> tuple[str, str, str]:
    sop, study, series = line.sop_uid, line.study_uid, line.series_uid
    if (not sop or not study or not series) and orthanc is not None and line.source:
        tags = orthanc.instance_tags(line.source)
        sop = sop or str(tags.get("SOPInstanceUID", ""))
        study = study or str(tags.get("StudyInstanceUID", ""))
        series = series or str(tags.get("SeriesInstanceUID", ""))
    return sop or "", study or "", series or ""


def create_job(session: Session, *, name: str, manifest_uri: str, store: ObjectStore,
               orthanc: OrthancClient | None, default_labels: tuple[str, ...], labels: Any = None,
               readers_per_image: int = 3, instructions: str = "", due_date: datetime | None = None,
               allow_patient_identifiers: bool = False, strategy: str = Strategy.FEWEST_ANSWERS_FIRST.value,
               lease_seconds: int = 900, created_by: int | None = None, scope: StoreScope | None = None,
               gold_uri: str | None = None, ai_assistance: str = assist.Mode.OFF.value,
               window_presets: Any = None, default_finding_state: Any = None) -> Job:
    """Create a job and its tasks from the manifest; raises :class:`BadRequest` naming what is wrong.

    ``gold_uri`` adds gold-standard images (see :mod:`dicomlab_labeling.workflow.gold`), each inserted at a
    random place among the manifest's images.
    """
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadRequest("name: 1–100 letters, digits, '-', '_' or '.'")
    if session.scalar(select(Job.id).where(Job.name == name)) is not None:
        raise Conflict(f"a job named {name!r} exists already")
    if not isinstance(readers_per_image, int) or not 1 <= readers_per_image <= MAX_READERS_PER_IMAGE:
        raise BadRequest(f"readersPerImage: an integer from 1 to {MAX_READERS_PER_IMAGE}")
    if not isinstance(lease_seconds, int) or not 10 <= lease_seconds <= 86400:
        raise BadRequest("leaseSeconds: an integer from 10 to 86400")
    strategy = check_strategy(strategy)
    ai_assistance = assist.check_mode(ai_assistance)
    presets = check_window_presets(window_presets)
    default_state = check_default_finding_state(default_finding_state)
    lines = read_manifest(manifest_uri, store, scope)
    if not lines:
        raise BadRequest("manifestUri: the manifest has no lines")
    label_set = parse_label_list(labels, field="labels") if labels is not None else lines[0].labels or default_labels
    if gold_uri is not None and (not isinstance(gold_uri, str) or not gold_uri):
        raise BadRequest("goldUri: a key or URI of a gold file in the object store")
    rng = random.Random()
    entries = _merge_gold(lines, gold_uri, store, scope, list(label_set), rng)
    _check_gold_blinding(ai_assistance, [line.data for line, answers in entries if answers is not None])
    job = Job(name=name, manifest_uri=manifest_uri, labels=list(label_set), readers_per_image=readers_per_image,
              instructions=str(instructions or ""), due_date=due_date,
              allow_patient_identifiers=bool(allow_patient_identifiers), strategy=strategy,
              lease_seconds=lease_seconds, created_by=created_by, gold_uri=gold_uri,
              ai_assistance=ai_assistance, window_presets=presets or None, default_finding_state=default_state)
    session.add(job)
    session.flush()
    known = [float(v) for line, _ in entries if isinstance(v := line.data.get(UNCERTAINTY_KEY), int | float)]
    for position, (line, answers) in enumerate(entries):
        sop, study, series = _uids(line, orthanc)
        uncertainty = line.data.get(UNCERTAINTY_KEY)
        value = float(uncertainty) if isinstance(uncertainty, int | float) else None
        if answers is not None and value is None and known:
            value = rng.choice(known)  # so uncertainty-first does not hand every gold image out last
        session.add(Task(job_id=job.id, position=position, source=line.ref, sop_instance_uid=sop,
                         study_instance_uid=study, series_instance_uid=series,
                         manifest_line=dict(line.data) if answers is None else gold.stored_line(line),
                         uncertainty=value, random_key=rng.random(), gold=answers))
    session.flush()
    return job


def _merge_gold(lines: list[ManifestLine], gold_uri: str | None, store: ObjectStore, scope: StoreScope | None,
                labels: list[str], rng: random.Random) -> list[tuple[ManifestLine, dict[str, str] | None]]:
    """The manifest's lines (repeats dropped) with each gold line and its answers inserted at a random place."""
    entries: list[tuple[ManifestLine, dict[str, str] | None]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if line.ref in seen:
            logger.info("skipping a repeated manifest line", extra={"line": number})
            continue
        seen.add(line.ref)
        entries.append((line, None))
    if gold_uri is None:
        return entries
    gold_lines = read_manifest(gold_uri, store, scope, field="goldUri")
    if not gold_lines:
        raise BadRequest("goldUri: the gold file has no lines")
    for number, line in enumerate(gold_lines, 1):
        if line.ref in seen:
            raise BadRequest(f"goldUri line {number}: {line.ref[:80]!r} is already an image of this job")
        seen.add(line.ref)
        entries.insert(rng.randrange(len(entries) + 1), (line, gold.known_answers(line, labels, number)))
    return entries


def check_strategy(value: Any) -> str:
    try:
        return Strategy(value).value
    except ValueError:
        raise BadRequest(f"strategy: one of {', '.join(s.value for s in Strategy)}") from None


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def update_job(session: Session, job: Job, changes: Mapping[str, Any]) -> Job:
    """Apply a PATCH body (status, instructions, dueDate, strategy, leaseSeconds, allowPatientIdentifiers,
    aiAssistance, windowPresets, defaultFindingState)."""
    allowed = {"status", "instructions", "dueDate", "strategy", "leaseSeconds", "allowPatientIdentifiers",
               "aiAssistance", "windowPresets", "defaultFindingState"}
    unknown = set(changes) - allowed
    if unknown:
        raise BadRequest(f"{sorted(unknown)[0]}: cannot be changed (allowed: {', '.join(sorted(allowed))})")
    if "status" in changes:
        try:
            job.status = JobStatus(changes["status"]).value
        except ValueError:
            raise BadRequest(f"status: one of {', '.join(s.value for s in JobStatus)}") from None
    if "instructions" in changes:
        job.instructions = str(changes["instructions"] or "")
    if "dueDate" in changes:
        job.due_date = parse_time(changes["dueDate"], "dueDate")
    if "strategy" in changes:
        job.strategy = check_strategy(changes["strategy"])
    if "leaseSeconds" in changes:
        value = changes["leaseSeconds"]
        if not isinstance(value, int) or not 10 <= value <= 86400:
            raise BadRequest("leaseSeconds: an integer from 10 to 86400")
        job.lease_seconds = value
    if "allowPatientIdentifiers" in changes:
        job.allow_patient_identifiers = bool(changes["allowPatientIdentifiers"])
    if "aiAssistance" in changes:
        mode = assist.check_mode(changes["aiAssistance"])
        if job.gold_uri:
            _check_gold_blinding(mode, list(session.scalars(
                select(Task.manifest_line).where(Task.job_id == job.id, Task.gold.is_not(None)))))
        job.ai_assistance = mode
    if "windowPresets" in changes:
        job.window_presets = check_window_presets(changes["windowPresets"]) or None
    if "defaultFindingState" in changes:
        job.default_finding_state = check_default_finding_state(changes["defaultFindingState"])
    return job


def _check_gold_blinding(mode: str, gold_lines: Sequence[Mapping[str, Any]]) -> None:
    """With AI assistance on, a gold image must show model predictions like every other image: an empty
    panel would tell the reader which images are gold. Gold lines then come from the same predict run."""
    if mode == assist.Mode.OFF.value:
        return
    missing = sum(1 for data in gold_lines if not isinstance(data.get(assist.PREDICTIONS_KEY), dict))
    if missing:
        raise BadRequest(f"aiAssistance: {missing} gold image(s) have no {assist.PREDICTIONS_KEY}; with AI assistance "
                         "on, gold lines must carry the model's predictions (take them from the predict output), "
                         "or readers could tell gold images apart")


def job_counts(session: Session, job: Job, user_id: int | None = None) -> dict[str, int]:
    images, complete, answers = session.execute(
        select(func.count(Task.id),
               func.coalesce(func.sum(case((Task.answers >= job.readers_per_image, 1), else_=0)), 0),
               func.coalesce(func.sum(Task.answers), 0))
        .where(Task.job_id == job.id)).one()
    counts = {"images": int(images), "complete": int(complete), "answers": int(answers),
              "needed": int(images) * job.readers_per_image}
    if user_id is not None:
        counts["mine"] = int(session.scalar(
            select(func.count(Assignment.id)).where(Assignment.job_id == job.id, Assignment.user_id == user_id,
                                                    Assignment.status == AssignmentStatus.SUBMITTED.value)) or 0)
    return counts


def job_json(session: Session, job: Job, user_id: int | None = None) -> dict[str, Any]:
    return {"id": job.id, "name": job.name, "status": job.status, "labels": list(job.labels),
            "readersPerImage": job.readers_per_image, "instructions": job.instructions,
            "dueDate": iso(job.due_date), "allowPatientIdentifiers": job.allow_patient_identifiers,
            "strategy": job.strategy, "leaseSeconds": job.lease_seconds, "aiAssistance": job.ai_assistance,
            "manifestUri": job.manifest_uri,
            "createdAt": iso(job.created_at), "windowPresets": list(job.window_presets or []),
            "defaultFindingState": job.default_finding_state,
            "counts": job_counts(session, job, user_id)}
