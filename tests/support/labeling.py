"""The self-hosted labeling service in tests: config, a manifest of the synthetic set, an API client,
the app itself (its database disposed afterwards) and a first assignment to answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_core.config import Secret
from dicomlab_core.tokens import KeyRing
from dicomlab_labeling.config import AuthSettings, LabelingConfig, QueueSettings

ADMIN = ("admin", "admin-password-1")
PASSWORD = "reader-password-1"


def database_url(kind: str, tmp_path: Path, postgres: PostgresServer | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'labeling.db'}"
    assert postgres is not None
    name = "lab_" + uuid.uuid4().hex[:12]
    postgres.create_database(name)
    return postgres.dsn(name)


def make_config(tmp_path: Path, db_url: str, orthanc: OrthancServer, **queue: Any) -> LabelingConfig:
    return LabelingConfig(
        token_keys=(Secret(KeyRing.generate_entry("k1")),), orthanc=orthanc.settings(),
        proxy_public_url="http://proxy.test:8081", store_url=f"file://{tmp_path / 'store'}",
        data_dir=tmp_path, database_url=Secret(db_url), session_secret=Secret("s" * 40),
        auth=AuthSettings(admin_username=ADMIN[0], admin_password=Secret(ADMIN[1]), cookie_secure=False,
                          login_max_failures=5, password_time_cost=1, password_memory_kib=8192),
        queue=QueueSettings(**queue))


def write_manifest(tmp_path: Path, records: list[dict[str, Any]], name: str = "input.manifest",
                   with_uids: bool = True) -> str:
    """Write an input manifest for ``records`` into the test store; returns its key."""
    store = tmp_path / "store" / "manifests"
    store.mkdir(parents=True, exist_ok=True)
    lines = []
    for record in records:
        line: dict[str, Any] = {"source": record["orthanc_id"], "labels": "No Finding,Cardiomegaly,Edema,Pneumothorax"}
        if with_uids:
            line.update({"study-uid": record["study_uid"], "series-uid": record["series_uid"],
                         "sop-instance-uid": record["sop_uid"]})
        lines.append(json.dumps(line))
    (store / name).write_text("\n".join(lines) + "\n")
    return f"manifests/{name}"


class Api:
    """A signed-in client of the JSON API over Flask's test client or real HTTP (``base_url``)."""

    def __init__(self, app: Any = None, base_url: str | None = None) -> None:
        self.base_url = base_url
        self.http = requests.Session() if base_url else None
        self.client = app.test_client() if app is not None and base_url is None else None
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if csrf and self.csrf:
            sent["X-CSRF-Token"] = self.csrf
        if self.http is not None:
            response = self.http.request(method, f"{self.base_url}/api{path}", json=body, headers=sent, timeout=60)
            data = response.json() if response.content else None
            return response.status_code, data
        assert self.client is not None
        result = self.client.open(f"/api{path}", method=method, json=body, headers=sent)
        return result.status_code, result.get_json(silent=True)

    def login(self, username: str, password: str) -> Api:
        status, data = self.call("POST", "/auth/login", {"username": username, "password": password}, csrf=False)
        assert status == 200, data
        self.csrf = data["csrfToken"]
        return self

    def submit(self, assignment_id: int, findings: dict[str, str], *, client_id: str | None = None,
               sop: str | None = None, seconds: float = 5.0) -> tuple[int, Any]:
        answer: dict[str, Any] = {"findings": findings, "rois": [], "timeSpentSeconds": seconds}
        if sop:
            answer["sopInstanceUid"] = sop
        return self.call("POST", f"/assignments/{assignment_id}/submit",
                         {"clientSubmissionId": client_id or uuid.uuid4().hex, "answer": answer})


def create_users(admin: Api, names: list[str], role: str = "annotator") -> None:
    for name in names:
        status, data = admin.call("POST", "/admin/users", {"username": name, "password": PASSWORD, "role": role})
        assert status == 201, data


@contextmanager
def labeling_app(tmp_path: Path, orthanc: OrthancServer, db_url: str | None = None, **overrides: Any) -> Iterator[Any]:
    """The labeling Flask app on ``make_config`` (SQLite in ``tmp_path`` unless ``db_url``), fields of the
    config replaced by ``overrides``; its database engine is disposed afterwards."""
    from dicomlab_labeling.app import create_app

    config = make_config(tmp_path, db_url or database_url("sqlite", tmp_path, None), orthanc)
    app = create_app(replace(config, **overrides))
    try:
        yield app
    finally:
        app.extensions["dicomlab_labeling_api"].db.dispose()


def first_assignment(app: Any, tmp_path: Path, records: list[dict[str, Any]], readers: list[str],
                     name: str = "job") -> tuple[Api, int]:
    """A job over ``records`` (one reader per name), the readers created; the first reader signed in and
    the id of its first assignment."""
    admin = Api(app).login(*ADMIN)
    status, job = admin.call("POST", "/admin/jobs", {"name": name, "manifestUri": write_manifest(tmp_path, records),
                                                     "readersPerImage": len(readers)})
    assert status == 201, job
    create_users(admin, readers)
    first = Api(app).login(readers[0], PASSWORD)
    return first, first.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]["id"]
