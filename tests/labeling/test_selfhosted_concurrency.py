"""50 annotators at once on one job, over real HTTP, on SQLite and on PostgreSQL.

Every image must end with exactly N distinct readers' submissions; no assignment is lost (left
leased) or handed out twice; skipped images go back to the queue and are still completed.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, database_url, make_config, serve, write_manifest
from sqlalchemy import func, select

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.auth import COOKIE_NAME, hash_password, start_session
from dicomlab_labeling.workflow.models import Assignment, Submission, Task, User

READERS = 50
PER_IMAGE = 3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_fifty_concurrent_annotators(kind: str, tmp_path: Path, orthanc: OrthancServer,
                                     synthetic_set: list[dict[str, Any]], request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    config = make_config(tmp_path, database_url(kind, tmp_path, postgres), orthanc, db_pool_size=20)
    app = create_app(config)
    api_state = app.extensions["dicomlab_labeling_api"]
    # Readers get their sessions straight from the database: logins (argon2) are tested elsewhere, and
    # 50 of them would only slow this test down on a busy machine.
    shared_hash = hash_password(PASSWORD)
    names = [f"reader{i:02d}" for i in range(READERS)]
    sessions: dict[str, tuple[str, str]] = {}
    with api_state.db.session() as session:
        for name in names:
            user = User(username=name, password_hash=shared_hash, role="annotator")
            session.add(user)
            session.flush()
            token, row = start_session(session, user, secret=api_state.session_secret, hours=1)
            sessions[name] = (token, row.csrf_token)
    key = write_manifest(tmp_path, synthetic_set)
    images = len(synthetic_set)

    with serve(app) as base_url:
        admin = Api(base_url=base_url).login(*ADMIN)
        status, job = admin.call("POST", "/admin/jobs", {"name": f"conc-{kind}", "manifestUri": key,
                                                         "readersPerImage": PER_IMAGE, "strategy": "random"})
        assert status == 201, job
        start = threading.Barrier(READERS)
        errors: list[str] = []

        def annotate(name: str) -> list[int]:
            try:
                start.wait(timeout=120)
                return work(name, skip_rate=0.1)
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")
                start.abort()
                return []

        def work(name: str, skip_rate: float) -> list[int]:
            rng = random.Random(name)
            client = Api(base_url=base_url)
            assert client.http is not None
            client.http.cookies.set(COOKIE_NAME, sessions[name][0])
            client.csrf = sessions[name][1]
            done: list[int] = []
            while True:
                status, data = client.call("POST", f"/jobs/{job['id']}/next")
                if status == 204:
                    return done
                if status != 200:
                    errors.append(f"{name} next {status} {data}")
                    return done
                assignment = data["assignment"]
                if rng.random() < skip_rate:
                    status, data = client.call("POST", f"/assignments/{assignment['id']}/skip",
                                               {"reason": "simulated skip"})
                    if status != 200:
                        errors.append(f"{name} skip {status} {data}")
                    continue
                findings = {"Cardiomegaly": rng.choice(["present", "absent"]), "Edema": "absent"}
                status, data = client.submit(assignment["id"], findings, sop=assignment["image"]["sopInstanceUid"])
                if status != 201:
                    errors.append(f"{name} submit {status} {data}")
                    return done
                done.append(assignment["taskId"])

        with ThreadPoolExecutor(max_workers=READERS) as pool:
            per_reader = list(pool.map(annotate, names))
        # A skip late in the run frees a slot after every reader was told "nothing left" (204), as
        # happens to real readers who come back later: a sweep without skips fills those slots.
        for i, name in enumerate(names):
            per_reader[i] += work(name, skip_rate=0.0)
    assert errors == []

    # What each reader was told was stored, per image: exactly N distinct readers.
    acknowledged = Counter(task for tasks in per_reader for task in tasks)
    assert len(acknowledged) == images and set(acknowledged.values()) == {PER_IMAGE}
    assert all(len(tasks) == len(set(tasks)) for tasks in per_reader)  # nobody got an image twice
    with api_state.db.session() as session:
        rows = session.execute(select(Submission.task_id, func.count(func.distinct(Submission.user_id)),
                                      func.count(Submission.id)).group_by(Submission.task_id)).all()
        assert len(rows) == images and all(readers == PER_IMAGE == count for _, readers, count in rows)
        assert session.scalar(select(func.count()).select_from(Assignment).where(Assignment.status == "active")) == 0
        assert set(session.scalars(select(Task.taken))) == {PER_IMAGE}
        assert set(session.scalars(select(Task.answers))) == {PER_IMAGE}
        per_user_task = session.execute(select(Assignment.task_id, Assignment.user_id, func.count())
                                        .group_by(Assignment.task_id, Assignment.user_id)).all()
        assert all(count == 1 for _, _, count in per_user_task)
    api_state.db.dispose()
