"""Ground Truth callbacks against a real Orthanc and moto's S3/STS server: functions, HTTP and Lambda."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydicom.data import get_testdata_file

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.config import Secret
from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.groundtruth import human_annotation_required, read_output_manifest
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.metrics import metrics_port
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, signer_from_entries
from dicomlab_labeling.app import create_app
from dicomlab_labeling.config import CallbackAuth, GroundTruthSettings, LabelingConfig
from dicomlab_labeling.groundtruth import lambda_handlers
from dicomlab_labeling.groundtruth.callbacks import CallbackContext, post_annotation, pre_annotation

METRICS_BASE_URL = f"http://localhost:{metrics_port()}"
"""Flask test clients scrape /metrics on the metrics port (the public one answers 404)."""

JOB_ARN = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/chest-review-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/gt-consolidation"
SERVICE_TOKEN = "svc-token-for-tests-0123456789"
LABELS = ["Cardiomegaly", "Edema", "No Finding"]


@pytest.fixture(scope="module")
def token_key() -> str:
    return KeyRing.generate_entry("k1")


@pytest.fixture
def config(orthanc: OrthancServer, token_key: str, tmp_path: Path) -> LabelingConfig:
    return LabelingConfig(token_keys=(Secret(token_key),), orthanc=orthanc.settings(),
                          proxy_public_url="https://proxy.example.org/", token_ttl_seconds=7200,
                          data_dir=tmp_path, gt=GroundTruthSettings(service_token=Secret(SERVICE_TOKEN)))


@pytest.fixture
def ctx(config: LabelingConfig, orthanc_client: OrthancClient) -> CallbackContext:
    return CallbackContext(config=config, orthanc=orthanc_client, signer=signer_from_entries(config.token_keys))


@pytest.fixture
def image(synthetic_set: list[dict[str, Any]]) -> dict[str, Any]:
    return synthetic_set[0]


def _s3() -> Any:
    """A client for moto's server (the s3_endpoint fixture exports its URL)."""
    import os

    return boto3.client("s3", endpoint_url=os.environ["DICOMLAB_S3_ENDPOINT_URL"])


def _event(data_object: dict[str, Any]) -> dict[str, Any]:
    return {"version": "2018-10-16", "labelingJobArn": JOB_ARN, "dataObject": data_object}


# ------------------------------------------------------------------------------------------ pre-annotation


def test_pre_annotation_documented_shape_and_scoped_token(ctx: CallbackContext, image: dict[str, Any]) -> None:
    response = pre_annotation(_event({"source": image["orthanc_id"], "labels": ",".join(LABELS)}), ctx)
    assert set(response) == {"taskInput", "isHumanAnnotationRequired"}
    assert response["isHumanAnnotationRequired"] is True
    task = response["taskInput"]
    assert task["taskObject"] == f"https://proxy.example.org/instances/{image['orthanc_id']}/file"
    assert task["wadoRsRoot"] == "https://proxy.example.org/dicom-web"
    assert (task["studyInstanceUid"], task["seriesInstanceUid"], task["sopInstanceUid"]) == (
        image["study_uid"], image["series_uid"], image["sop_uid"])
    assert task["labels"] == LABELS
    assert "previousAnswer" not in task
    claims = ctx.signer.verify(task["token"])
    assert claims.expires_at - claims.issued_at == 7200
    assert claims.subject == "gt:chest-review-1"
    assert claims.scope.allows(orthanc_id=image["orthanc_id"])
    assert claims.scope.allows(study=image["study_uid"], series=image["series_uid"], instance=image["sop_uid"])
    assert not claims.scope.allows(orthanc_id="another-instance")
    assert not claims.scope.allows(study=image["study_uid"], series=image["series_uid"], instance="1.2.3")
    json.dumps(response)  # what the Lambda runtime will serialize


def test_pre_annotation_label_array_default_labels_and_previous_answer(ctx: CallbackContext,
                                                                        image: dict[str, Any]) -> None:
    box = {"tool": "rectangle", "finding": "Edema", "points": [[1, 2], [30, 40]]}
    other = {"tool": "ellipse", "finding": "Fracture", "points": [[5, 5], [9, 9]]}
    previous = {"findings": {"Edema": {"value": "present", "confidence": 0.9, "agreement": 1.0, "answers": 2},
                             "Fracture": {"value": "absent", "confidence": 0.8, "agreement": 0.5, "answers": 2}},
                "method": "majority",
                "workers": [{"workerId": "a", "answer": json.dumps({"findings": {"Edema": "present"}, "rois": [box]})},
                            {"workerId": "b", "answer": json.dumps({"findings": {"Fracture": "present"},
                                                                    "rois": [other]})}]}
    meta = {"type": "groundtruth/custom", "job-name": "first-pass", "human-annotated": "yes",
            "creation-date": "2025-01-01T00:00:00.000000"}
    review = pre_annotation(_event({"source": image["orthanc_id"], "labels": ["Edema", "Fracture"],
                                    "first-pass": previous, "first-pass-metadata": meta}), ctx)
    assert review["taskInput"]["labels"] == ["Edema", "Fracture"]
    assert review["taskInput"]["previousAnswer"] == {
        "findings": {"Edema": "present", "Fracture": "absent"},
        "rois": [box],  # only ROIs of findings that ended up present
        "labelAttributeName": "first-pass", "jobName": "first-pass", "content": previous}
    # The reference sample's pass-through output works as a previous answer too.
    sample = {"annotationsFromAllWorkers": [{"workerId": "a", "annotationData": {"content": json.dumps(
        {"disease": {"Edema": True, "Fracture": False}, "labels": json.dumps({"label": ["Edema"]})})}}]}
    again = pre_annotation(_event({"source": image["orthanc_id"], "labels": "Edema,Fracture", "old": sample,
                                   "old-metadata": meta}), ctx)
    assert again["taskInput"]["previousAnswer"]["findings"] == {"Edema": "present", "Fracture": "absent"}
    # A JSON array written as a string is a label list, not a comma string ('["Edema"', '"Fracture"]').
    as_text = pre_annotation(_event({"source": image["orthanc_id"], "labels": json.dumps(["Edema", "Fracture"]),
                                     "first-pass": previous, "first-pass-metadata": meta}), ctx)
    assert as_text["taskInput"]["labels"] == ["Edema", "Fracture"]
    assert as_text["taskInput"]["previousAnswer"]["findings"] == {"Edema": "present", "Fracture": "absent"}
    plain = pre_annotation(_event({"source": image["orthanc_id"]}), ctx)
    assert plain["taskInput"]["labels"] == list(CHEXPERT_LABELS)


def test_pre_annotation_unknown_instance_errors_or_skips(ctx: CallbackContext) -> None:
    event = _event({"source": "00000000-00000000-00000000-00000000-00000000"})
    with pytest.raises(NotFound, match="not in the PACS"):
        pre_annotation(event, ctx)
    ctx.config = replace(ctx.config, gt=replace(ctx.config.gt, skip_unknown_instances=True))
    skipped = pre_annotation(event, ctx)
    assert skipped["isHumanAnnotationRequired"] is False
    assert "token" not in skipped["taskInput"]


@pytest.mark.parametrize("bad", [{}, {"dataObject": "x"}, {"dataObject": {}},
                                 {"dataObject": {"source": "a", "source-ref": "s3://b/k"}},
                                 {"dataObject": {"source": "a", "labels": "A,A"}}])
def test_pre_annotation_rejects_malformed_requests(ctx: CallbackContext, bad: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        pre_annotation(bad, ctx)


def test_is_human_annotation_required_reads_bool_and_string() -> None:
    assert human_annotation_required({"isHumanAnnotationRequired": True})
    assert human_annotation_required({"isHumanAnnotationRequired": "true"})
    assert not human_annotation_required({"isHumanAnnotationRequired": "false"})
    assert not human_annotation_required({})


def test_pre_annotation_source_ref_resolves_through_the_pacs(ctx: CallbackContext, image: dict[str, Any],
                                                             orthanc_client: OrthancClient, s3_bucket: str) -> None:
    ctx.config = replace(ctx.config, extra_read_stores=(s3_bucket,))
    bucket = s3_bucket.removeprefix("s3://")
    s3 = _s3()
    s3.put_object(Bucket=bucket, Key="images/in-pacs.dcm", Body=orthanc_client.get_instance_file(image["orthanc_id"]))
    s3.put_object(Bucket=bucket, Key="images/not-in-pacs.dcm", Body=Path(str(get_testdata_file("CT_small.dcm"))).read_bytes())
    s3.put_object(Bucket=bucket, Key="images/not-dicom.dcm", Body=b"<html>error page</html>")
    task = pre_annotation(_event({"source-ref": f"{s3_bucket}/images/in-pacs.dcm"}), ctx)["taskInput"]
    assert task["sopInstanceUid"] == image["sop_uid"]
    assert task["taskObject"].endswith(f"/instances/{image['orthanc_id']}/file")
    # A line that names the SOP Instance UID needs no read of the object (this key does not exist).
    named = pre_annotation(_event({"source-ref": f"{s3_bucket}/missing.dcm", "sop-instance-uid": image["sop_uid"]}),
                           ctx)
    assert named["taskInput"]["orthancId"] == image["orthanc_id"]
    with pytest.raises(NotFound, match="not in the PACS"):
        pre_annotation(_event({"source-ref": f"{s3_bucket}/images/not-in-pacs.dcm"}), ctx)
    with pytest.raises(BadRequest, match="not a DICOM file"):
        pre_annotation(_event({"source-ref": f"{s3_bucket}/images/not-dicom.dcm"}), ctx)


# ------------------------------------------------------------------------------------------ post-annotation


def _clean(findings: dict[str, str], seconds: float = 30.0) -> str:
    return json.dumps({"findings": findings, "rois": [], "sopInstanceUid": "1.2.3", "timeSpentSeconds": seconds})


def _sample(ticked: list[str]) -> str:
    return json.dumps({"disease": {label: label in ticked for label in LABELS},
                       "labels": json.dumps({"label": ticked, "imageurl": "https://x/instances/a/file", "ROI": {}})})


def _annotation_file(bucket: str) -> list[dict[str, Any]]:
    s3 = _s3()
    s3.put_object(Bucket=bucket, Key="answers/w3-obj1.json",
                  Body=_clean({"Cardiomegaly": "absent", "Edema": "absent", "No Finding": "present"}).encode())
    return [
        {"datasetObjectId": "0", "dataObject": {"content": "orthanc-id-0"}, "annotations": [
            {"workerId": "private.us-east-1.w1", "annotationData": {"content": _clean(
                {"Cardiomegaly": "present", "Edema": "absent", "No Finding": "absent"})}},
            {"workerId": "private.us-east-1.w2", "annotationData": {"content": _sample(["Cardiomegaly"])}},
            {"workerId": "private.us-east-1.w3", "annotationData": {"content": json.dumps({"answer": _clean(
                {"Cardiomegaly": "absent", "Edema": "uncertain", "No Finding": "absent"})})}},
        ]},
        {"datasetObjectId": "1", "dataObject": {"content": "orthanc-id-1"}, "annotations": [
            {"workerId": "private.us-east-1.w1", "annotationData": {"content": _clean(
                {"Cardiomegaly": "present", "No Finding": "present"})}},                       # malformed
            {"workerId": "private.us-east-1.w2", "annotationData": {"content": "{truncated"}},  # malformed
            {"workerId": "private.us-east-1.w3", "annotationData": {"s3Uri": f"s3://{bucket}/answers/w3-obj1.json"}},
            {"workerId": "private.us-east-1.w4", "annotationData": {"s3Uri": f"s3://{bucket}/answers/gone.json"}},
        ]},
        {"datasetObjectId": "2", "dataObject": {"content": "orthanc-id-2"}, "annotations": []},
    ]


def _post_event(uri: str, role: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"version": "2018-10-16", "labelingJobArn": JOB_ARN, "labelCategories": LABELS,
                             "labelAttributeName": "chest-findings", "payload": {"s3Uri": uri}}
    if role:
        event["roleArn"] = role
    return event


def _check_response(response: list[dict[str, Any]]) -> None:
    assert [r["datasetObjectId"] for r in response] == ["0", "1", "2"]
    for entry in response:
        assert set(entry) == {"datasetObjectId", "consolidatedAnnotation"}
        assert set(entry["consolidatedAnnotation"]) == {"content"}
        assert set(entry["consolidatedAnnotation"]["content"]) == {"chest-findings"}
    first, second, third = (r["consolidatedAnnotation"]["content"]["chest-findings"] for r in response)
    assert first["findings"]["Cardiomegaly"]["value"] == "present"          # 2 of 3 (one via the sample shape)
    assert first["findings"]["Cardiomegaly"]["agreement"] == pytest.approx(0.6667)
    assert first["findings"]["Edema"]["value"] == "absent"
    assert first["method"] == "majority"  # three objects are too few to fit reader reliabilities
    assert [w["workerId"] for w in first["workers"]] == ["private.us-east-1.w1", "private.us-east-1.w2",
                                                         "private.us-east-1.w3"]
    assert "disease" in first["workers"][1]["answer"]                      # raw sample answer kept
    assert second["findings"]["No Finding"]["value"] == "present"           # the answer read from S3
    reasons = {r["workerId"]: r["reason"] for r in second["rejected"]}
    assert set(reasons) == {"private.us-east-1.w1", "private.us-east-1.w2", "private.us-east-1.w4"}
    assert "No Finding" in reasons["private.us-east-1.w1"] and "cannot read answer" in reasons["private.us-east-1.w4"]
    # Every raw answer is kept, the malformed ones too, exactly as received.
    kept = {r["workerId"]: r.get("answer") for r in second["rejected"]}
    assert kept["private.us-east-1.w2"] == "{truncated"
    assert json.loads(kept["private.us-east-1.w1"])["findings"] == {"Cardiomegaly": "present", "No Finding": "present"}
    assert kept["private.us-east-1.w4"]["s3Uri"].endswith("/answers/gone.json")
    assert third["flags"] == ["no-valid-answer"] and third["method"] == "none"


def test_post_annotation_reads_s3_and_covers_every_object(ctx: CallbackContext, s3_bucket: str) -> None:
    ctx.config = replace(ctx.config, extra_read_stores=(s3_bucket,))
    bucket = s3_bucket.removeprefix("s3://")
    _s3().put_object(Bucket=bucket, Key="consolidation/iteration-1/batch.json",
                                  Body=json.dumps(_annotation_file(bucket)).encode())
    response = post_annotation(_post_event(f"{s3_bucket}/consolidation/iteration-1/batch.json"), ctx)
    _check_response(response)
    assert list(ctx._clients) == [None]  # no role in the request: own credentials


def test_post_annotation_assumes_the_role_with_sts(ctx: CallbackContext, s3_bucket: str, s3_endpoint: str) -> None:
    ctx.config = replace(ctx.config, gt=replace(ctx.config.gt, sts_endpoint_url=s3_endpoint),
                         extra_read_stores=(s3_bucket,))
    bucket = s3_bucket.removeprefix("s3://")
    _s3().put_object(Bucket=bucket, Key="batch.json", Body=json.dumps(_annotation_file(bucket)).encode())
    _check_response(post_annotation(_post_event(f"{s3_bucket}/batch.json", ROLE_ARN), ctx))
    client = ctx._clients[ROLE_ARN]
    creds = client._request_signer._credentials
    assert creds.access_key != "testing" and creds.token  # temporary credentials from AssumeRole
    identity = boto3.client("sts", endpoint_url=s3_endpoint, aws_access_key_id=creds.access_key,
                            aws_secret_access_key=creds.secret_key, aws_session_token=creds.token
                            ).get_caller_identity()
    assert "assumed-role/gt-consolidation/dicomlab-consolidation" in identity["Arn"]
    # With assume_role off, the same request reads with the service's own credentials.
    ctx.config = replace(ctx.config, gt=replace(ctx.config.gt, assume_role=False))
    ctx._clients.clear()
    _check_response(post_annotation(_post_event(f"{s3_bucket}/batch.json", ROLE_ARN), ctx))
    assert list(ctx._clients) == [None]


@pytest.mark.parametrize("bad", [{}, {"payload": {}}, {"payload": {"s3Uri": "s3://b/k"}},
                                 {"payload": {"s3Uri": "s3://b/k"}, "labelAttributeName": "x-metadata"},
                                 {"payload": {"s3Uri": "s3://b/k"}, "labelAttributeName": "x", "labelCategories": "A"},
                                 {"payload": {"s3Uri": "s3://b/k"}, "labelAttributeName": "x",
                                  "labelCategories": ["A", "A"]}])
def test_post_annotation_rejects_malformed_requests(ctx: CallbackContext, bad: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        post_annotation(bad, ctx)


# ------------------------------------------------------------------------------------------ HTTP


def _json(response: Any) -> Any:
    body = response.get_json()
    assert body is not None, response.data[:200]
    return body


def test_http_endpoints_same_shapes_and_service_token(config: LabelingConfig, image: dict[str, Any],
                                                      s3_bucket: str) -> None:
    client = create_app(replace(config, extra_read_stores=(s3_bucket,))).test_client()
    event = _event({"source": image["orthanc_id"], "labels": "Edema"})
    refused = client.post("/gt/pre-annotation", json=event)
    assert refused.status_code == 401 and _json(refused)["name"] == "Unauthorized"
    wrong = client.post("/gt/pre-annotation", json=event, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    ok = client.post("/gt/pre-annotation", json=event, headers=auth)
    assert ok.status_code == 200 and _json(ok)["isHumanAnnotationRequired"] is True
    assert _json(ok)["taskInput"]["labels"] == ["Edema"]
    missing = client.post("/gt/pre-annotation", json=_event({"source": "nope"}), headers=auth)
    assert missing.status_code == 404 and "not in the PACS" in _json(missing)["description"]
    bad = client.post("/gt/pre-annotation", data="not json", headers=auth, content_type="application/json")
    assert bad.status_code == 400
    bucket = s3_bucket.removeprefix("s3://")
    _s3().put_object(Bucket=bucket, Key="b.json", Body=json.dumps(_annotation_file(bucket)).encode())
    post = client.post("/gt/post-annotation", json=_post_event(f"{s3_bucket}/b.json"), headers=auth)
    assert post.status_code == 200
    _check_response(_json(post))
    metrics = client.get("/metrics", base_url=METRICS_BASE_URL).get_data(as_text=True)
    assert 'dicomlab_gt_consolidated_objects_total{method="majority"}' in metrics
    assert 'dicomlab_gt_pre_annotations_total{outcome="task"}' in metrics


def test_http_callbacks_disabled_without_a_token_and_open_with_iam_mode(config: LabelingConfig,
                                                                        image: dict[str, Any]) -> None:
    disabled = create_app(replace(config, gt=GroundTruthSettings())).test_client()
    assert disabled.post("/gt/pre-annotation", json=_event({"source": image["orthanc_id"]})).status_code == 503
    iam = create_app(replace(config, gt=GroundTruthSettings(callback_auth=CallbackAuth.NONE))).test_client()
    assert iam.post("/gt/pre-annotation", json=_event({"source": image["orthanc_id"]})).status_code == 200


# ------------------------------------------------------------------------------------------ Lambda + CLI


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, orthanc: OrthancServer, token_key: str) -> Iterator[None]:
    lambda_handlers._contexts.clear()
    monkeypatch.setenv("DICOMLAB_LABELING__ORTHANC__URL", orthanc.url)
    monkeypatch.setenv("DICOMLAB_LABELING__ORTHANC__USERNAME", orthanc.username)
    monkeypatch.setenv("DICOMLAB_LABELING__ORTHANC__PASSWORD", orthanc.password.reveal())
    monkeypatch.setenv("DICOMLAB_LABELING__PROXY_PUBLIC_URL", "https://proxy.example.org")
    monkeypatch.setenv("DICOMLAB_LABELING__LABELS", ",".join(LABELS))
    monkeypatch.setenv("DICOMLAB_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("DICOMLAB_LABELING__TOKEN_KEYS", raising=False)
    yield
    lambda_handlers._contexts.clear()


def test_lambda_handlers_round_trip(lambda_env: None, monkeypatch: pytest.MonkeyPatch, token_key: str,
                                    image: dict[str, Any], s3_bucket: str) -> None:
    monkeypatch.setenv("DICOMLAB_LABELING__EXTRA_READ_STORES", s3_bucket)
    bucket = s3_bucket.removeprefix("s3://")
    _s3().put_object(Bucket=bucket, Key="b.json", Body=json.dumps(_annotation_file(bucket)).encode())
    # The consolidation function needs no signing key at all.
    response = json.loads(json.dumps(lambda_handlers.post_annotation(_post_event(f"{s3_bucket}/b.json"), None)))
    _check_response(response)
    monkeypatch.setenv("DICOMLAB_LABELING__TOKEN_KEYS", token_key)
    pre = json.loads(json.dumps(lambda_handlers.pre_annotation(_event({"source": image["orthanc_id"]}), None)))
    assert pre["isHumanAnnotationRequired"] is True and pre["taskInput"]["labels"] == LABELS
    assert signer_from_entries([token_key]).verify(pre["taskInput"]["token"]).scope.orthanc_ids == (
        image["orthanc_id"],)


def test_cli_consolidate_writes_an_output_manifest(lambda_env: None, s3_bucket: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomlab_cli.main import main

    monkeypatch.setenv("DICOMLAB_LABELING__EXTRA_READ_STORES", s3_bucket)  # answers stored by URI live there

    bucket = s3_bucket.removeprefix("s3://")
    _s3().put_object(Bucket=bucket, Key="b.json", Body=json.dumps(_annotation_file(bucket)).encode())
    manifest = tmp_path / "input.manifest"
    manifest.write_text("\n".join(json.dumps({"source": f"orthanc-id-{i}", "labels": ",".join(LABELS),
                                              "study-uid": f"1.2.{i}"}) for i in range(3)) + "\n")
    out, report = tmp_path / "out" / "output.manifest", tmp_path / "out" / "report.json"
    code = main(["labeling", "consolidate", "--annotations", f"{s3_bucket}/b.json", "--attr", "chest-findings",
                 "--input-manifest", str(manifest), "--out", str(out), "--report", str(report),
                 "--job-name", "chest-review-1"])
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["study-uid"] == "1.2.0" and first["chest-findings-metadata"]["job-name"] == "chest-review-1"
    objects = list(read_output_manifest(lines))
    assert [o.source for o in objects] == ["orthanc-id-0", "orthanc-id-1", "orthanc-id-2"]
    assert objects[0].values == {"Cardiomegaly": 1.0, "Edema": 0.0, "No Finding": 0.0}
    assert objects[2].values == dict.fromkeys(LABELS)
    job = json.loads(report.read_text())
    assert len(job["rejected"]) == 3 and set(job["findings"]) == set(LABELS)


def test_the_task_token_opens_exactly_its_image_through_the_proxy(ctx: CallbackContext, token_key: str,
                                                                   orthanc: OrthancServer,
                                                                   synthetic_set: list[dict[str, Any]]) -> None:
    """End to end with the real DICOMweb proxy app: the task's URL + token read the image, nothing else."""
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    image, other = synthetic_set[0], synthetic_set[1]
    task = pre_annotation(_event({"source": image["orthanc_id"]}), ctx)["taskInput"]
    proxy = proxy_app(ProxyConfig(token_keys=(Secret(token_key),), orthanc=orthanc.settings(),
                                  allowed_origins=("https://s3.amazonaws.com",))).test_client()
    path = task["taskObject"].removeprefix("https://proxy.example.org")
    auth = {"Authorization": f"Bearer {task['token']}", "Origin": "https://s3.amazonaws.com"}
    file = proxy.get(path, headers=auth)
    assert file.status_code == 200 and file.data[128:132] == b"DICM"
    assert file.headers["Access-Control-Allow-Origin"] == "https://s3.amazonaws.com"
    wado = (f"{task['wadoRsRoot'].removeprefix('https://proxy.example.org')}/studies/{task['studyInstanceUid']}"
            f"/series/{task['seriesInstanceUid']}/instances/{task['sopInstanceUid']}/metadata")
    assert proxy.get(wado, headers=auth).status_code == 200
    assert proxy.get(f"/instances/{other['orthanc_id']}/file", headers=auth).status_code in (401, 403)
    assert proxy.get(path).status_code == 401
