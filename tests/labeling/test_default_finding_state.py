"""A job's default finding state (#19 item 5): ``not-looked-at`` unless the admin chooses ``absent``; it
round-trips through the job API (create, reader's view, PATCH) and a bad value is a 400 naming the
field. A stored answer never holds "not looked at": the server refuses it like any unknown state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, labeling_app, write_manifest

from dicomlab_cli.processes import OrthancServer


@pytest.fixture
def app(tmp_path: Path, orthanc: OrthancServer) -> Iterator[Flask]:
    with labeling_app(tmp_path, orthanc) as application:
        yield application


@pytest.fixture
def manifest(tmp_path: Path, synthetic_set: list[dict[str, Any]]) -> str:
    return write_manifest(tmp_path, synthetic_set[:1])


def create(admin: Api, manifest: str, name: str, **job: Any) -> tuple[int, Any]:
    return admin.call("POST", "/admin/jobs", {"name": name, "manifestUri": manifest, "readersPerImage": 1, **job})


def test_default_state_round_trips_through_the_job_api(app: Flask, manifest: str) -> None:
    admin = Api(app).login(*ADMIN)
    status, plain = create(admin, manifest, "plain")
    assert status == 201 and plain["defaultFindingState"] == "not-looked-at", plain
    status, chosen = create(admin, manifest, "chosen", defaultFindingState="absent")
    assert status == 201 and chosen["defaultFindingState"] == "absent", chosen
    create_users(admin, ["ann"])
    ann = Api(app).login("ann", PASSWORD)
    status, seen = ann.call("GET", f"/jobs/{chosen['id']}")
    assert status == 200 and seen["defaultFindingState"] == "absent"
    status, changed = admin.call("PATCH", f"/admin/jobs/{chosen['id']}", {"defaultFindingState": "not-looked-at"})
    assert status == 200 and changed["defaultFindingState"] == "not-looked-at"
    assert admin.call("GET", f"/admin/jobs/{chosen['id']}")[1]["defaultFindingState"] == "not-looked-at"


@pytest.mark.parametrize("value", ["unknown", "present", 3, ""])
def test_a_bad_default_state_is_refused(app: Flask, manifest: str, value: Any) -> None:
    admin = Api(app).login(*ADMIN)
    status, body = create(admin, manifest, "bad", defaultFindingState=value)
    assert status == 400 and "defaultFindingState: one of not-looked-at, absent" in body["description"], body
    status, job = create(admin, manifest, "good")
    assert status == 201
    status, body = admin.call("PATCH", f"/admin/jobs/{job['id']}", {"defaultFindingState": value})
    assert status == 400 and "defaultFindingState" in body["description"], body


def test_an_answer_with_a_finding_not_looked_at_is_refused(app: Flask, manifest: str) -> None:
    admin = Api(app).login(*ADMIN)
    status, job = create(admin, manifest, "nla")
    assert status == 201
    create_users(admin, ["ann"])
    ann = Api(app).login("ann", PASSWORD)
    aid = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]["id"]
    status, body = ann.call("POST", f"/assignments/{aid}/submit", {
        "clientSubmissionId": uuid.uuid4().hex,
        "answer": {"findings": {"Edema": "present", "Cardiomegaly": "not-looked-at"}, "rois": []}})
    assert status == 400, body
    # A draft may hold it (work in progress), and gives it back unchanged.
    draft = {"findings": {"Edema": "present", "Cardiomegaly": "not-looked-at"}, "rois": []}
    status, body = ann.call("PUT", f"/assignments/{aid}/draft", {"answer": draft})
    assert status in (200, 204), body
    assert ann.call("GET", f"/assignments/{aid}/draft")[1]["answer"]["findings"]["Cardiomegaly"] == "not-looked-at"
