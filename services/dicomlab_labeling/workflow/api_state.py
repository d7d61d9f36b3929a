"""What the self-hosted labeling API shares per app: database, queue, store, signer; and the JSON views.

Built by named start-up steps of ``create_app``: :func:`setup` (the state, its database pool),
:func:`migrate` (the schema to head) and :func:`seed_admin` (the start-up admin from
``AUTH__ADMIN_USERNAME``/``AUTH__ADMIN_PASSWORD``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, cast

from flask import Flask, current_app, request
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from dicomlab_core.errors import BadRequest, ServiceUnavailable
from dicomlab_core.objectstore import ObjectStore, open_store
from dicomlab_core.orthanc import MAX_PROBE_TIMEOUT_S, OrthancClient
from dicomlab_core.tokens import Scope, TokenSigner
from dicomlab_core.web import BoundedCheck
from dicomlab_labeling.config import LabelingConfig
from dicomlab_labeling.workflow import assist
from dicomlab_labeling.workflow.auth import LoginLimit, client_address, ensure_admin, set_password_cost
from dicomlab_labeling.workflow.db import Database
from dicomlab_labeling.workflow.jobs import iso
from dicomlab_labeling.workflow.migrate import upgrade
from dicomlab_labeling.workflow.models import Assignment, Job, Submission, Task, User
from dicomlab_labeling.workflow.queue import Queue

logger = logging.getLogger(__name__)

EXTENSION_KEY = "dicomlab_labeling_api"


@dataclass
class ApiState:
    config: LabelingConfig
    db: Database
    signer: TokenSigner
    orthanc: OrthancClient
    session_secret: str
    queue: Queue = field(init=False)
    ping: BoundedCheck = field(init=False)
    """The database readiness check (``SELECT 1`` within the probe deadline)."""

    def __post_init__(self) -> None:
        self.queue = Queue(postgres=self.db.is_postgres, limits=self.config.answers)
        # A hung database must not hold /readyz: the probe answers within the Orthanc probe deadline.
        self.ping = BoundedCheck(self._ping, min(self.config.orthanc.probe_timeout, MAX_PROBE_TIMEOUT_S),
                                 "the labeling database")

    @cached_property
    def store(self) -> ObjectStore:
        return open_store(self.config.store_url)

    @property
    def login_limit(self) -> LoginLimit:
        auth = self.config.auth
        return LoginLimit(auth.login_max_failures, auth.login_window_seconds, auth.login_delay_seconds,
                          auth.login_max_delay_seconds)

    def _ping(self) -> None:
        try:
            with self.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise ServiceUnavailable("the labeling database is unreachable") from exc

    # ------------------------------------------------------------------ views

    def token_ttl(self, job: Job) -> int:
        """Image tokens live for the lease plus a margin, at most the configured token lifetime."""
        return max(60, min(self.config.token_ttl_seconds, job.lease_seconds + 300))

    def image_token(self, task: Task, job: Job, subject: str) -> tuple[str, str]:
        """A proxy token for this task's one instance; de-identified unless the job allows patient identifiers.

        An instance grant opens that instance's own routes only (see ``SCOPE_TABLE``); the Orthanc-ID
        grant opens its ``/file`` — which the proxy refuses to de-identified tokens, whose viewer
        reads metadata and frames instead (:meth:`image_json`'s ``viewerUrl``).
        """
        ttl = self.token_ttl(job)
        scope = Scope(instances=(task.sop_instance_uid,) if task.sop_instance_uid else (),
                      orthanc_ids=(task.source,))
        token = self.signer.issue(scope, subject=subject, ttl_seconds=ttl,
                                  deidentified=not job.allow_patient_identifiers)
        expires = datetime.fromtimestamp(datetime.now(UTC).timestamp() + ttl, UTC)
        return token, cast(str, iso(expires))

    def image_json(self, task: Task, job: Job) -> dict[str, Any]:
        """Where the viewer reads the image. ``viewerUrl`` is what it loads: the DICOM file when the job
        shows patient identifiers, else WADO-RS metadata + frames (``wadors:``), the path a
        de-identified token is served (a whole file would carry the patient's name)."""
        proxy = self.config.proxy_public_url.rstrip("/")
        st, se, sop = task.study_instance_uid, task.series_instance_uid, task.sop_instance_uid
        wado = f"{proxy}/dicom-web/studies/{st}/series/{se}/instances/{sop}" if st and se and sop else None
        file_url = f"{proxy}/instances/{task.source}/file"
        wadors = f"wadors:{wado}/frames/1" if wado else None
        deidentified = not job.allow_patient_identifiers
        return {"orthancId": task.source, "sopInstanceUid": sop, "studyInstanceUid": st,
                "seriesInstanceUid": se, "fileUrl": file_url,
                "wadoRoot": f"{proxy}/dicom-web", "wadoRsUrl": wado,
                "wadoUri": wadors, "deidentified": deidentified,
                "viewerUrl": (wadors or file_url) if deidentified else file_url}

    def patient_json(self, task: Task, job: Job) -> dict[str, Any] | None:
        if not job.allow_patient_identifiers:
            return None
        try:
            tags = self.orthanc.instance_tags(task.source)
        except Exception:
            logger.warning("could not read patient identifiers from Orthanc", extra={"task": task.id})
            return None
        return {"name": tags.get("PatientName", ""), "id": tags.get("PatientID", ""),
                "sex": tags.get("PatientSex", ""), "birthDate": tags.get("PatientBirthDate", "")}

    def assignment_json(self, assignment: Assignment, task: Task, job: Job,
                        latest: Submission | None = None) -> dict[str, Any]:
        token, expires = self.image_token(task, job, f"assignment:{assignment.id}")
        return {"id": assignment.id, "jobId": job.id, "taskId": task.id, "status": assignment.status,
                "leaseExpiresAt": iso(assignment.expires_at), "leaseSeconds": job.lease_seconds,
                "labels": list(job.labels), "instructions": job.instructions, "image": self.image_json(task, job),
                "token": token, "tokenExpiresAt": expires, "patient": self.patient_json(task, job),
                "mySubmission": submission_json(latest) if latest is not None else None,
                "assistance": assist.reader_view(job, task, assignment)}


def submission_json(submission: Submission) -> dict[str, Any]:
    return {"id": submission.id, "assignmentId": submission.assignment_id, "version": submission.version,
            "clientSubmissionId": submission.client_submission_id, "createdAt": iso(submission.created_at),
            "answer": submission.answer, "assistance": assist.reader_record(submission.assistance)}


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role, "active": user.active,
            "email": user.email}


def state_of(app: Flask) -> ApiState:
    """The API state of ``app`` (built by :func:`setup`)."""
    return cast(ApiState, app.extensions[EXTENSION_KEY])


def state() -> ApiState:
    """The API state of the app handling the current request."""
    return state_of(current_app)


def body() -> dict[str, Any]:
    """The JSON object of the request (an empty body counts as ``{}``)."""
    if not request.get_data(cache=True):
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("request body: expected a JSON object")
    return data


def client_ip() -> str:
    """The client's address: the peer, or ``X-Forwarded-For`` through ``AUTH__FORWARDED_FOR_PROXIES``."""
    return client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"),
                          state().config.auth.forwarded_for_proxies)


def setup(app: Flask, config: LabelingConfig, signer: TokenSigner, orthanc: OrthancClient) -> ApiState:
    """Create the API state for ``app`` (its database pool, queue and session secret); nothing is migrated yet."""
    secret = config.session_secret.reveal()
    if not secret:
        # Sessions would not survive a restart nor be shared by gunicorn workers: fine for a test, not more.
        logger.warning("SESSION_SECRET is not set: using a per-process secret (sessions end on restart)")
        secret = secrets.token_urlsafe(32)
    set_password_cost(time_cost=config.auth.password_time_cost, memory_kib=config.auth.password_memory_kib)
    db = Database(config.sqlalchemy_url, pool_size=config.queue.db_pool_size)
    api = ApiState(config=config, db=db, signer=signer, orthanc=orthanc, session_secret=secret)
    app.extensions[EXTENSION_KEY] = api
    return api


def migrate(api: ApiState) -> None:
    """Bring the database schema to head (one worker migrates, the others wait and find it done)."""
    upgrade(api.db)


def seed_admin(api: ApiState) -> None:
    """Create or update the start-up admin when ``AUTH__ADMIN_USERNAME``/``AUTH__ADMIN_PASSWORD`` are set."""
    auth = api.config.auth
    if auth.admin_username and auth.admin_password:
        _seed_admin(api.db, auth.admin_username, auth.admin_password.reveal())


def _seed_admin(db: Database, username: str, password: str) -> None:
    """Create or update the start-up admin; gunicorn workers starting together may race to insert it."""
    for attempt in range(2):
        try:
            with db.session() as session:
                ensure_admin(session, username, password)
            return
        except IntegrityError:
            if attempt:
                raise
            logger.info("another worker created the admin account first; updating it instead")
