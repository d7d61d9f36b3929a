"""Admin endpoints: jobs, progress, readers' throughput, agreement, export, users, audit (see API.md)."""

from __future__ import annotations

import statistics
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import func, select

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_labeling.consensus.agreement import alpha_band, kappa_band
from dicomlab_labeling.workflow import assist, audit, gold, metrics, results
from dicomlab_labeling.workflow.api_state import body, client_ip, state, user_json
from dicomlab_labeling.workflow.auth import create_user, current_user, end_other_sessions, hash_password, require
from dicomlab_labeling.workflow.jobs import create_job, get_job, job_json, parse_time, update_job
from dicomlab_labeling.workflow.models import Assignment, AssignmentStatus, Job, Role, Submission, Task, User, utcnow

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/jobs")
@require(Role.ADMIN)
def list_jobs() -> Response:
    with state().db.session(readonly=True) as session:
        return jsonify(jobs=[job_json(session, job) for job in session.scalars(select(Job).order_by(Job.id))])


@bp.post("/jobs")
@require(Role.ADMIN)
def new_job() -> tuple[Response, int]:
    user = current_user()
    api = state()
    data = body()
    manifest = data.get("manifestUri")
    if not isinstance(manifest, str) or not manifest:
        raise BadRequest("manifestUri is required")
    with api.db.session() as session:
        job = create_job(
            session, name=data.get("name", ""), manifest_uri=manifest, store=api.store, orthanc=api.orthanc,
            scope=api.config.read_scope(),
            default_labels=api.config.labels, labels=data.get("labels"),
            readers_per_image=data.get("readersPerImage", api.config.queue.readers_per_image),
            instructions=data.get("instructions", ""), due_date=parse_time(data.get("dueDate"), "dueDate"),
            allow_patient_identifiers=bool(data.get("allowPatientIdentifiers", False)),
            strategy=data.get("strategy", "fewest-answers-first"),
            lease_seconds=data.get("leaseSeconds", api.config.queue.lease_seconds), created_by=user.id,
            gold_uri=data.get("goldUri"), ai_assistance=data.get("aiAssistance", "off"),
            window_presets=data.get("windowPresets"), default_finding_state=data.get("defaultFindingState"))
        audit.record(session, audit.Action.JOB_CREATED, user=user, job_id=job.id, client_ip=client_ip(),
                     name=job.name)
        view = _admin_job_json(session, job)
    return jsonify(view), HTTPStatus.CREATED


@bp.get("/jobs/<int:job_id>")
@require(Role.ADMIN)
def show_job(job_id: int) -> Response:
    with state().db.session(readonly=True) as session:
        return jsonify(_admin_job_json(session, get_job(session, job_id)))


def _admin_job_json(session: Any, job: Job) -> dict[str, Any]:
    """The job as readers see it plus its gold-standard source and count (admins only)."""
    view = job_json(session, job)
    images = session.scalar(select(func.count(Task.id)).where(Task.job_id == job.id, Task.gold.is_not(None)))
    view["gold"] = {"goldUri": job.gold_uri, "images": int(images or 0)}
    return view


@bp.patch("/jobs/<int:job_id>")
@require(Role.ADMIN)
def change_job(job_id: int) -> Response:
    user = current_user()
    data = body()
    with state().db.session() as session:
        job = update_job(session, get_job(session, job_id), data)
        audit.record(session, audit.Action.JOB_CHANGED, user=user, job_id=job.id, client_ip=client_ip(),
                     fields=sorted(data))
        return jsonify(job_json(session, job))


@bp.delete("/jobs/<int:job_id>")
@require(Role.ADMIN)
def delete_job(job_id: int) -> tuple[str, int]:
    user = current_user()
    with state().db.session() as session:
        job = get_job(session, job_id)
        audit.record(session, audit.Action.JOB_DELETED, user=user, job_id=job.id, client_ip=client_ip(),
                     name=job.name)
        session.delete(job)
    return "", HTTPStatus.NO_CONTENT


@bp.get("/jobs/<int:job_id>/progress")
@require(Role.ADMIN)
def progress(job_id: int) -> Response:
    api = state()
    with api.db.session() as session:
        job = get_job(session, job_id)
        api.queue.release_expired(session, job.id)
        counts = job_json(session, job)["counts"]
        by_status = dict(session.execute(select(Assignment.status, func.count(Assignment.id))
                                         .where(Assignment.job_id == job.id).group_by(Assignment.status)).all())
        oldest = session.scalar(select(func.min(Task.created_at))
                                .where(Task.job_id == job.id, Task.taken < job.readers_per_image))
    return jsonify(images=counts["images"], complete=counts["complete"], answers=counts["answers"],
                   needed=counts["needed"], activeLeases=by_status.get(AssignmentStatus.ACTIVE.value, 0),
                   expiredLeases=by_status.get(AssignmentStatus.EXPIRED.value, 0),
                   skipped=by_status.get(AssignmentStatus.SKIPPED.value, 0)
                   + by_status.get(AssignmentStatus.ABANDONED.value, 0),
                   oldestWaitingSeconds=(utcnow() - oldest).total_seconds() if oldest else 0.0)


@bp.get("/jobs/<int:job_id>/readers")
@require(Role.ADMIN)
def readers(job_id: int) -> Response:
    api = state()
    with api.db.session(readonly=True) as session:
        job = get_job(session, job_id)
        loaded = results.load(session, job)
        consolidated = gold.consolidate(loaded, list(job.labels), api.config.consolidation)[1]
        scores = gold.report(loaded)["readers"]
        rows = session.execute(select(User.username, Assignment.status, func.count(Assignment.id))
                               .join(User, User.id == Assignment.user_id).where(Assignment.job_id == job.id)
                               .group_by(User.username, Assignment.status)).all()
        firsts = session.execute(select(User.username, Submission.time_spent_seconds, Submission.created_at)
                                 .join(User, User.id == Submission.user_id)
                                 .where(Submission.job_id == job.id, Submission.version == 1)).all()
    status: dict[str, dict[str, int]] = {}
    for username, state_, count in rows:
        status.setdefault(username, {})[state_] = int(count)
    times: dict[str, list[float]] = {}
    for username, seconds, _created in firsts:
        if seconds is not None:
            times.setdefault(username, []).append(float(seconds))
    out = []
    for username in sorted(status):
        spent = times.get(username, [])
        worker = consolidated.report.workers.get(username)
        out.append({"username": username, "submissions": status[username].get(AssignmentStatus.SUBMITTED.value, 0),
                    "skips": status[username].get(AssignmentStatus.SKIPPED.value, 0)
                    + status[username].get(AssignmentStatus.ABANDONED.value, 0),
                    "expired": status[username].get(AssignmentStatus.EXPIRED.value, 0),
                    "meanSecondsPerImage": round(statistics.fmean(spent), 2) if spent else None,
                    "medianSecondsPerImage": round(statistics.median(spent), 2) if spent else None,
                    # From the time spent reading (not wall-clock gaps between submissions, which
                    # count pauses and are meaningless for readers who answer in bursts).
                    "imagesPerHour": round(3600.0 / statistics.fmean(spent), 1)
                    if spent and statistics.fmean(spent) > 0 else None,
                    "agreementWithConsensus": round(worker.agreement, 4) if worker and worker.agreement is not None
                    else None,
                    "reliability": round(worker.reliability, 4) if worker and worker.reliability is not None
                    else None,
                    "goldAccuracy": scores.get(username)})
    return jsonify(readers=out)


@bp.get("/jobs/<int:job_id>/agreement")
@require(Role.ADMIN)
def agreement(job_id: int) -> Response:
    api = state()
    with api.db.session(readonly=True) as session:
        job = get_job(session, job_id)
        loaded = results.load(session, job)
        gold_report = gold.report(loaded)
        name = job.name
    report = gold.consolidate([i for i in loaded if i.answers], list(job.labels), api.config.consolidation)[1].report
    findings = {k: {**v.to_json(), "kappaBand": kappa_band(v.fleiss_kappa),
                    "alphaBand": alpha_band(v.krippendorff_alpha)} for k, v in report.findings.items()}
    metrics.set_agreement(name, {k: v.krippendorff_alpha for k, v in report.findings.items()})
    metrics.set_gold_accuracy(name, gold_report["readers"])
    return jsonify(findings=findings, objects=report.objects, method=api.config.consolidation.method.value,
                   gold=gold_report)


@bp.get("/jobs/<int:job_id>/assistance")
@require(Role.ADMIN)
def assistance(job_id: int) -> Response:
    """How readers' final answers relate to the model's after seeing it (see :func:`assist.summary`)."""
    with state().db.session(readonly=True) as session:
        job = get_job(session, job_id)
        loaded = gold.ordinary(results.load(session, job))
        return jsonify(assist.summary(job, [(item.task, item.answers) for item in loaded]))


@bp.get("/jobs/<int:job_id>/activity")
@require(Role.ADMIN)
def activity(job_id: int) -> Response:
    """Chart data: images per reader per UTC day, every first answer's time spent, and each reader's
    agreement with the consensus per finding (the share of their answers equal to the consensus)."""
    api = state()
    with api.db.session(readonly=True) as session:
        job = get_job(session, job_id)
        loaded = results.load(session, job)
        pool, consolidated = gold.consolidate(loaded, list(job.labels), api.config.consolidation)
        labels = list(job.labels)
        firsts = session.execute(select(User.username, Submission.time_spent_seconds, Submission.created_at)
                                 .join(User, User.id == Submission.user_id)
                                 .where(Submission.job_id == job.id, Submission.version == 1)).all()
    per_day: dict[str, dict[str, int]] = {}
    seconds: list[float] = []
    for username, spent, created in firsts:
        day = created.date().isoformat()
        per_day.setdefault(username, {})
        per_day[username][day] = per_day[username].get(day, 0) + 1
        if spent is not None:
            seconds.append(float(spent))
    hits: dict[str, dict[str, list[int]]] = {}
    for item, label in zip(pool, consolidated.labels, strict=True):
        for reader, submission in item.answers:
            answered = submission.answer.get("findings", {}) or {}
            for name in labels:
                if name not in answered or name not in label.findings:
                    continue
                cell = hits.setdefault(reader, {}).setdefault(name, [0, 0])
                cell[0] += int(answered[name] == label.findings[name].to_json().get("value"))
                cell[1] += 1
    matrix = {reader: {name: round(a / n, 4) if n else None for name, (a, n) in cells.items()}
              for reader, cells in sorted(hits.items())}
    return jsonify(perDay={k: dict(sorted(v.items())) for k, v in sorted(per_day.items())},
                   secondsPerImage=sorted(seconds), labels=labels, readerConsensus=matrix)


@bp.get("/manifests")
@require(Role.ADMIN)
def manifests() -> Response:
    """Input manifests in the service's object store to create jobs from: the manifest service's
    (``*.jsonl`` with a ``*.summary.json`` beside it) and plain ``*.manifest`` files, exports
    (``labeling/``) left out; at most 1000."""
    import json

    store = state().store
    keys = list(store.list(""))
    present = set(keys)
    out: list[dict[str, Any]] = []
    for key in keys:
        if key.startswith("labeling/") or not key.endswith((".jsonl", ".manifest")):
            continue
        entry: dict[str, Any] = {"key": key, "uri": store.uri(key), "name": key.rsplit("/", 1)[-1],
                                 "instances": None, "created": None}
        summary = key.rsplit(".", 1)[0] + ".summary.json"
        if summary in present:
            try:
                data = json.loads(store.get_bytes(summary))
                entry.update(instances=data.get("instances"), created=data.get("created"))
            except (ValueError, NotFound):
                pass
        out.append(entry)
        if len(out) >= 1000:
            break
    return jsonify(manifests=out)


EXPORT_FILES = {"manifest": ("manifest_key", "application/x-ndjson", "output.manifest"),
                "csv": ("csv_key", "text/csv", "labels.csv"),
                "coco": ("coco_key", "application/json", "coco.json"),
                "chexpert": ("chexpert_key", "text/csv", "chexpert.csv")}
"""Exported files an admin may download: name in the URL → (key function in export.py, type, file name)."""


def _downloads(job_id: int) -> dict[str, str]:
    return {kind: f"/api/admin/jobs/{job_id}/export/{kind}" for kind in EXPORT_FILES}


@bp.get("/jobs/<int:job_id>/export/<kind>")
@require(Role.ADMIN)
def download(job_id: int, kind: str) -> Response:
    """One exported file streamed from the object store (so browsers never see store paths)."""
    from dicomlab_labeling.workflow import export as export_module

    if kind not in EXPORT_FILES:
        raise NotFound(f"no export file {kind!r} (one of {', '.join(EXPORT_FILES)})")
    key_function, content_type, filename = EXPORT_FILES[kind]
    api = state()
    with api.db.session(readonly=True) as session:
        job = get_job(session, job_id)
        key = getattr(export_module, key_function)(job)
        name = job.name
    if not api.store.exists(key):
        raise NotFound(f"job {name!r} has not been exported yet")
    data = api.store.get_bytes(key)
    return Response(data, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{name}-{filename}"', "Cache-Control": "no-store"})


@bp.post("/jobs/<int:job_id>/export")
@require(Role.ADMIN)
def export(job_id: int) -> Response:
    from dicomlab_labeling.workflow.export import export_job

    user = current_user()
    api = state()
    with_sr = bool(body().get("sr", False))
    with api.db.session() as session:
        job = get_job(session, job_id)
        outcome = export_job(session, job, store=api.store, settings=api.config.consolidation,
                             orthanc=api.orthanc, sr=with_sr)
        audit.record(session, audit.Action.EXPORTED, user=user, job_id=job.id, client_ip=client_ip(),
                     manifest=outcome["manifestUri"], sr=with_sr)
    return jsonify({**outcome, "downloads": _downloads(job_id)})


@bp.get("/users")
@require(Role.ADMIN)
def users() -> Response:
    with state().db.session(readonly=True) as session:
        return jsonify(users=[user_json(u) for u in session.scalars(select(User).order_by(User.id))])


@bp.post("/users")
@require(Role.ADMIN)
def new_user() -> tuple[Response, int]:
    admin = current_user()
    data = body()
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        raise BadRequest("password: a string")
    with state().db.session() as session:
        user = create_user(session, str(data.get("username", "")), password=password,
                           role=data.get("role", Role.ANNOTATOR.value), email=str(data.get("email", "")))
        audit.record(session, audit.Action.USER_CREATED, user=admin, client_ip=client_ip(), target=user.username,
                     role=user.role)
        view = user_json(user)
    return jsonify(view), HTTPStatus.CREATED


@bp.patch("/users/<int:user_id>")
@require(Role.ADMIN)
def change_user(user_id: int) -> Response:
    admin = current_user()
    data = body()
    with state().db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        if "role" in data:
            try:
                user.role = Role(data["role"]).value
            except ValueError:
                raise BadRequest(f"role: one of {', '.join(r.value for r in Role)}") from None
        if "active" in data:
            user.active = bool(data["active"])
        if "email" in data:
            user.email = str(data["email"])
        if "password" in data:
            user.password_hash = hash_password(str(data["password"]))
            # A reset password ends the account's sessions (the admin's own current one excepted).
            end_other_sessions(session, user.id, keep=g.login_session.id if user.id == admin.id else None)
        audit.record(session, audit.Action.USER_CHANGED, user=admin, client_ip=client_ip(), target=user.username,
                     fields=sorted(k for k in data if k != "password") + (["password"] if "password" in data else []))
        return jsonify(user_json(user))


@bp.get("/audit")
@require(Role.ADMIN)
def audit_log() -> Response:
    try:
        job_id = int(request.args["jobId"]) if request.args.get("jobId") else None
        limit = int(request.args.get("limit", 100))
    except ValueError:
        raise BadRequest("jobId and limit must be integers") from None
    with state().db.session(readonly=True) as session:
        return jsonify(events=audit.recent(session, job_id=job_id, limit=limit))
