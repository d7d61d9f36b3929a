"""Admin endpoints: jobs, progress, readers' throughput, agreement, export, users, audit (see API.md)."""

from __future__ import annotations

import statistics
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import func, select

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_labeling import audit, gold, results
from dicomlab_labeling import metrics_labeling as metrics
from dicomlab_labeling.api_state import body, client_ip, state, user_json
from dicomlab_labeling.auth import create_user, current_user, end_other_sessions, hash_password, require
from dicomlab_labeling.jobs import create_job, get_job, job_json, parse_time, update_job
from dicomlab_labeling.models import Assignment, AssignmentStatus, Job, Role, Submission, Task, User, utcnow

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
            gold_uri=data.get("goldUri"), window_presets=data.get("windowPresets"))
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
    stamps: dict[str, list[Any]] = {}
    for username, seconds, created in firsts:
        if seconds is not None:
            times.setdefault(username, []).append(float(seconds))
        stamps.setdefault(username, []).append(created)
    out = []
    for username in sorted(status):
        spent = times.get(username, [])
        when = sorted(stamps.get(username, []))
        hours = (when[-1] - when[0]) / timedelta(hours=1) if len(when) > 1 else 0.0
        worker = consolidated.report.workers.get(username)
        out.append({"username": username, "submissions": status[username].get(AssignmentStatus.SUBMITTED.value, 0),
                    "skips": status[username].get(AssignmentStatus.SKIPPED.value, 0)
                    + status[username].get(AssignmentStatus.ABANDONED.value, 0),
                    "expired": status[username].get(AssignmentStatus.EXPIRED.value, 0),
                    "meanSecondsPerImage": round(statistics.fmean(spent), 2) if spent else None,
                    "medianSecondsPerImage": round(statistics.median(spent), 2) if spent else None,
                    "imagesPerHour": round((len(when) - 1) / hours, 1) if hours > 0 else None,
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
    findings = {k: v.to_json() for k, v in report.findings.items()}
    metrics.set_agreement(name, {k: v.krippendorff_alpha for k, v in report.findings.items()})
    metrics.set_gold_accuracy(name, gold_report["readers"])
    return jsonify(findings=findings, objects=report.objects, method=api.config.consolidation.method.value,
                   gold=gold_report)


@bp.post("/jobs/<int:job_id>/export")
@require(Role.ADMIN)
def export(job_id: int) -> Response:
    from dicomlab_labeling.export import export_job

    user = current_user()
    api = state()
    with_sr = bool(body().get("sr", False))
    with api.db.session() as session:
        job = get_job(session, job_id)
        outcome = export_job(session, job, store=api.store, settings=api.config.consolidation,
                             orthanc=api.orthanc, sr=with_sr)
        audit.record(session, audit.Action.EXPORTED, user=user, job_id=job.id, client_ip=client_ip(),
                     manifest=outcome["manifestUri"], sr=with_sr)
    return jsonify(outcome)


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
