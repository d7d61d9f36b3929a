"""The self-hosted labeling JSON API (see API.md): sign-in, the reader's queue, leases and answers.

Reviewer and admin endpoints live in :mod:`routes_review` and :mod:`routes_admin`, nested under
this blueprint so they share its authentication and CSRF check. Every answer that acknowledges a
change is sent after the database commit (the ``with state().db.session()`` block has ended).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import select

from dicomlab_core.errors import BadRequest, NotFound, Unauthorized
from dicomlab_core.web import is_metrics_request
from dicomlab_labeling.workflow import assist, audit, drafts, metrics
from dicomlab_labeling.workflow.api_state import (
    EXTENSION_KEY,
    ApiState,
    body,
    client_ip,
    state,
    submission_json,
    user_json,
)
from dicomlab_labeling.workflow.auth import (
    COOKIE_NAME,
    check_csrf,
    current_user,
    end_other_sessions,
    find_session,
    hash_password,
    sso_identity,
    sso_user,
    start_session,
    trusted,
    verify_password,
)
from dicomlab_labeling.workflow.jobs import get_job, iso, job_json
from dicomlab_labeling.workflow.models import (
    Assignment,
    AssignmentStatus,
    Job,
    JobStatus,
    LoginSession,
    Submission,
    Task,
    User,
    utcnow,
)
from dicomlab_labeling.workflow.queue import clean_answer, validate_answer

logger = logging.getLogger(__name__)

bp = Blueprint("labeling_api", __name__, url_prefix="/api")
NO_CSRF_ENDPOINTS = frozenset({"labeling_api.login"})


@bp.before_app_request
def _refresh_gauges() -> None:
    if is_metrics_request():  # a scrape on the metrics port, not a probe of the public one
        try:
            with state().db.session() as session:
                metrics.refresh_queue_gauges(session)
        except Exception:
            logger.warning("could not refresh labeling queue gauges", exc_info=True)


# ------------------------------------------------------------------ authentication of every request


@bp.before_request
def _authenticate() -> None:
    api = state()
    g.labeling_user = None
    g.login_session = None
    auth = api.config.auth
    with api.db.session(readonly=True) as session:
        found = find_session(session, secret=api.session_secret, token=request.cookies.get(COOKIE_NAME, ""))
    if found is not None:
        g.login_session, g.labeling_user = found
    if auth.sso_enabled and trusted(request.remote_addr, auth.trusted_proxies):
        identity = sso_identity(request.headers, user_header=auth.sso_user_header, email_header=auth.sso_email_header)
        if identity is not None and (found is None or found[1].username != identity[0]):
            with api.db.session() as session:
                user = sso_user(session, *identity, auto_create=auth.sso_auto_create)
                token, row = start_session(session, user, secret=api.session_secret, hours=auth.session_hours)
                audit.record(session, audit.Action.LOGIN, user=user, client_ip=client_ip(), method="sso")
            # A fresh session's CSRF token is unknown to the page yet: only safe requests pass below.
            g.labeling_user, g.login_session, g.new_session_token = user, row, token
    if g.labeling_user is not None and request.endpoint not in NO_CSRF_ENDPOINTS:
        check_csrf(g.login_session.csrf_token)


@bp.after_request
def _set_cookie(response: Response) -> Response:
    token = g.get("new_session_token")
    if token:
        auth = state().config.auth
        response.set_cookie(COOKIE_NAME, token, max_age=auth.session_hours * 3600, path="/", httponly=True,
                            secure=auth.cookie_secure, samesite="Strict")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _me(user: User, row: LoginSession) -> Response:
    return jsonify(user=user_json(user), csrfToken=row.csrf_token)


@bp.post("/auth/login")
def login() -> Response:
    api = state()
    data = body()
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise BadRequest("username and password are required")
    limit = api.login_limit
    key = limit.key(username, client_ip())
    # Count the attempt first, in its own short write transaction: parallel attempts queue on the
    # pair's row, so no more than the allowance ever reach the password check.
    with api.db.session() as session:
        limit.reserve(session, key)
    # Read and verify outside a write transaction: argon2 takes a while, and on SQLite a write
    # transaction holds the database's single write lock.
    with api.db.session(readonly=True) as session:
        user = session.scalar(select(User).where(User.username == username.strip()))
    stored_hash = user.password_hash if user is not None else None
    ok = verify_password(user, password) and user is not None
    with api.db.session() as session:
        if not ok:
            audit.record(session, audit.Action.LOGIN_FAILED, username=username, client_ip=client_ip())
        else:
            assert user is not None
            if user.password_hash != stored_hash:  # verify_password upgraded the hash parameters
                session.get_one(User, user.id).password_hash = user.password_hash
            limit.clear(session, key)
            token, row = start_session(session, user, secret=api.session_secret, hours=api.config.auth.session_hours)
            audit.record(session, audit.Action.LOGIN, user=user, client_ip=client_ip(), method="password")
    if not ok or user is None:
        raise Unauthorized("wrong username or password")
    g.new_session_token = token
    return _me(user, row)


@bp.post("/auth/logout")
def logout() -> tuple[Response, int]:
    user = current_user()
    api = state()
    with api.db.session() as session:
        row = session.get(LoginSession, g.login_session.id)
        if row is not None:
            row.revoked = True
        audit.record(session, audit.Action.LOGOUT, user=user, client_ip=client_ip())
    response = Response(status=HTTPStatus.NO_CONTENT)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, secure=api.config.auth.cookie_secure,
                           samesite="Strict")
    return response, HTTPStatus.NO_CONTENT


@bp.get("/auth/me")
def me() -> Response:
    return _me(current_user(), g.login_session)


@bp.post("/auth/password")
def change_password() -> tuple[str, int]:
    user = current_user()
    data = body()
    current, new = data.get("currentPassword"), data.get("newPassword")
    if not isinstance(current, str) or not isinstance(new, str):
        raise BadRequest("currentPassword and newPassword are required")
    api = state()
    key = api.login_limit.key(user.username, client_ip())
    with api.db.session() as session:  # guessing the current password counts like failed logins
        api.login_limit.reserve(session, key)
    with api.db.session() as session:
        row = session.get_one(User, user.id)
        if not verify_password(row, current):
            raise Unauthorized("the current password is wrong")
        api.login_limit.clear(session, key)
        row.password_hash = hash_password(new)
        # Whoever else holds a session (a stolen cookie, a forgotten browser) is signed out.
        ended = end_other_sessions(session, user.id, keep=g.login_session.id)
        audit.record(session, audit.Action.USER_CHANGED, user=user, client_ip=client_ip(), target=user.username,
                     fields=["password"], sessions_ended=ended)
    return "", HTTPStatus.NO_CONTENT


# ------------------------------------------------------------------ labeling


@bp.get("/jobs")
def list_jobs() -> Response:
    user = current_user()
    with state().db.session(readonly=True) as session:
        jobs = session.scalars(select(Job).where(Job.status == JobStatus.ACTIVE.value).order_by(Job.id))
        return jsonify(jobs=[job_json(session, job, user.id) for job in jobs])


@bp.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> Response:
    user = current_user()
    with state().db.session(readonly=True) as session:
        return jsonify(job_json(session, get_job(session, job_id), user.id))


def _latest(session: Any, assignment_id: int) -> Submission | None:
    result: Submission | None = session.scalar(select(Submission).where(Submission.assignment_id == assignment_id)
                                               .order_by(Submission.version.desc()).limit(1))
    return result


def _assignment_view(api: ApiState, session: Any, assignment: Assignment) -> dict[str, Any]:
    task = session.get_one(Task, assignment.task_id)
    job = session.get_one(Job, assignment.job_id)
    return api.assignment_json(assignment, task, job, _latest(session, assignment.id))


@bp.get("/queue")
def my_queue() -> Response:
    user = current_user()
    api = state()
    with api.db.session(readonly=True) as session:
        held = session.scalars(select(Assignment).where(Assignment.user_id == user.id,
                                                        Assignment.status == AssignmentStatus.ACTIVE.value)
                               .order_by(Assignment.leased_at))
        return jsonify(assignments=[_assignment_view(api, session, a) for a in held])


@bp.post("/jobs/<int:job_id>/next")
def next_task(job_id: int) -> Response | tuple[str, int]:
    user = current_user()
    api = state()
    lookahead = body().get("lookahead", 0)
    if not isinstance(lookahead, int) or not 0 <= lookahead <= api.config.queue.max_lookahead:
        raise BadRequest(f"lookahead: an integer from 0 to {api.config.queue.max_lookahead}")
    with api.db.session() as session:
        job = get_job(session, job_id)
        held = api.queue.next_assignments(session, job, user, lookahead)
        views = [_assignment_view(api, session, a) for a in held]
        for assignment in held:
            audit.record(session, audit.Action.TASK_LEASED, user=user, job_id=job.id, task_id=assignment.task_id,
                         client_ip=client_ip(), assignment=assignment.id)
    if not views:
        return "", HTTPStatus.NO_CONTENT
    return jsonify(assignment=views[0], upcoming=views[1:])


@bp.get("/assignments/<int:assignment_id>")
def show_assignment(assignment_id: int) -> Response:
    user = current_user()
    api = state()
    with api.db.session() as session:
        assignment = api.queue.owned(session, assignment_id, user)
        audit.record(session, audit.Action.IMAGE_VIEWED, user=user, job_id=assignment.job_id,
                     task_id=assignment.task_id, client_ip=client_ip())
        return jsonify(_assignment_view(api, session, assignment))


@bp.post("/assignments/<int:assignment_id>/heartbeat")
def heartbeat(assignment_id: int) -> Response:
    user = current_user()
    api = state()
    with api.db.session() as session:
        assignment = api.queue.heartbeat(session, assignment_id, user)
        expires = assignment.expires_at
    return jsonify(leaseExpiresAt=iso(expires))


@bp.post("/assignments/<int:assignment_id>/token")
def refresh_token(assignment_id: int) -> Response:
    user = current_user()
    api = state()
    with api.db.session() as session:
        assignment = api.queue.owned(session, assignment_id, user)
        if assignment.status not in (AssignmentStatus.ACTIVE.value, AssignmentStatus.SUBMITTED.value):
            raise NotFound("this assignment is no longer yours to view")
        task = session.get_one(Task, assignment.task_id)
        job = session.get_one(Job, assignment.job_id)
        token, expires = api.image_token(task, job, f"assignment:{assignment.id}")
    return jsonify(token=token, tokenExpiresAt=expires)


@bp.post("/assignments/<int:assignment_id>/submit")
def submit(assignment_id: int) -> tuple[Response, int]:
    user = current_user()
    api = state()
    data = body()
    with api.db.session() as session:
        submission, duplicate = api.queue.submit(session, assignment_id, user,
                                                 client_submission_id=data.get("clientSubmissionId", ""),
                                                 answer=data.get("answer"))
        if not duplicate:
            assignment = session.get_one(Assignment, submission.assignment_id)
            submission.assistance = assist.record(session.get_one(Job, submission.job_id),
                                                  session.get_one(Task, submission.task_id), assignment)
            audit.record(session, audit.Action.SUBMITTED, user=user, job_id=submission.job_id,
                         task_id=submission.task_id, client_ip=client_ip(), version=submission.version)
        if not duplicate:
            drafts.discard(session, assignment_id)  # the draft became this answer
        view = submission_json(submission)
    # The session block has committed: only now is the submission acknowledged.
    return jsonify(submission=view, duplicate=duplicate), HTTPStatus.OK if duplicate else HTTPStatus.CREATED


@bp.post("/assignments/<int:assignment_id>/first-answer")
def first_answer(assignment_id: int) -> tuple[Response, int]:
    """Record the reader's unaided answer (``after-first-answer`` jobs); the response then carries the
    model's predictions. Stored once: a retry with the same findings is 200, different findings 409."""
    user = current_user()
    api = state()
    answer = body().get("answer")
    with api.db.session() as session:
        assignment = api.queue.owned(session, assignment_id, user, lock=True)
        task = session.get_one(Task, assignment.task_id)
        job = session.get_one(Job, assignment.job_id)
        parsed = validate_answer(answer, labels=job.labels, sop_uid=task.sop_instance_uid, worker_id=user.username,
                                 limits=api.queue.limits)
        created = assist.record_first_answer(job, assignment, clean_answer(parsed, job.labels), utcnow())
        if created:
            audit.record(session, audit.Action.FIRST_ANSWER, user=user, job_id=job.id, task_id=task.id,
                         client_ip=client_ip(), assignment=assignment.id)
        view = assist.reader_view(job, task, assignment)
    return jsonify(assistance=view), HTTPStatus.CREATED if created else HTTPStatus.OK


@bp.get("/assignments/<int:assignment_id>/draft")
def show_draft(assignment_id: int) -> Response | tuple[str, int]:
    """The reader's autosaved draft of this assignment (204 when there is none)."""
    user = current_user()
    api = state()
    with api.db.session(readonly=True) as session:
        draft = drafts.load(session, api.queue.owned(session, assignment_id, user))
        if draft is None:
            return "", HTTPStatus.NO_CONTENT
        return jsonify(answer=draft.answer, updatedAt=iso(draft.updated_at))


@bp.put("/assignments/<int:assignment_id>/draft")
def save_draft(assignment_id: int) -> Response:
    """Replace the draft (autosave); the same size limits as a submission apply."""
    user = current_user()
    api = state()
    answer = body().get("answer")
    with api.db.session() as session:
        draft = drafts.save(session, api.queue.owned(session, assignment_id, user), answer, api.queue.limits)
        updated = iso(draft.updated_at)
    return jsonify(updatedAt=updated)


@bp.delete("/assignments/<int:assignment_id>/draft")
def delete_draft(assignment_id: int) -> tuple[str, int]:
    user = current_user()
    api = state()
    with api.db.session() as session:
        drafts.discard(session, api.queue.owned(session, assignment_id, user).id)
    return "", HTTPStatus.NO_CONTENT


@bp.post("/assignments/<int:assignment_id>/skip")
def skip(assignment_id: int) -> Response:
    user = current_user()
    api = state()
    data = body()
    reason, abandon = data.get("reason", ""), bool(data.get("abandon", False))
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason: say why the image is skipped")
    with api.db.session() as session:
        assignment = api.queue.skip(session, assignment_id, user, reason.strip(), abandon=abandon)
        audit.record(session, audit.Action.SKIPPED, user=user, job_id=assignment.job_id,
                     task_id=assignment.task_id, client_ip=client_ip(), abandon=abandon)
        status = assignment.status
    metrics.SKIPS.labels(status).inc()
    return jsonify(status=status)


@bp.post("/ui-metrics")
def ui_metrics() -> tuple[str, int]:
    current_user()
    data = body()
    seconds = data.get("seconds")
    if data.get("event") != "time_to_first_image":
        raise BadRequest("event: only 'time_to_first_image' is recorded")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= 600:
        raise BadRequest("seconds: a number from 0 to 600")
    metrics.TIME_TO_FIRST_IMAGE.observe(float(seconds))
    return "", HTTPStatus.NO_CONTENT


def _register_children() -> None:
    from dicomlab_labeling.workflow.routes_admin import bp as admin_bp
    from dicomlab_labeling.workflow.routes_review import bp as review_bp

    bp.register_blueprint(review_bp)
    bp.register_blueprint(admin_bp)


_register_children()
__all__ = ["EXTENSION_KEY", "bp"]
