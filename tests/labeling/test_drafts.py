"""Drafts (#19 item 4): autosaved per assignment, restored in any session, owner-only, under the
answer size limits, deleted by a submit; correcting a submission stores a new version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import PASSWORD, Api, first_assignment, labeling_app

from dicomlab_cli.processes import OrthancServer
from dicomlab_labeling.config import AnswerLimits

LIMITS = AnswerLimits(max_points_per_roi=50, max_rois=5, max_bytes=4096)
DRAFT: dict[str, Any] = {"findings": {"Edema": "present"},
                         "rois": [{"tool": "rectangle", "finding": "Edema", "points": [[1, 2], [30, 40]]}],
                         "note": "half done"}


@pytest.fixture
def app(tmp_path: Path, orthanc: OrthancServer) -> Iterator[Flask]:
    with labeling_app(tmp_path, orthanc, answers=LIMITS) as application:
        yield application


@pytest.fixture
def assignment(app: Flask, tmp_path: Path, synthetic_set: list[dict[str, Any]]) -> tuple[Api, int]:
    return first_assignment(app, tmp_path, synthetic_set[:2], ["ann", "bob"], name="drafts")


def test_a_draft_is_restored_in_another_session_and_deleted_by_submit(app: Flask,
                                                                       assignment: tuple[Api, int]) -> None:
    ann, aid = assignment
    assert ann.call("GET", f"/assignments/{aid}/draft")[0] == 204
    status, body = ann.call("PUT", f"/assignments/{aid}/draft", {"answer": DRAFT})
    assert status == 200 and body["updatedAt"], body
    changed = {**DRAFT, "findings": {"Edema": "uncertain"}}
    assert ann.call("PUT", f"/assignments/{aid}/draft", {"answer": changed})[0] == 200
    other_browser = Api(app).login("ann", PASSWORD)  # a second sign-in: another browser
    status, body = other_browser.call("GET", f"/assignments/{aid}/draft")
    assert status == 200 and body["answer"] == changed, body
    status, body = ann.submit(aid, {"Edema": "present"})
    assert status == 201, body
    assert ann.call("GET", f"/assignments/{aid}/draft")[0] == 204
    # Correcting the submitted image: a draft again, then version 2.
    assert ann.call("PUT", f"/assignments/{aid}/draft", {"answer": changed})[0] == 200
    status, body = ann.submit(aid, {"Edema": "absent"})
    assert status == 201 and body["submission"]["version"] == 2, body
    assert ann.call("GET", f"/assignments/{aid}/draft")[0] == 204


def test_a_draft_is_owner_only(app: Flask, assignment: tuple[Api, int]) -> None:
    ann, aid = assignment
    assert ann.call("PUT", f"/assignments/{aid}/draft", {"answer": DRAFT})[0] == 200
    bob = Api(app).login("bob", PASSWORD)
    assert bob.call("GET", f"/assignments/{aid}/draft")[0] == 403
    assert bob.call("PUT", f"/assignments/{aid}/draft", {"answer": {}})[0] == 403
    assert bob.call("DELETE", f"/assignments/{aid}/draft")[0] == 403
    assert ann.call("GET", f"/assignments/{aid}/draft")[1]["answer"] == DRAFT
    assert ann.call("DELETE", f"/assignments/{aid}/draft")[0] == 204
    assert ann.call("GET", f"/assignments/{aid}/draft")[0] == 204


@pytest.mark.parametrize(("answer", "message"), [
    ("text", "answer: a JSON object"),
    ({"findings": {}, "rois": [DRAFT["rois"][0]] * 6}, "at most 5 ROIs per answer (ANSWERS__MAX_ROIS)"),
    ({"findings": {}, "rois": [{"tool": "polygon", "finding": "Edema", "points": [[1, 1]] * 51}]},
     "at most 50 points per ROI (ANSWERS__MAX_POINTS_PER_ROI)"),
    ({"findings": {}, "note": "x" * 5000}, "bytes per answer (ANSWERS__MAX_BYTES)"),
])
def test_a_draft_over_a_limit_is_refused(assignment: tuple[Api, int], answer: Any, message: str) -> None:
    ann, aid = assignment
    status, body = ann.call("PUT", f"/assignments/{aid}/draft", {"answer": answer})
    assert status == 400 and message in body["description"], body
    assert ann.call("GET", f"/assignments/{aid}/draft")[0] == 204


def test_a_skipped_assignment_takes_no_draft(assignment: tuple[Api, int]) -> None:
    ann, aid = assignment
    assert ann.call("PUT", f"/assignments/{aid}/draft", {"answer": DRAFT})[0] == 200
    assert ann.call("POST", f"/assignments/{aid}/skip", {"reason": "blurred"})[0] == 200
    assert ann.call("PUT", f"/assignments/{aid}/draft", {"answer": DRAFT})[0] == 404
