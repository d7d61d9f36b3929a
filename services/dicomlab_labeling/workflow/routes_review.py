"""Reviewer endpoints: disagreements first, answers side by side, adjudication (see API.md).

Only reviewers and admins reach these; opening a task's answers is recorded in the audit trail.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Response, jsonify, request

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.groundtruth import AnswerError, parse_worker_answer
from dicomlab_labeling.workflow import audit, gold, results
from dicomlab_labeling.workflow.api_state import body, client_ip, state
from dicomlab_labeling.workflow.auth import current_user, require
from dicomlab_labeling.workflow.jobs import get_job, iso
from dicomlab_labeling.workflow.models import Adjudication, Job, Role, Task
from dicomlab_labeling.workflow.queue import check_answer_size, clean_answer

bp = Blueprint("review", __name__, url_prefix="/review")


def _adjudication_json(adjudication: Adjudication | None, reviewer: str = "") -> dict[str, object] | None:
    if adjudication is None:
        return None
    return {"id": adjudication.id, "taskId": adjudication.task_id, "reviewer": reviewer or adjudication.reviewer_id,
            "findings": adjudication.findings, "rois": adjudication.rois, "note": adjudication.note,
            "createdAt": iso(adjudication.created_at)}


@bp.get("/jobs/<int:job_id>/tasks")
@require(Role.REVIEWER)
def tasks(job_id: int) -> Response:
    which = request.args.get("filter", "disagreements")
    if which not in ("disagreements", "all"):
        raise BadRequest("filter: disagreements or all")
    try:
        limit = max(1, min(int(request.args.get("limit", 50)), 500))
        offset = max(0, int(request.args.get("offset", 0)))
        at_least = float(request.args.get("minDisagreement", 0))
    except ValueError:
        raise BadRequest("limit and offset must be integers, minDisagreement a number") from None
    if not 0.0 <= at_least <= 1.0:
        raise BadRequest("minDisagreement: a number from 0 to 1")
    finding = request.args.get("finding", "")
    reader = request.args.get("reader", "")
    with state().db.session(readonly=True) as session:
        job = get_job(session, job_id)
        if finding and finding not in job.labels:
            raise BadRequest(f"finding: one of the job's labels, not {finding!r}")
        rows = []
        everyone: set[str] = set()
        labels = list(job.labels)
        for item in results.load(session, job):
            if not item.answers:
                continue
            readers = sorted({name for name, _ in item.answers})
            everyone.update(readers)
            if reader and reader not in readers:
                continue
            rows.append({**results.summary(item, job), "readers": readers})
    if which == "disagreements":
        rows = [r for r in rows if r["disagreement"] > 0]
    if finding:
        rows = [r for r in rows if finding in r["disagreeingFindings"]]
    if at_least > 0:
        rows = [r for r in rows if float(r["disagreement"]) >= at_least]
    rows.sort(key=lambda r: (bool(r["adjudicated"]), -float(str(r["disagreement"])), int(str(r["taskId"]))))
    return jsonify(tasks=rows[offset:offset + limit], total=len(rows), offset=offset, limit=limit,
                   readers=sorted(everyone), labels=labels)


@bp.get("/tasks/<int:task_id>")
@require(Role.REVIEWER)
def task_detail(task_id: int) -> Response:
    user = current_user()
    api = state()
    with api.db.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        job = session.get_one(Job, task.job_id)
        everything = results.load(session, job)
        item = next(i for i in everything if i.task.id == task_id)
        # The same consolidation as export: gold images apart (a gold image is shown on its own).
        if item.task.gold is None:
            pool, consolidated = gold.consolidate(everything, list(job.labels), api.config.consolidation)
        else:
            pool = [item]
            consolidated = results.consolidate_job(pool, list(job.labels), api.config.consolidation)
        index = [i.task.id for i in pool].index(task_id)
        label = consolidated.labels[index]
        token, expires = api.image_token(task, job, f"review:{user.id}")
        reviewer = item.adjudication.reviewer.username if item.adjudication is not None else ""
        audit.record(session, audit.Action.ANSWERS_VIEWED, user=user, job_id=job.id, task_id=task.id,
                     client_ip=client_ip())
        out = {"task": results.summary(item, job), "image": api.image_json(task, job), "token": token,
               "tokenExpiresAt": expires, "labels": list(job.labels),
               "patient": api.patient_json(task, job),
               "answers": [{"reader": reader, "version": s.version, "findings": s.answer.get("findings", {}),
                            "rois": s.answer.get("rois", []), "timeSpentSeconds": s.time_spent_seconds,
                            "submittedAt": iso(s.created_at)} for reader, s in item.answers],
               "consolidated": {k: v.to_json() for k, v in label.findings.items()} if item.answers else {},
               "adjudication": _adjudication_json(item.adjudication, reviewer)}
    return jsonify(out)


@bp.post("/tasks/<int:task_id>/adjudicate")
@require(Role.REVIEWER)
def adjudicate(task_id: int) -> tuple[Response, int]:
    user = current_user()
    data = body()
    with state().db.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        job = session.get_one(Job, task.job_id)
        answer = {"findings": data.get("findings"), "rois": data.get("rois", [])}
        check_answer_size(answer, state().config.answers, field="adjudication")
        try:
            parsed = parse_worker_answer(answer, worker_id=user.username, labels=list(job.labels))
        except AnswerError as exc:
            raise BadRequest(f"adjudication: {exc.reason}") from None
        clean = clean_answer(parsed, list(job.labels))
        note = data.get("note", "")
        adjudication = Adjudication(task_id=task.id, job_id=job.id, reviewer_id=user.id, findings=clean["findings"],
                                    rois=clean["rois"], note=str(note)[:5000])
        session.add(adjudication)
        session.flush()
        audit.record(session, audit.Action.ADJUDICATED, user=user, job_id=job.id, task_id=task.id,
                     client_ip=client_ip(), adjudication=adjudication.id)
        view = _adjudication_json(adjudication, user.username)
    return jsonify(adjudication=view), HTTPStatus.CREATED
