"""The task queue: leases, heartbeats, expiry, submissions, skips. Safe under concurrent readers.

A task has ``readers_per_image`` slots; ``Task.taken`` counts the slots held (leased or submitted).
Claiming a slot locks the task row and increments ``taken`` in the same transaction:

- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` — concurrent readers skip a task another reader
  is claiming right now instead of waiting for it, and the row's new ``taken`` is re-checked when
  it is locked, so a full task is never handed out again.
- SQLite: every transaction starts with ``BEGIN IMMEDIATE`` (see :mod:`db`), so claims are serial.

The unique ``(task_id, user_id)`` constraint makes "a reader never gets the same image twice" hold
even against a reader's own parallel requests. Expired leases are released lazily (by the next
request on the job) in task-id order, so two releasing transactions cannot deadlock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicomlab_core.errors import BadRequest, Conflict, Forbidden, NotFound
from dicomlab_core.groundtruth import AnswerError, WorkerAnswer, parse_worker_answer
from dicomlab_core.labels import FindingState
from dicomlab_labeling.config import AnswerLimits
from dicomlab_labeling.workflow import metrics
from dicomlab_labeling.workflow.models import (
    Assignment,
    AssignmentStatus,
    Job,
    JobStatus,
    Strategy,
    Submission,
    Task,
    User,
    utcnow,
)

logger = logging.getLogger(__name__)

MAX_CLIENT_ID_CHARS = 100
SLOT_LOST = "the lease on this image expired and the image was given to another reader"


@dataclass(frozen=True)
class Queue:
    """Queue operations bound to one database dialect."""

    postgres: bool
    limits: AnswerLimits = AnswerLimits()
    """Size limits every submitted answer is checked against before it is parsed."""

    # ------------------------------------------------------------------ leases

    def release_expired(self, session: Session, job_id: int | None = None, now: datetime | None = None) -> int:
        """Turn active assignments past their lease into ``expired`` and free their slots."""
        now = now or utcnow()
        query = (select(Assignment).where(Assignment.status == AssignmentStatus.ACTIVE.value,
                                          Assignment.expires_at < now)
                 .order_by(Assignment.task_id, Assignment.id))
        if job_id is not None:
            query = query.where(Assignment.job_id == job_id)
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        expired = list(session.scalars(query))
        for assignment in expired:
            assignment.status = AssignmentStatus.EXPIRED.value
            assignment.finished_at = now
            self._task_locked(session, assignment.task_id).taken -= 1
        if expired:
            session.flush()
            metrics.ASSIGNMENTS_EXPIRED.inc(len(expired))
        return len(expired)

    def _task_locked(self, session: Session, task_id: int) -> Task:
        query = select(Task).where(Task.id == task_id)
        if self.postgres:
            query = query.with_for_update()
        task = session.scalar(query.execution_options(populate_existing=True))
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task

    def _order(self, strategy: str) -> list[ColumnElement[Any]]:
        if strategy == Strategy.IN_ORDER.value:
            return [Task.position.asc(), Task.id.asc()]
        if strategy == Strategy.RANDOM.value:
            return [func.random()]
        if strategy == Strategy.UNCERTAINTY_FIRST.value:
            return [Task.uncertainty.desc().nulls_last(), Task.taken.asc(), Task.position.asc()]
        return [Task.taken.asc(), Task.position.asc(), Task.id.asc()]

    def _claim(self, session: Session, job: Job, user: User, now: datetime) -> Assignment | None:
        mine = exists().where(Assignment.task_id == Task.id, Assignment.user_id == user.id)
        query = (select(Task).where(Task.job_id == job.id, Task.taken < job.readers_per_image, ~mine)
                 .order_by(*self._order(job.strategy)).limit(1))
        if self.postgres:
            query = query.with_for_update(skip_locked=True, of=Task)
        task = session.scalar(query.execution_options(populate_existing=True))
        if task is None:
            return None
        assignment = Assignment(job_id=job.id, task_id=task.id, user_id=user.id, leased_at=now,
                                expires_at=now + timedelta(seconds=job.lease_seconds))
        try:
            with session.begin_nested():
                session.add(assignment)
                task.taken += 1
                session.flush()
        except IntegrityError:
            # The same reader claimed this task in a parallel request: the constraint kept it unique.
            session.expire(task)
            return None
        metrics.ASSIGNMENTS_HANDED_OUT.inc()
        return assignment

    def next_assignments(self, session: Session, job: Job, user: User, lookahead: int = 0) -> list[Assignment]:
        """The reader's leased assignments in ``job``, topped up to ``1 + lookahead`` (oldest first).

        Empty when nothing is left for this reader. Raises :class:`Conflict` when the job is not active.
        """
        if job.status != JobStatus.ACTIVE.value:
            raise Conflict(f"job {job.name!r} is {job.status}")
        now = utcnow()
        self.release_expired(session, job.id, now)
        held = list(session.scalars(
            select(Assignment).where(Assignment.job_id == job.id, Assignment.user_id == user.id,
                                     Assignment.status == AssignmentStatus.ACTIVE.value)
            .order_by(Assignment.leased_at, Assignment.id)))
        attempts = 0
        while len(held) < 1 + lookahead and attempts < 3 + lookahead:
            attempts += 1
            claimed = self._claim(session, job, user, now)
            if claimed is None:
                if self.postgres and attempts == 1:
                    continue  # a parallel request of this reader took our pick: look once more
                break
            held.append(claimed)
        return held

    def owned(self, session: Session, assignment_id: int, user: User, *, lock: bool = False) -> Assignment:
        query = select(Assignment).where(Assignment.id == assignment_id)
        if lock and self.postgres:
            query = query.with_for_update()
        assignment = session.scalar(query.execution_options(populate_existing=True))
        if assignment is None:
            raise NotFound(f"no assignment {assignment_id}")
        if assignment.user_id != user.id:
            raise Forbidden("this assignment belongs to another reader")
        return assignment

    def _hold_slot(self, session: Session, assignment: Assignment, job: Job, now: datetime) -> None:
        """Make sure ``assignment`` holds a slot: re-take a freed one if nobody took it, else 409."""
        if assignment.status in (AssignmentStatus.ACTIVE.value, AssignmentStatus.SUBMITTED.value):
            return
        task = self._task_locked(session, assignment.task_id)
        if task.taken >= job.readers_per_image:
            raise Conflict(SLOT_LOST)
        task.taken += 1
        assignment.status = AssignmentStatus.ACTIVE.value
        assignment.finished_at = None
        assignment.expires_at = now + timedelta(seconds=job.lease_seconds)

    def heartbeat(self, session: Session, assignment_id: int, user: User) -> Assignment:
        """Extend the lease (the UI calls this while the reader works on the image)."""
        now = utcnow()
        assignment = self.owned(session, assignment_id, user, lock=True)
        job = session.get_one(Job, assignment.job_id)
        if assignment.status == AssignmentStatus.SUBMITTED.value:
            return assignment
        self._hold_slot(session, assignment, job, now)
        assignment.heartbeat_at = now
        assignment.expires_at = now + timedelta(seconds=job.lease_seconds)
        return assignment

    def skip(self, session: Session, assignment_id: int, user: User, reason: str, *, abandon: bool) -> Assignment:
        """Give the image back with a reason; the reader will not get it again."""
        assignment = self.owned(session, assignment_id, user, lock=True)
        if assignment.status == AssignmentStatus.SUBMITTED.value:
            raise Conflict("this image was already submitted; it cannot be skipped")
        if assignment.status == AssignmentStatus.ACTIVE.value:
            self._task_locked(session, assignment.task_id).taken -= 1
        assignment.status = (AssignmentStatus.ABANDONED if abandon else AssignmentStatus.SKIPPED).value
        assignment.reason = reason[:2000]
        assignment.finished_at = utcnow()
        return assignment

    # ------------------------------------------------------------------ submissions

    def submit(self, session: Session, assignment_id: int, user: User, *, client_submission_id: str,
               answer: Any) -> tuple[Submission, bool]:
        """Store a new immutable answer version; returns (submission, duplicate).

        Idempotent on ``client_submission_id``: a retry returns the stored submission. Answers are
        validated against the job's label set ("No Finding" exclusive, known labels and states).
        """
        if not isinstance(client_submission_id, str) or not 1 <= len(client_submission_id) <= MAX_CLIENT_ID_CHARS:
            raise BadRequest(f"clientSubmissionId: a string of 1–{MAX_CLIENT_ID_CHARS} characters")
        previous = self._by_client_id(session, user, client_submission_id)
        if previous is not None:
            return self._duplicate(previous, assignment_id)
        now = utcnow()
        assignment = self.owned(session, assignment_id, user, lock=True)
        job = session.get_one(Job, assignment.job_id)
        if job.status == JobStatus.CLOSED.value:
            raise Conflict(f"job {job.name!r} is closed")
        # Lock the task row before inserting anything that references it: the submission's foreign key
        # takes a KEY SHARE lock on the task, and two submits upgrading those to UPDATE would deadlock.
        task = self._task_locked(session, assignment.task_id)
        parsed = validate_answer(answer, labels=job.labels, sop_uid=task.sop_instance_uid, worker_id=user.username,
                                 limits=self.limits)
        first = assignment.status != AssignmentStatus.SUBMITTED.value
        self._hold_slot(session, assignment, job, now)
        version = (session.scalar(select(func.max(Submission.version))
                                  .where(Submission.assignment_id == assignment.id)) or 0) + 1
        submission = Submission(assignment_id=assignment.id, task_id=task.id, job_id=job.id, user_id=user.id,
                                version=version, client_submission_id=client_submission_id,
                                answer=clean_answer(parsed, job.labels), time_spent_seconds=parsed.time_spent,
                                created_at=now)
        try:
            with session.begin_nested():
                session.add(submission)
                if first:
                    assignment.status = AssignmentStatus.SUBMITTED.value
                    assignment.finished_at = now
                    task.answers += 1
                session.flush()
        except IntegrityError:
            previous = self._by_client_id(session, user, client_submission_id)
            if previous is None:
                raise Conflict("a parallel submission for this image was stored; reload and retry") from None
            return self._duplicate(previous, assignment_id)
        metrics.SUBMISSIONS.inc()
        if parsed.time_spent is not None:
            metrics.TIME_PER_IMAGE.observe(parsed.time_spent)
        return submission, False

    @staticmethod
    def _by_client_id(session: Session, user: User, client_submission_id: str) -> Submission | None:
        return session.scalar(select(Submission).where(Submission.user_id == user.id,
                                                       Submission.client_submission_id == client_submission_id))

    @staticmethod
    def _duplicate(previous: Submission, assignment_id: int) -> tuple[Submission, bool]:
        if previous.assignment_id != assignment_id:
            raise Conflict("clientSubmissionId was already used for another image")
        return previous, True


def check_answer_size(answer: dict[str, Any], limits: AnswerLimits, *, field: str = "answer") -> None:
    """Refuse an answer over a size limit (→ 400 naming the limit and its setting), before parsing it."""
    size = len(json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_bytes:
        raise BadRequest(f"{field}: {size} bytes; at most {limits.max_bytes} bytes per answer "
                         "(ANSWERS__MAX_BYTES)")
    rois = answer.get("rois")
    if not isinstance(rois, list):
        return
    if len(rois) > limits.max_rois:
        raise BadRequest(f"{field}.rois: {len(rois)} ROIs; at most {limits.max_rois} ROIs per answer "
                         "(ANSWERS__MAX_ROIS)")
    for index, roi in enumerate(rois):
        points = roi.get("points") if isinstance(roi, dict) else None
        if isinstance(points, list) and len(points) > limits.max_points_per_roi:
            raise BadRequest(f"{field}.rois[{index}].points: {len(points)} points; at most "
                             f"{limits.max_points_per_roi} points per ROI (ANSWERS__MAX_POINTS_PER_ROI)")


def validate_answer(answer: Any, *, labels: list[str], sop_uid: str, worker_id: str,
                    limits: AnswerLimits | None = None) -> WorkerAnswer:
    """Parse our clean answer schema and check it against the job and the size limits (→ 400 naming the
    problem)."""
    if not isinstance(answer, dict) or "findings" not in answer:
        raise BadRequest("answer: expected an object with 'findings'")
    check_answer_size(answer, limits or AnswerLimits())
    try:
        parsed = parse_worker_answer(answer, worker_id=worker_id, labels=labels)
    except AnswerError as exc:
        raise BadRequest(f"answer: {exc.reason}") from None
    if parsed.sop_uid and sop_uid and parsed.sop_uid != sop_uid:
        raise BadRequest("answer: sopInstanceUid is not the image of this assignment")
    if parsed.time_spent is not None and not 0 <= parsed.time_spent <= 86400:
        raise BadRequest("answer: timeSpentSeconds must be between 0 and 86400")
    check_rois_match_findings(parsed)
    answer_extras(answer)
    return parsed


MAX_NOTE_CHARS = 2000


def answer_extras(answer: Any) -> dict[str, Any]:
    """The reader's note on the image and the "quality issue" flag of an answer, checked (→ 400 naming the
    field); neither requires skipping the image. Empty or false ones are left out of the stored answer."""
    if not isinstance(answer, dict):
        return {}
    out: dict[str, Any] = {}
    note = answer.get("note")
    if note is not None:
        if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
            raise BadRequest(f"answer.note: text of at most {MAX_NOTE_CHARS} characters")
        if note.strip():
            out["note"] = note.strip()
    quality = answer.get("qualityIssue")
    if quality is not None:
        if not isinstance(quality, bool):
            raise BadRequest("answer.qualityIssue: true or false")
        if quality:
            out["qualityIssue"] = True
    return out


ROI_STATES = frozenset({FindingState.PRESENT, FindingState.UNCERTAIN})
"""The states of a finding that may carry ROIs: an ROI marks where something seen (or suspected) is."""


def check_rois_match_findings(parsed: WorkerAnswer) -> None:
    """Refuse an ROI tied to a finding the same answer calls absent (or leaves out, which means absent).

    Such an answer contradicts itself: it would train a detector on a region of a finding the reader
    says is not there ("mark the rest absent" used to leave them behind).
    """
    for index, roi in enumerate(parsed.rois, start=1):
        if roi.finding is None:
            continue
        state = parsed.findings.get(roi.finding, FindingState.ABSENT)
        if state not in ROI_STATES:
            raise BadRequest(f"answer: ROI {index} is tied to {roi.finding[:64]!r}, which is {state.value}: "
                             "an ROI needs its finding present or uncertain (remove the ROI or change the finding)")


def clean_answer(parsed: WorkerAnswer, labels: list[str]) -> dict[str, Any]:
    """The stored form: our clean schema with every label of the job (unlisted = absent)."""
    out = parsed.clean_json(labels)
    out.update(answer_extras(parsed.raw))
    return out
