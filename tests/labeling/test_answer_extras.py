"""The answer's note and "quality issue" flag (#19 item 8) and a job's own window presets (item 6):
stored when valid, a 400 naming the field otherwise; the stored answer still parses as a Ground Truth
worker answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, labeling_app, write_manifest

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.groundtruth import parse_worker_answer


@pytest.fixture
def app(tmp_path: Path, orthanc: OrthancServer) -> Iterator[Flask]:
    with labeling_app(tmp_path, orthanc) as application:
        yield application


@pytest.fixture
def manifest(tmp_path: Path, synthetic_set: list[dict[str, Any]]) -> str:
    return write_manifest(tmp_path, synthetic_set[:1])


def reader(app: Flask, manifest: str, **job: Any) -> tuple[Api, int, dict[str, Any]]:
    admin = Api(app).login(*ADMIN)
    status, created = admin.call("POST", "/admin/jobs", {"name": "extras", "manifestUri": manifest,
                                                         "readersPerImage": 1, **job})
    assert status == 201, created
    create_users(admin, ["ann"])
    ann = Api(app).login("ann", PASSWORD)
    return ann, ann.call("POST", f"/jobs/{created['id']}/next")[1]["assignment"]["id"], created


def submit(api: Api, assignment_id: int, **extra: Any) -> tuple[int, Any]:
    return api.call("POST", f"/assignments/{assignment_id}/submit", {
        "clientSubmissionId": uuid.uuid4().hex, "answer": {"findings": {"Edema": "present"}, "rois": [], **extra}})


def test_a_note_and_a_quality_issue_are_stored_without_skipping(app: Flask, manifest: str) -> None:
    ann, aid, _ = reader(app, manifest)
    status, body = submit(ann, aid, note="  rotated; AP portable  ", qualityIssue=True)
    assert status == 201, body
    stored = body["submission"]["answer"]
    assert stored["note"] == "rotated; AP portable" and stored["qualityIssue"] is True
    assert ann.call("GET", f"/assignments/{aid}")[1]["status"] == "submitted"
    parsed = parse_worker_answer(stored, worker_id="ann", labels=frozenset(stored["findings"]))
    assert parsed.findings["Edema"].value == "present"
    # An empty note and a false flag are left out.
    status, body = submit(ann, aid, note="   ", qualityIssue=False)
    assert status == 201 and "note" not in body["submission"]["answer"]
    assert "qualityIssue" not in body["submission"]["answer"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"note": 5}, "answer.note: text of at most 2000 characters"),
    ({"note": "x" * 2001}, "answer.note: text of at most 2000 characters"),
    ({"qualityIssue": "yes"}, "answer.qualityIssue: true or false"),
])
def test_a_bad_note_or_flag_is_refused(app: Flask, manifest: str, extra: dict[str, Any], message: str) -> None:
    ann, aid, _ = reader(app, manifest)
    status, body = submit(ann, aid, **extra)
    assert status == 400 and message in body["description"], body


def test_job_window_presets_are_offered_to_readers(app: Flask, manifest: str) -> None:
    presets = [{"name": "Soft", "percentiles": [10, 90]}, {"name": "Site bone", "center": 2500, "width": 1200}]
    ann, _, created = reader(app, manifest, windowPresets=presets)
    assert created["windowPresets"][0] == {"name": "Soft", "percentiles": [10.0, 90.0]}
    status, job = ann.call("GET", f"/jobs/{created['id']}")
    assert status == 200 and [p["name"] for p in job["windowPresets"]] == ["Soft", "Site bone"]
    admin = Api(app).login(*ADMIN)
    status, changed = admin.call("PATCH", f"/admin/jobs/{created['id']}", {"windowPresets": []})
    assert status == 200 and changed["windowPresets"] == []


@pytest.mark.parametrize(("presets", "message"), [
    ("lung", "windowPresets: a list of at most 6 presets"),
    ([{"name": "x", "percentiles": [90, 10]}], "windowPresets[0].percentiles: [low, high]"),
    ([{"name": "", "center": 1, "width": 2}], "windowPresets[0].name"),
    ([{"name": "w", "center": 1, "width": 0}], "windowPresets[0]: percentiles [low, high], or a numeric center"),
])
def test_bad_window_presets_are_refused(app: Flask, manifest: str, presets: Any, message: str) -> None:
    admin = Api(app).login(*ADMIN)
    status, body = admin.call("POST", "/admin/jobs", {"name": "bad", "manifestUri": manifest,
                                                      "windowPresets": presets})
    assert status == 400 and message in body["description"], body
