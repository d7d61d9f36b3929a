"""No file oracle: URIs in labeling requests reach only the configured object store, with one refusal.

Ground Truth callbacks (``payload.s3Uri``, ``annotationData.s3Uri``, ``source-ref``) and job creation
(``manifestUri``) against the real app: a file outside the store that exists, one that does not, a
folder, ``..`` traversal and symlinks leading out all get the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import ADMIN, Api, database_url, make_config

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.config import Secret
from dicomlab_core.objectstore import OUTSIDE_STORE
from dicomlab_labeling.app import create_app
from dicomlab_labeling.config import GroundTruthSettings

SERVICE_TOKEN = "svc-token-for-confinement-tests"
AUTH = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def escapes(tmp_path: Path) -> dict[str, str]:
    """URIs that lead out of ``tmp_path/store``; the first exists, the second does not, and so on."""
    store = tmp_path / "store"
    (store / "manifests").mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "private" / "annotations.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps([{"datasetObjectId": "0", "annotations": []}]))
    (store / "leak.json").symlink_to(outside)
    (store / "up").symlink_to(tmp_path / "private")
    return {
        "existing file outside": f"file://{outside}",
        "missing file outside": f"file://{tmp_path}/private/none.json",
        "directory outside": f"file://{tmp_path}/private",
        "dot-dot traversal": f"file://{store}/manifests/../../private/annotations.json",
        "symlink to a file outside": f"file://{store}/leak.json",
        "symlink to a folder outside": f"file://{store}/up/annotations.json",
        "system file": "file:///etc/hostname",
        "another bucket": "s3://someone-elses-bucket/annotations.json",
    }


@pytest.fixture
def app(tmp_path: Path, orthanc: OrthancServer) -> Iterator[Flask]:
    config = make_config(tmp_path, database_url("sqlite", tmp_path, None), orthanc)
    application = create_app(replace(config, gt=GroundTruthSettings(service_token=Secret(SERVICE_TOKEN))))
    yield application
    application.extensions["dicomlab_labeling_api"].db.dispose()


def _post_event(uri: str) -> dict[str, Any]:
    return {"version": "2018-10-16", "labelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/j",
            "labelCategories": ["Edema", "No Finding"], "labelAttributeName": "chest", "payload": {"s3Uri": uri}}


def test_post_annotation_file_uri_outside_the_store_gets_one_answer(app: Flask, tmp_path: Path) -> None:
    client = app.test_client()
    answers = {}
    for case, uri in escapes(tmp_path).items():
        response = client.post("/gt/post-annotation", json=_post_event(uri), headers=AUTH)
        answers[case] = (response.status_code, response.get_json())
    assert set(json.dumps(a, sort_keys=True) for a in answers.values()) == {json.dumps(
        (400, {"code": 400, "name": "Bad Request", "description": f"payload.s3Uri: {OUTSIDE_STORE}"}),
        sort_keys=True)}, answers
    # Inside the store the same request is served.
    inside = tmp_path / "store" / "gt" / "batch.json"
    inside.parent.mkdir()
    inside.write_text(json.dumps([{"datasetObjectId": "0", "annotations": [
        {"workerId": "w1", "annotationData": {"content": json.dumps({"findings": {"Edema": "present"}})}}]}]))
    ok = client.post("/gt/post-annotation", json=_post_event(f"file://{inside}"), headers=AUTH)
    assert ok.status_code == 200, ok.get_json()


def test_answers_stored_by_uri_outside_the_store_are_rejected_alike(app: Flask, tmp_path: Path) -> None:
    cases = escapes(tmp_path)
    batch = tmp_path / "store" / "gt" / "batch.json"
    batch.parent.mkdir()
    batch.write_text(json.dumps([{"datasetObjectId": "0", "annotations": [
        {"workerId": f"w{i}", "annotationData": {"s3Uri": uri}} for i, uri in enumerate(cases.values())]}]))
    response = app.test_client().post("/gt/post-annotation", json=_post_event(f"file://{batch}"), headers=AUTH)
    assert response.status_code == 200
    rejected = response.get_json()[0]["consolidatedAnnotation"]["content"]["chest"]["rejected"]
    assert len(rejected) == len(cases)
    assert {r["reason"] for r in rejected} == {f"cannot read answer: annotationData.s3Uri: {OUTSIDE_STORE}"}


def test_source_ref_outside_the_store_is_refused_alike(app: Flask, tmp_path: Path) -> None:
    client = app.test_client()
    bodies = set()
    for uri in escapes(tmp_path).values():
        event = {"version": "2018-10-16", "labelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/j",
                 "dataObject": {"source-ref": uri}}
        response = client.post("/gt/pre-annotation", json=event, headers=AUTH)
        bodies.add((response.status_code, json.dumps(response.get_json(), sort_keys=True)))
    assert bodies == {(400, json.dumps({"code": 400, "name": "Bad Request",
                                        "description": f"dataObject.source-ref: {OUTSIDE_STORE}"}, sort_keys=True))}


def test_job_manifest_uri_outside_the_store_is_refused_alike(app: Flask, tmp_path: Path) -> None:
    admin = Api(app).login(*ADMIN)
    answers = set()
    for number, uri in enumerate(escapes(tmp_path).values()):
        status, body = admin.call("POST", "/admin/jobs", {"name": f"j{number}", "manifestUri": uri})
        answers.add((status, body["description"]))
    assert answers == {(400, f"manifestUri: {OUTSIDE_STORE}")}
    # A manifest inside the store, by URI or by key, is read (and a missing one there says so).
    store = tmp_path / "store"
    status, body = admin.call("POST", "/admin/jobs", {"name": "gone", "manifestUri": f"file://{store}/manifests/x"})
    assert status == 400 and "no manifest" in body["description"]
