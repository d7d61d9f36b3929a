"""Autosaved drafts: a reader's unsubmitted answer per assignment, kept on the server so that work in
progress survives a reload or a change of browser (see API.md, "Drafts").

A draft is owner-only, replaced on every save, deleted when an answer is submitted, and checked
against the same size limits as a submission (``ANSWERS__*``) — but not parsed: work in progress may
be incomplete (no finding decided yet, an ROI without its finding).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_labeling.config import AnswerLimits
from dicomlab_labeling.workflow.models import Assignment, AssignmentStatus, Draft, utcnow
from dicomlab_labeling.workflow.queue import check_answer_size

EDITABLE = (AssignmentStatus.ACTIVE.value, AssignmentStatus.SUBMITTED.value)


def save(session: Session, assignment: Assignment, answer: Any, limits: AnswerLimits) -> Draft:
    """Store ``answer`` as the assignment's draft (→ 400 when it is not an object or over a limit)."""
    if assignment.status not in EDITABLE:
        raise NotFound("this assignment is no longer yours to edit")
    if not isinstance(answer, dict):
        raise BadRequest("answer: a JSON object")
    check_answer_size(answer, limits)
    draft = session.get(Draft, assignment.id)
    if draft is None:
        draft = Draft(assignment_id=assignment.id, user_id=assignment.user_id, answer=answer)
        session.add(draft)
    else:
        draft.answer = answer
    draft.updated_at = utcnow()
    session.flush()
    return draft


def load(session: Session, assignment: Assignment) -> Draft | None:
    return session.get(Draft, assignment.id)


def discard(session: Session, assignment_id: int) -> None:
    session.execute(delete(Draft).where(Draft.assignment_id == assignment_id))
