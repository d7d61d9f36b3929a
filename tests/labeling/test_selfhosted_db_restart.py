"""A PostgreSQL restart in the middle of a labeling session: nothing acknowledged is lost.

Uses its own throw-away PostgreSQL (stopping the shared one would disturb other tests).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest
from sqlalchemy import func, select

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.models import Submission


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="dicomlab-pg-restart-")) if os.geteuid() == 0 else tmp_path / "pg"
    server = PostgresServer(directory).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.postgres
def test_database_restart_mid_session(own_postgres: PostgresServer, tmp_path: Path, orthanc: OrthancServer,
                                      synthetic_set: list[dict[str, Any]]) -> None:
    app = create_app(make_config(tmp_path, own_postgres.dsn(), orthanc))
    admin = Api(app).login(*ADMIN)
    key = write_manifest(tmp_path, synthetic_set[:3])
    status, job = admin.call("POST", "/admin/jobs", {"name": "restart", "manifestUri": key, "readersPerImage": 1})
    assert status == 201
    create_users(admin, ["ann"])
    ann = Api(app).login("ann", PASSWORD)
    first = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert ann.submit(first["id"], {"Edema": "present"}, client_id="ack-1")[0] == 201
    second = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]

    own_postgres.stop()
    # While the database is down: a clear 503, never a 500 or a false acknowledgement.
    status, error = ann.submit(second["id"], {"Cardiomegaly": "present"}, client_id="during-outage")
    assert status == 503 and "database" in error["description"]
    own_postgres.start()

    # The pool notices the dead connections (pre-ping) and the session goes on where it was.
    status, _ = ann.call("GET", "/auth/me")
    assert status == 200
    status, stored = ann.submit(second["id"], {"Cardiomegaly": "present"}, client_id="during-outage")
    assert status == 201 and stored["duplicate"] is False
    status, again = ann.submit(second["id"], {"Cardiomegaly": "present"}, client_id="during-outage")
    assert status == 200 and again["duplicate"] is True
    state = app.extensions["dicomlab_labeling_api"]
    with state.db.session() as session:
        ids = set(session.scalars(select(Submission.client_submission_id)))
        assert ids == {"ack-1", "during-outage"}
        assert session.scalar(select(func.count()).select_from(Submission)) == 2
    state.db.dispose()
