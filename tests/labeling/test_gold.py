"""Gold-standard images: mixed into the queue, indistinguishable to readers, scored per reader, never exported.

One job of three ordinary images and two gold images (one from a truth file line, one from an
adjudicated export's output manifest line). Two readers answer everything; one of them gets a
known finding wrong. The reader-facing API must look the same for gold and ordinary assignments
(key sets, token claims, image URLs, no "gold" anywhere); the admin views and /metrics show each
reader's accuracy; the export holds the ordinary images only.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest
from sqlalchemy import select

from dicomlab_cli.main import main
from dicomlab_cli.processes import OrthancServer
from dicomlab_core.groundtruth import ConsolidatedLabel, FindingConsensus, dump_line, output_manifest_line
from dicomlab_core.labels import FindingState
from dicomlab_core.metrics import metrics_port
from dicomlab_labeling.app import create_app
from dicomlab_labeling.config import ConsolidationMethod, ConsolidationSettings
from dicomlab_labeling.consensus import dawid_skene
from dicomlab_labeling.workflow.db import Database
from dicomlab_labeling.workflow.models import Task

METRICS_BASE_URL = f"http://localhost:{metrics_port()}"
LABELS = ["No Finding", "Cardiomegaly", "Edema", "Pneumothorax"]
TRUTH_A = {"Cardiomegaly": "present", "Edema": "absent"}
TRUTH_B = {"Cardiomegaly": "absent", "Edema": "present", "Pneumothorax": "absent"}
ANN = {"Cardiomegaly": "present", "Edema": "absent", "Pneumothorax": "absent"}  # answers ordinary images


def _line(record: dict[str, Any]) -> dict[str, Any]:
    return {"source": record["orthanc_id"], "study-uid": record["study_uid"], "series-uid": record["series_uid"],
            "sop-instance-uid": record["sop_uid"]}


def _write_gold(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    """A truth-file line for the first record, an adjudicated export line for the second."""
    exported = ConsolidatedLabel(findings={name: FindingConsensus(FindingState(v), 1.0, 1.0, 2)
                                           for name, v in TRUTH_B.items()}, method="adjudicated")
    lines = [{**_line(records[0]), "gold": TRUTH_A},
             output_manifest_line(_line(records[1]), "earlier-job", exported, job_name="earlier-job")]
    path = tmp_path / "store" / "gold" / "gold.manifest"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dump_line(line) + "\n" for line in lines))
    return "gold/gold.manifest"


def _token_claims(token: str) -> dict[str, Any]:
    body = token.split(".")[2]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


def _shape(value: Any) -> Any:
    """The key structure of a JSON value (keys and types, not values)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.fixture
def scenario(tmp_path: Path, orthanc: OrthancServer,
             synthetic_set: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    normal, golden = synthetic_set[:3], synthetic_set[3:5]
    status, job = admin.call("POST", "/admin/jobs", {
        "name": "chest-batch", "manifestUri": write_manifest(tmp_path, normal), "readersPerImage": 2,
        "strategy": "in-order", "labels": LABELS, "goldUri": _write_gold(tmp_path, golden)})
    assert status == 201, job
    create_users(admin, ["ann", "bob"])
    gold_sops = {r["sop_uid"]: truth for r, truth in zip(golden, (TRUTH_A, TRUTH_B), strict=True)}
    seen: dict[str, list[dict[str, Any]]] = {"gold": [], "normal": []}
    bob_answers: dict[str, dict[str, str]] = {}
    for name in ("ann", "bob"):
        client = Api(app).login(name, PASSWORD)
        while True:
            status, data = client.call("POST", f"/jobs/{job['id']}/next")
            if status == 204:
                break
            assignment = data["assignment"]
            sop = assignment["image"]["sopInstanceUid"]
            kind = "gold" if sop in gold_sops else "normal"
            views = [data, client.call("GET", f"/assignments/{assignment['id']}")[1],
                     client.call("GET", "/queue")[1]["assignments"][0],
                     client.call("POST", f"/assignments/{assignment['id']}/token")[1]]
            findings = dict(gold_sops.get(sop, ANN))
            if name == "bob" and kind == "gold":
                findings["Cardiomegaly"] = "absent" if findings["Cardiomegaly"] == "present" else "present"
                bob_answers[sop] = findings
            status, submitted = client.submit(assignment["id"], findings, sop=sop)
            assert status == 201, submitted
            views.append(submitted)
            views.append(client.call("GET", f"/jobs/{job['id']}")[1])
            seen[kind].append({"views": views, "assignment": assignment})
    yield {"app": app, "admin": admin, "job": job, "seen": seen, "normal": normal, "golden": golden,
           "gold_sops": gold_sops, "bob": bob_answers}
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_gold_images_are_indistinguishable_to_readers(scenario: dict[str, Any]) -> None:
    seen = scenario["seen"]
    assert len(seen["gold"]) == 4 and len(seen["normal"]) == 6  # both readers got every image
    shapes = {kind: {json.dumps(_shape(e["views"]), sort_keys=True) for e in entries}
              for kind, entries in seen.items()}
    assert shapes["gold"] == shapes["normal"] and len(shapes["gold"]) == 1
    claims = {kind: {json.dumps(_shape(_token_claims(e["assignment"]["token"])), sort_keys=True)
                     for e in entries} for kind, entries in seen.items()}
    assert claims["gold"] == claims["normal"]
    for entries in seen.values():
        for entry in entries:
            text = json.dumps(entry["views"]).lower() + json.dumps(_token_claims(entry["assignment"]["token"]))
            assert "gold" not in text
            for view in [entry["views"][0]["assignment"], *entry["views"][1:4]]:
                token_claims = _token_claims(view["token"])
                assert set(token_claims) == {"aud", "iat", "exp", "sub", "jti", "scope", "deid"}
                assert token_claims["sub"] == f"assignment:{entry['assignment']['id']}"
            image = entry["assignment"]["image"]
            assert image["viewerUrl"].endswith(f"/instances/{image['sopInstanceUid']}/frames/1")


def test_admin_sees_the_gold_source_and_the_queue_keeps_the_manifest_order(scenario: dict[str, Any]) -> None:
    admin, job = scenario["admin"], scenario["job"]
    with scenario["app"].extensions["dicomlab_labeling_api"].db.session(readonly=True) as session:
        tasks = session.scalars(select(Task).where(Task.job_id == job["id"]).order_by(Task.position)).all()
        assert [t.position for t in tasks] == list(range(5))
        ordinary = [t.source for t in tasks if t.gold is None]
        assert ordinary == [r["orthanc_id"] for r in scenario["normal"]]  # gold inserted, manifest order kept
        assert {t.sop_instance_uid: t.gold for t in tasks if t.gold is not None} == scenario["gold_sops"]
        assert all("gold" not in t.manifest_line for t in tasks)
    status, view = admin.call("GET", f"/admin/jobs/{job['id']}")
    assert status == 200 and view["gold"] == {"goldUri": "gold/gold.manifest", "images": 2}
    assert view["counts"]["images"] == 5
    reader_view = Api(scenario["app"]).login("ann", PASSWORD).call("GET", f"/jobs/{job['id']}")[1]
    assert set(reader_view) == set(view) - {"gold"}


def test_gold_accuracy_in_admin_views_and_metrics(scenario: dict[str, Any]) -> None:
    admin, job, gold_sops, bob = scenario["admin"], scenario["job"], scenario["gold_sops"], scenario["bob"]
    status, agreement = admin.call("GET", f"/admin/jobs/{job['id']}/agreement")
    assert status == 200, agreement
    assert agreement["objects"] == 3  # gold images are not consolidated
    report = agreement["gold"]
    assert report["images"] == 2
    total = sum(len(t) for t in gold_sops.values())
    assert report["readers"]["ann"]["overall"] == {"correct": total, "total": total, "accuracy": 1.0}
    bob_right = sum(bob[sop].get(k) == v for sop, truth in gold_sops.items() for k, v in truth.items())
    assert bob_right == total - 2  # Cardiomegaly flipped on both gold images
    assert report["readers"]["bob"]["overall"]["correct"] == bob_right
    assert report["readers"]["bob"]["findings"]["Cardiomegaly"] == {"correct": 0, "total": 2, "accuracy": 0.0}
    assert report["readers"]["bob"]["findings"]["Edema"]["accuracy"] == 1.0
    assert "No Finding" not in report["readers"]["bob"]["findings"]  # no known answer for it
    readers = {r["username"]: r for r in admin.call("GET", f"/admin/jobs/{job['id']}/readers")[1]["readers"]}
    assert readers["bob"]["goldAccuracy"] == report["readers"]["bob"]
    metrics = scenario["app"].test_client().get("/metrics", base_url=METRICS_BASE_URL).get_data(as_text=True)
    expected = round(bob_right / total, 4)
    assert (f'dicomlab_labeling_gold_accuracy_ratio{{finding="all",labeling_job="chest-batch",reader="bob"}} '
            f'{float(expected)}') in metrics
    assert ('dicomlab_labeling_gold_accuracy_ratio{finding="Cardiomegaly",labeling_job="chest-batch",reader="bob"} '
            '0.0') in metrics


def test_export_leaves_gold_images_out(scenario: dict[str, Any]) -> None:
    admin, job = scenario["admin"], scenario["job"]
    status, outcome = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})
    assert status == 200, outcome
    assert outcome["images"] == 3
    manifest = Path(outcome["manifestUri"].removeprefix("file://")).read_text().splitlines()
    sources = {json.loads(line)["source"] for line in manifest}
    assert sources == {r["orthanc_id"] for r in scenario["normal"]}
    rows = list(csv.DictReader(io.StringIO(Path(outcome["csvUri"].removeprefix("file://")).read_text())))
    assert {r["source"] for r in rows} == sources
    for line in manifest:
        findings = json.loads(line)["chest-batch"]["findings"]
        assert findings["Cardiomegaly"]["value"] == "present" and findings["Edema"]["value"] == "absent"


@pytest.mark.parametrize(("gold", "error"), [
    ({"gold": {"Atelectasis": "present"}}, "is not a finding of this job"),
    ({"gold": {"Edema": "uncertain"}}, "expected 'present' or 'absent'"),
    ({}, "no known answers"),
    ({"gold": {}}, "no present/absent answer"),
])
def test_bad_gold_lines_are_refused(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
                                    gold: dict[str, Any], error: str) -> None:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    path = tmp_path / "store" / "gold.manifest"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**_line(synthetic_set[5]), **gold}) + "\n")
    manifest = write_manifest(tmp_path, synthetic_set[:2])
    status, data = admin.call("POST", "/admin/jobs", {"name": "bad", "manifestUri": manifest, "labels": LABELS,
                                                      "goldUri": "gold.manifest"})
    assert status == 400 and error in data["description"], data
    # The same image both ordinary and gold, a gold file outside the object store, a missing one.
    path.write_text(json.dumps({**_line(synthetic_set[0]), "gold": {"Edema": "present"}}) + "\n")
    for uri, message in (("gold.manifest", "already an image of this job"), ("file:///etc/passwd", "goldUri"),
                         ("missing.manifest", "goldUri: no manifest")):
        status, data = admin.call("POST", "/admin/jobs", {"name": "bad", "manifestUri": manifest, "labels": LABELS,
                                                          "goldUri": uri})
        assert status == 400 and message in data["description"], (uri, data)
    assert admin.call("GET", "/admin/jobs")[1]["jobs"] == []
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_dawid_skene_reader_priors_break_a_symmetric_disagreement() -> None:
    """Two readers who always disagree cannot be told apart by EM alone; gold pseudo-counts can."""
    objects = np.repeat(np.arange(30), 2)
    readers = np.tile(np.array([0, 1]), 30)
    a_says = (np.arange(30) < 15).astype(np.int8)
    answers = np.stack([a_says, 1 - a_says], axis=1).ravel()
    plain = dawid_skene.fit(objects, readers, answers, n_objects=30, n_readers=2)
    assert np.allclose(plain.posterior, 0.5)
    priors = np.array([[[20.0, 0.0], [0.0, 20.0]], [[0.0, 20.0], [20.0, 0.0]]])  # A always right, B always wrong
    informed = dawid_skene.fit(objects, readers, answers, n_objects=30, n_readers=2, prior_counts=priors)
    assert ((informed.posterior > 0.5) == (a_says == 1)).all()
    assert informed.sensitivity[0] > 0.9 and informed.sensitivity[1] < 0.1


@pytest.mark.parametrize("gold_priors", [False, True])
def test_gold_answers_as_reader_priors(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
                                       gold_priors: bool) -> None:
    """ann and bob disagree on Cardiomegaly on every ordinary image; on gold ann is right and bob wrong.
    Without gold priors Dawid–Skene cannot choose (a tie → uncertain); with them it follows ann."""
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc)
    settings = ConsolidationSettings(method=ConsolidationMethod.DAWID_SKENE, gold_priors=gold_priors)
    app = create_app(dataclasses.replace(config, consolidation=settings))
    admin = Api(app).login(*ADMIN)
    normal, golden = synthetic_set[:3], synthetic_set[3:5]
    status, job = admin.call("POST", "/admin/jobs", {
        "name": "priors", "manifestUri": write_manifest(tmp_path, normal), "readersPerImage": 2,
        "labels": LABELS, "goldUri": _write_gold(tmp_path, golden)})
    assert status == 201, job
    create_users(admin, ["ann", "bob"])
    truth = {r["sop_uid"]: t for r, t in zip(golden, (TRUTH_A, TRUTH_B), strict=True)}
    for name in ("ann", "bob"):
        client = Api(app).login(name, PASSWORD)
        while (reply := client.call("POST", f"/jobs/{job['id']}/next"))[0] == 200:
            assignment = reply[1]["assignment"]
            sop = assignment["image"]["sopInstanceUid"]
            findings = dict(truth.get(sop, {"Cardiomegaly": "present", "Edema": "absent"}))
            if name == "bob":
                findings["Cardiomegaly"] = "absent" if findings["Cardiomegaly"] == "present" else "present"
            assert client.submit(assignment["id"], findings, sop=sop)[0] == 201
    outcome = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})[1]
    lines = [json.loads(line) for line in Path(outcome["manifestUri"].removeprefix("file://")).read_text().splitlines()]
    assert len(lines) == 3
    values = {line["priors"]["findings"]["Cardiomegaly"]["value"] for line in lines}
    assert values == ({"present"} if gold_priors else {"uncertain"})
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_cli_job_create_with_gold(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", orthanc)
    for name, value in {"DICOMLAB_LABELING__TOKEN_KEYS": config.token_keys[0].reveal(),
                        "DICOMLAB_LABELING__DATABASE_URL": config.database_url.reveal(),
                        "DICOMLAB_LABELING__STORE_URL": config.store_url,
                        "DICOMLAB_LABELING__ORTHANC__URL": orthanc.url,
                        "DICOMLAB_LABELING__ORTHANC__PASSWORD": orthanc.password.reveal()}.items():
        monkeypatch.setenv(name, value)
    gold = tmp_path / "store" / "truth.jsonl"
    gold.parent.mkdir(parents=True, exist_ok=True)
    # no UIDs in the gold line: they are looked up in Orthanc like a manifest line's
    gold.write_text(json.dumps({"source": synthetic_set[4]["orthanc_id"], "gold": {"Edema": "present"}}) + "\n")
    key = write_manifest(tmp_path, synthetic_set[:2])
    assert main(["labeling", "job", "create", "--name", "cli-gold", "--manifest", key, "--labels", ",".join(LABELS),
                 "--gold", gold.as_uri()]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["counts"]["images"] == 3 and "gold" not in job
    db = Database(config.database_url.reveal())
    try:
        with db.session(readonly=True) as session:
            (task,) = session.scalars(select(Task).where(Task.gold.is_not(None))).all()
            assert task.gold == {"Edema": "present"} and task.sop_instance_uid == synthetic_set[4]["sop_uid"]
    finally:
        db.dispose()


def test_ai_assistance_needs_predictions_on_gold_images(tmp_path: Path, orthanc: OrthancServer,
                                                        synthetic_set: list[dict[str, Any]]) -> None:
    """An empty AI panel on gold images only would tell readers which images are gold."""
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    predictions = {"model-predictions": {name: 0.5 for name in LABELS}, "model-version": "run@sha256:abc"}
    manifest_path = tmp_path / "store" / "predicted.manifest"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text("".join(json.dumps({**_line(r), **predictions}) + "\n" for r in synthetic_set[:2]))
    gold_path = tmp_path / "store" / "gold.manifest"
    gold_path.write_text(json.dumps({**_line(synthetic_set[5]), "gold": {"Edema": "present"}}) + "\n")
    job = {"name": "assisted", "manifestUri": "predicted.manifest", "labels": LABELS, "goldUri": "gold.manifest"}
    status, data = admin.call("POST", "/admin/jobs", {**job, "aiAssistance": "always"})
    assert status == 400 and "gold image(s) have no model-predictions" in data["description"], data
    status, created = admin.call("POST", "/admin/jobs", job)  # assistance off: fine
    assert status == 201, created
    status, data = admin.call("PATCH", f"/admin/jobs/{created['id']}", {"aiAssistance": "after-first-answer"})
    assert status == 400 and "model-predictions" in data["description"], data
    # Gold lines taken from the same predict output carry predictions like every other image.
    gold_path.write_text(json.dumps({**_line(synthetic_set[5]), **predictions, "gold": {"Edema": "present"}}) + "\n")
    status, data = admin.call("POST", "/admin/jobs", {**job, "name": "assisted-2", "aiAssistance": "always"})
    assert status == 201, data
    app.extensions["dicomlab_labeling_api"].db.dispose()
