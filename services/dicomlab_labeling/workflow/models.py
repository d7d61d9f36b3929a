"""The self-hosted labeling data model (SQLAlchemy 2, typed): users, jobs, tasks, leases, answers.

One :class:`Task` per image of a job; a reader's claim on a task is an :class:`Assignment` with a
lease. ``Task.taken`` counts the assignments that hold a slot (leased or submitted) and is updated
in the same transaction as the assignment, so the queue can lock one task row and know whether a
slot is free (see :mod:`dicomlab_labeling.workflow.queue`). The unique ``(task_id, user_id)`` pair is what
makes "a reader never gets the same image twice" a database guarantee. :class:`Submission` rows are
never updated: an edit is a new version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Role(StrEnum):
    """What an account may do; each role includes the ones before it."""

    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class JobStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CLOSED = "closed"


class Strategy(StrEnum):
    """Which free task ``next`` hands out first."""

    IN_ORDER = "in-order"
    RANDOM = "random"
    FEWEST_ANSWERS_FIRST = "fewest-answers-first"
    UNCERTAINTY_FIRST = "uncertainty-first"


class AssignmentStatus(StrEnum):
    ACTIVE = "active"
    SUBMITTED = "submitted"
    EXPIRED = "expired"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    """argon2id hash; NULL for accounts that only sign in through SSO."""
    role: Mapped[str] = mapped_column(String(16), default=Role.ANNOTATOR.value)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginSession(Base):
    """A signed-in browser: the cookie holds a random token, the table its keyed hash."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked: Mapped[bool] = mapped_column(default=False)


class LoginThrottle(Base):
    """Failed logins of one account from one client address (rate limiting shared by every worker).

    ``key`` is a SHA-256 of (account, client), so the table never holds what was typed as a user
    name. ``failures`` counts attempts since the last success (each attempt is counted before its
    password is checked, in the same transaction as the check); past the free allowance every
    further attempt must wait until ``blocked_until``, a delay that doubles with each failure.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.ACTIVE.value)
    manifest_uri: Mapped[str] = mapped_column(Text)
    labels: Mapped[list[Any]] = mapped_column()
    readers_per_image: Mapped[int] = mapped_column(default=3)
    instructions: Mapped[str] = mapped_column(Text, default="")
    due_date: Mapped[datetime | None] = mapped_column(default=None)
    allow_patient_identifiers: Mapped[bool] = mapped_column(default=False)
    strategy: Mapped[str] = mapped_column(String(32), default=Strategy.FEWEST_ANSWERS_FIRST.value)
    lease_seconds: Mapped[int] = mapped_column(default=900)
    gold_uri: Mapped[str | None] = mapped_column(Text, default=None)
    """Where the job's gold-standard images and their known answers came from (admin view only)."""
    ai_assistance: Mapped[str] = mapped_column(String(24), default="off", server_default="off")
    """When readers see the model's predictions: ``off``, ``after-first-answer`` or ``always``
    (see :mod:`dicomlab_labeling.workflow.assist`)."""
    window_presets: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    """The job's own window presets for the viewer (see :mod:`dicomlab_labeling.workflow.window_presets`)."""
    default_finding_state: Mapped[str] = mapped_column(String(16), default="not-looked-at", server_default="absent")
    """The state findings start in: ``not-looked-at`` or ``absent`` (see
    :mod:`dicomlab_labeling.workflow.finding_defaults`; jobs older than the option keep ``absent``)."""
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tasks: Mapped[list[Task]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                             passive_deletes=True)


class Task(Base):
    """One image of a job."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("job_id", "source", name="uq_tasks_job_source"),
                      Index("ix_tasks_job_taken", "job_id", "taken"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    """Order in the job (0-based): the input manifest's line order, with any gold images inserted at
    random places; the in-order strategy's key."""
    source: Mapped[str] = mapped_column(String(200))
    """The manifest line's ``source`` (Orthanc instance ID)."""
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    manifest_line: Mapped[dict[str, Any]] = mapped_column()
    """The input manifest object, copied through to the output manifest."""
    taken: Mapped[int] = mapped_column(default=0)
    """Assignments holding a slot: leased (active) or submitted. Free while < readers_per_image."""
    answers: Mapped[int] = mapped_column(default=0)
    """Assignments with at least one submission."""
    uncertainty: Mapped[float | None] = mapped_column(Float, default=None)
    """Model uncertainty (0–1) when predictions exist: the uncertainty-first strategy's key."""
    random_key: Mapped[float] = mapped_column(Float, default=0.0)
    """A random number drawn at creation: the random strategy's key (stable, index-friendly)."""
    gold: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    """Known answers (``{finding: "present" | "absent"}``) of a gold-standard image, else NULL.
    Never sent to readers; gold tasks are scored per reader and left out of consolidation and export."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="tasks")


class Assignment(Base):
    """A reader's claim on a task, under a lease until submitted."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "user_id", name="uq_assignments_task_user"),
                      Index("ix_assignments_status_expires", "status", "expires_at"),
                      Index("ix_assignments_user_status", "user_id", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=AssignmentStatus.ACTIVE.value)
    leased_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str] = mapped_column(Text, default="")
    """Why it was skipped or abandoned (reader's words)."""
    first_answer: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    """The reader's unaided answer (``after-first-answer`` jobs), recorded once and never changed."""
    first_answer_at: Mapped[datetime | None] = mapped_column(default=None)

    task: Mapped[Task] = relationship()
    user: Mapped[User] = relationship()


class Submission(Base):
    """One immutable answer; version n+1 of the same assignment supersedes version n."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("assignment_id", "version", name="uq_submissions_assignment_version"),
                      UniqueConstraint("user_id", "client_submission_id", name="uq_submissions_client_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(default=1)
    client_submission_id: Mapped[str] = mapped_column(String(100))
    answer: Mapped[dict[str, Any]] = mapped_column()
    time_spent_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    assistance: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    """What the reader saw of the model when submitting (mode, shown, model version, first answer)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()


class Draft(Base):
    """A reader's unsubmitted work on one assignment (autosaved; one row per assignment, replaced on
    every save, deleted when an answer is submitted). Never consolidated or exported."""

    __tablename__ = "drafts"

    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    answer: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Adjudication(Base):
    """A reviewer's decision on a task; the latest one overrides consolidation."""

    __tablename__ = "adjudications"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    findings: Mapped[dict[str, Any]] = mapped_column()
    rois: Mapped[list[Any]] = mapped_column(default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    reviewer: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who viewed, labelled, reviewed or changed what, and when. Never deleted with a job."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    username: Mapped[str] = mapped_column(String(150), default="")
    action: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)
    task_id: Mapped[int | None] = mapped_column(Integer, default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    client_ip: Mapped[str] = mapped_column(String(64), default="")
