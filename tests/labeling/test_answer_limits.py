"""Answer size limits: points per ROI, ROIs per answer, answer bytes (400 naming the limit), and nosniff."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import ADMIN, Api, first_assignment, labeling_app

from dicomlab_cli.processes import OrthancServer
from dicomlab_labeling.config import AnswerLimits

LIMITS = AnswerLimits(max_points_per_roi=50, max_rois=5, max_bytes=2048)


@pytest.fixture
def app(tmp_path: Path, orthanc: OrthancServer) -> Iterator[Flask]:
    with labeling_app(tmp_path, orthanc, answers=LIMITS) as application:
        yield application


@pytest.fixture
def assignment(app: Flask, tmp_path: Path, synthetic_set: list[dict[str, Any]]) -> tuple[Api, int]:
    return first_assignment(app, tmp_path, synthetic_set[:1], ["ann"], name="limits")


def polygon(points: int, spread: float = 1.0) -> dict[str, Any]:
    return {"tool": "polygon", "finding": "Edema",
            "points": [[10.0 + i * spread, 20.0 + (i % 7) * spread] for i in range(points)]}


def submit(api: Api, assignment_id: int, rois: list[dict[str, Any]]) -> tuple[int, Any]:
    return api.call("POST", f"/assignments/{assignment_id}/submit", {
        "clientSubmissionId": uuid.uuid4().hex, "answer": {"findings": {"Edema": "present"}, "rois": rois}})


@pytest.mark.parametrize(("rois", "message"), [
    ([polygon(51)], "answer.rois[0].points: 51 points; at most 50 points per ROI (ANSWERS__MAX_POINTS_PER_ROI)"),
    ([polygon(3)] * 6, "answer.rois: 6 ROIs; at most 5 ROIs per answer (ANSWERS__MAX_ROIS)"),
    ([polygon(40, spread=1.123456789)] * 5, "bytes; at most 2048 bytes per answer (ANSWERS__MAX_BYTES)"),
])
def test_an_answer_over_a_limit_is_refused_naming_it(assignment: tuple[Api, int], rois: list[dict[str, Any]],
                                                     message: str) -> None:
    api, assignment_id = assignment
    status, body = submit(api, assignment_id, rois)
    assert status == 400 and message in body["description"], body
    # Nothing was stored: the same image still takes an answer within the limits.
    status, body = submit(api, assignment_id, [polygon(50)])
    assert status == 201, body
    assert len(body["submission"]["answer"]["rois"][0]["points"]) == 50


def test_an_adjudication_over_a_limit_is_refused(app: Flask, assignment: tuple[Api, int]) -> None:
    api, assignment_id = assignment
    assert submit(api, assignment_id, [])[0] == 201
    admin = Api(app).login(*ADMIN)
    task = api.call("GET", f"/assignments/{assignment_id}")[1]["taskId"]
    status, body = admin.call("POST", f"/review/tasks/{task}/adjudicate",
                              {"findings": {"Edema": "present"}, "rois": [polygon(51)]})
    assert status == 400 and "(ANSWERS__MAX_POINTS_PER_ROI)" in body["description"]
    assert admin.call("POST", f"/review/tasks/{task}/adjudicate",
                      {"findings": {"Edema": "present"}, "rois": [polygon(50)]})[0] == 201


def test_json_responses_carry_nosniff(app: Flask, assignment: tuple[Api, int]) -> None:
    client = app.test_client()
    for response in (client.get("/healthz"), client.get("/api/auth/me"), client.get("/api/nothing-here"),
                     client.post("/api/auth/login", json={"username": "x", "password": "y"})):
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.status_code
