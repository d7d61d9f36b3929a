"""The audit trail: who viewed, labelled, reviewed or changed what, and when.

Events are rows of :class:`~dicomlab_labeling.workflow.models.AuditEvent`, written in the same transaction
as the change they describe (a rolled-back change leaves no event). They carry ids, never patient
identifiers or answers' content, and survive the deletion of their job.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomlab_labeling.workflow.models import AuditEvent, User

logger = logging.getLogger(__name__)


class Action(StrEnum):
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"
    LOGOUT = "logout"
    USER_CREATED = "user-created"
    USER_CHANGED = "user-changed"
    JOB_CREATED = "job-created"
    JOB_CHANGED = "job-changed"
    JOB_DELETED = "job-deleted"
    TASK_LEASED = "task-leased"
    IMAGE_VIEWED = "image-viewed"
    SUBMITTED = "submitted"
    FIRST_ANSWER = "first-answer"
    SKIPPED = "skipped"
    ANSWERS_VIEWED = "answers-viewed"
    ADJUDICATED = "adjudicated"
    EXPORTED = "exported"


def record(session: Session, action: Action, *, user: User | None = None, username: str = "",
           job_id: int | None = None, task_id: int | None = None, client_ip: str = "",
           **detail: Any) -> None:
    """Add one event to ``session`` (committed with the caller's transaction)."""
    session.add(AuditEvent(action=action.value, user_id=user.id if user is not None else None,
                           username=user.username if user is not None else username[:150],
                           job_id=job_id, task_id=task_id, detail=detail, client_ip=client_ip[:64]))


def recent(session: Session, *, job_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 1000)))
    if job_id is not None:
        query = query.where(AuditEvent.job_id == job_id)
    return [{"at": e.at.isoformat().replace("+00:00", "Z"), "user": e.username, "action": e.action,
             "jobId": e.job_id, "taskId": e.task_id, "detail": e.detail}
            for e in session.scalars(query)]
