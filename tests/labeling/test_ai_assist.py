"""AI assistance in labeling: the three ``aiAssistance`` modes through the reader API, the recorded
assistance in submissions and in the export, and the admin automation-bias summary.

Three jobs over the same manifest, whose lines carry ``model-predictions``/``model-version`` like
``dicomlab train predict`` writes them. Readers must never get a probability in ``off`` mode, nor
in ``after-first-answer`` mode before they recorded a first answer for that very assignment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config

from dicomlab_cli.main import main
from dicomlab_cli.processes import OrthancServer
from dicomlab_core.groundtruth import label_attributes
from dicomlab_labeling.app import create_app

LABELS = ["No Finding", "Cardiomegaly", "Edema", "Pneumothorax"]
PREDICTIONS = {"Cardiomegaly": 0.9137, "Edema": 0.1206, "Pneumothorax": 0.3011}
VERSION = "run-7@sha256:0123456789ab"
UNAIDED = {"Cardiomegaly": "absent", "Edema": "absent", "Pneumothorax": "absent"}
AIDED = {"Cardiomegaly": "present", "Edema": "absent", "Pneumothorax": "present"}  # took C, moved away on P


def write_predicted_manifest(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    """An input manifest as ``dicomlab train predict`` writes it (predictions, uncertainty, version)."""
    path = tmp_path / "store" / "manifests" / "predicted.manifest"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"source": r["orthanc_id"], "labels": ",".join(LABELS), "study-uid": r["study_uid"],
              "series-uid": r["series_uid"], "sop-instance-uid": r["sop_uid"],
              "model-predictions": PREDICTIONS, "model-uncertainty": 0.4 + i / 10, "model-version": VERSION}
             for i, r in enumerate(records)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return "manifests/predicted.manifest"


@pytest.fixture
def env(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    manifest = write_predicted_manifest(tmp_path, synthetic_set[:2])
    jobs = {}
    for mode in ("off", "after-first-answer", "always"):
        status, job = admin.call("POST", "/admin/jobs", {"name": f"ai-{mode}", "manifestUri": manifest,
                                                         "readersPerImage": 2, "labels": LABELS,
                                                         "strategy": "in-order", "aiAssistance": mode})
        assert status == 201, job
        assert job["aiAssistance"] == mode
        jobs[mode] = job
    create_users(admin, ["ann", "bob"])
    yield {"app": app, "admin": admin, "jobs": jobs, "ann": Api(app).login("ann", PASSWORD),
           "bob": Api(app).login("bob", PASSWORD)}
    app.extensions["dicomlab_labeling_api"].db.dispose()


def _lease_two(reader: Api, job: dict[str, Any]) -> list[dict[str, Any]]:
    status, data = reader.call("POST", f"/jobs/{job['id']}/next", {"lookahead": 1})
    assert status == 200, data
    return [data["assignment"], *data["upcoming"]]


def _first(reader: Api, assignment: dict[str, Any], findings: dict[str, str]) -> tuple[int, Any]:
    return reader.call("POST", f"/assignments/{assignment['id']}/first-answer",
                       {"answer": {"findings": findings, "sopInstanceUid": assignment["image"]["sopInstanceUid"]}})


def _no_probabilities(view: dict[str, Any]) -> None:
    assert view["assistance"]["predictions"] is None and view["assistance"]["modelVersion"] is None
    text = json.dumps(view)
    assert "0.9137" not in text and VERSION not in text and "model-predictions" not in text


def test_unknown_mode_is_refused(env: dict[str, Any]) -> None:
    status, error = env["admin"].call("POST", "/admin/jobs", {"name": "bad", "aiAssistance": "sometimes",
                                                              "manifestUri": "manifests/predicted.manifest"})
    assert status == 400 and "aiAssistance" in json.dumps(error)


def test_off_never_shows_the_model(env: dict[str, Any]) -> None:
    ann, job = env["ann"], env["jobs"]["off"]
    a, b = _lease_two(ann, job)
    for view in (a, b, ann.call("GET", f"/assignments/{a['id']}")[1], *ann.call("GET", "/queue")[1]["assignments"]):
        _no_probabilities(view)
        assert view["assistance"]["mode"] == "off" and view["assistance"]["firstAnswerRequired"] is False
    status, error = _first(ann, a, UNAIDED)
    assert status == 409, error
    _no_probabilities(ann.call("GET", f"/assignments/{a['id']}")[1])
    status, submitted = ann.submit(a["id"], AIDED, sop=a["image"]["sopInstanceUid"])
    assert status == 201, submitted
    assert submitted["submission"]["assistance"] == {"mode": "off", "shown": False, "modelVersion": None,
                                                     "firstAnswer": None}


def test_after_first_answer_is_gated_per_assignment(env: dict[str, Any]) -> None:
    ann, bob, job = env["ann"], env["bob"], env["jobs"]["after-first-answer"]
    a, b = _lease_two(ann, job)
    for view in (a, b):
        _no_probabilities(view)
        assert view["assistance"]["firstAnswerRequired"] is True
    assert _first(ann, a, {"Nonsense": "present"})[0] == 400
    assert _first(bob, a, UNAIDED)[0] == 403  # another reader's assignment
    _no_probabilities(ann.call("GET", f"/assignments/{a['id']}")[1])  # refused tries revealed nothing

    status, data = _first(ann, a, UNAIDED)
    assert status == 201, data
    assert data["assistance"]["predictions"] == PREDICTIONS and data["assistance"]["modelVersion"] == VERSION
    assert data["assistance"]["firstAnswerRequired"] is False
    assert data["assistance"]["firstAnswer"]["findings"]["Cardiomegaly"] == "absent"
    shown_a = ann.call("GET", f"/assignments/{a['id']}")[1]
    assert shown_a["assistance"]["predictions"] == PREDICTIONS
    _no_probabilities(ann.call("GET", f"/assignments/{b['id']}")[1])  # the other image stays blind
    queue = {v["id"]: v for v in ann.call("GET", "/queue")[1]["assignments"]}
    assert queue[a["id"]]["assistance"]["predictions"] == PREDICTIONS
    _no_probabilities(queue[b["id"]])

    assert _first(ann, a, UNAIDED)[0] == 200  # a retry of the same answer
    assert _first(ann, a, AIDED)[0] == 409  # immutable once recorded

    # bob leases the same first image: ann's first answer opens nothing for him
    bob_a = _lease_two(bob, job)[0]
    assert bob_a["taskId"] == a["taskId"]
    _no_probabilities(bob_a)

    status, submitted = ann.submit(a["id"], AIDED, sop=a["image"]["sopInstanceUid"])
    assert status == 201, submitted
    assert submitted["submission"]["assistance"] == {"mode": "after-first-answer", "shown": True,
                                                     "modelVersion": VERSION,
                                                     "firstAnswer": {"No Finding": "absent", **UNAIDED}}
    status, submitted = ann.submit(b["id"], UNAIDED, sop=b["image"]["sopInstanceUid"])  # no first answer
    assert status == 201, submitted
    assert submitted["submission"]["assistance"] == {"mode": "after-first-answer", "shown": False,
                                                     "modelVersion": None, "firstAnswer": None}
    assert _first(ann, b, UNAIDED)[0] == 409  # too late: already submitted
    _no_probabilities(ann.call("GET", f"/assignments/{b['id']}")[1])


def test_always_shows_the_model_from_the_start(env: dict[str, Any]) -> None:
    ann, job = env["ann"], env["jobs"]["always"]
    a, b = _lease_two(ann, job)
    for view in (a, b):
        assert view["assistance"] == {"mode": "always", "firstAnswerRequired": False, "firstAnswer": None,
                                      "predictions": PREDICTIONS, "modelVersion": VERSION}
    assert _first(ann, a, UNAIDED)[0] == 409  # this mode has no first-answer step


def _answer_all(env: dict[str, Any], mode: str) -> None:
    """ann: a first answer then the aided answer on image 1, no first answer on image 2; bob: the unaided answer."""
    job = env["jobs"][mode]
    a, b = _lease_two(env["ann"], job)
    if mode == "after-first-answer":
        assert _first(env["ann"], a, UNAIDED)[0] == 201
    assert env["ann"].submit(a["id"], AIDED, sop=a["image"]["sopInstanceUid"])[0] == 201
    assert env["ann"].submit(b["id"], UNAIDED, sop=b["image"]["sopInstanceUid"])[0] == 201
    for assignment in _lease_two(env["bob"], job):
        assert env["bob"].submit(assignment["id"], UNAIDED, sop=assignment["image"]["sopInstanceUid"])[0] == 201


def _export(env: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    status, outcome = env["admin"].call("POST", f"/admin/jobs/{env['jobs'][mode]['id']}/export", {})
    assert status == 200, outcome
    text = Path(outcome["manifestUri"].removeprefix("file://")).read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_recorded_assistance_summary_and_export(env: dict[str, Any]) -> None:
    for mode in ("off", "after-first-answer", "always"):
        _answer_all(env, mode)
    admin = env["admin"]
    summaries = {mode: admin.call("GET", f"/admin/jobs/{job['id']}/assistance")[1]
                 for mode, job in env["jobs"].items()}

    after = summaries["after-first-answer"]
    assert after["answers"] == 4 and after["shown"] == 1 and after["withFirstAnswer"] == 1
    # ann's first answer disagreed with the model on Cardiomegaly only (0.9137 → present), then took it;
    # it agreed on Pneumothorax (0.3011 → absent) and the final answer left it.
    assert after["comparedFindings"] == 3 and after["disagreedFirst"] == 1
    assert after["movedTowardModel"] == 1 and after["movedAwayFromModel"] == 1 and after["towardRate"] == 1.0
    assert after["readers"] == {"ann": {"compared": 3, "disagreedFirst": 1, "movedTowardModel": 1}}

    always = summaries["always"]
    assert always["shown"] == 4 and always["withFirstAnswer"] == 0 and always["towardRate"] is None
    assert always["comparedFindings"] == 0
    # 4 answers × 3 predicted findings; the model's calls are (present, absent, absent):
    # AIDED agrees on 2, UNAIDED on 2 → 8 of 12
    assert always["finalAgreesWithModel"] == round(8 / 12, 4)

    off = summaries["off"]
    assert off["shown"] == 0 and off["finalAgreesWithModel"] is None and off["mode"] == "off"

    lines = _export(env, "after-first-answer")
    assert len(lines) == 2
    for line in lines:
        assert label_attributes(line) == ["ai-after-first-answer"]  # still a valid Ground Truth line
        assert line["model-predictions"] == PREDICTIONS  # input keys copied through unchanged
        entry = line["ai-after-first-answer-assistance"]
        assert entry["mode"] == "after-first-answer" and entry["model-version"] == VERSION
        by_worker = {a["worker-id"]: a for a in entry["answers"]}
        assert set(by_worker) == {"ann", "bob"}
        assert by_worker["bob"]["shown"] is False and by_worker["bob"]["first-answer"] is None
    recorded = [a for line in lines for a in line["ai-after-first-answer-assistance"]["answers"] if a["shown"]]
    assert len(recorded) == 1
    assert recorded[0]["first-answer"]["Cardiomegaly"] == "absent"
    assert recorded[0]["final-answer"]["Cardiomegaly"] == "present"
    assert all("-assistance" not in key for line in _export(env, "off") for key in line)


def test_cli_job_create_with_ai_assistance(tmp_path: Path, orthanc: OrthancServer,
                                           synthetic_set: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", orthanc)
    for name, value in {"DICOMLAB_LABELING__TOKEN_KEYS": config.token_keys[0].reveal(),
                        "DICOMLAB_LABELING__DATABASE_URL": config.database_url.reveal(),
                        "DICOMLAB_LABELING__STORE_URL": config.store_url,
                        "DICOMLAB_LABELING__ORTHANC__URL": orthanc.url,
                        "DICOMLAB_LABELING__ORTHANC__PASSWORD": orthanc.password.reveal()}.items():
        monkeypatch.setenv(name, value)
    key = write_predicted_manifest(tmp_path, synthetic_set[:2])
    assert main(["labeling", "job", "create", "--name", "cli-ai", "--manifest", key,
                 "--ai-assistance", "after-first-answer"]) == 0
    assert json.loads(capsys.readouterr().out)["aiAssistance"] == "after-first-answer"
