"""The self-hosted labeling API against real databases (SQLite and PostgreSQL) and a real Orthanc."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, database_url, make_config, write_manifest
from sqlalchemy import select, update

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_core.tokens import TokenSigner
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.api_state import state
from dicomlab_labeling.workflow.models import Assignment, AuditEvent, Submission, utcnow

LABELS = ["No Finding", "Cardiomegaly", "Edema", "Pneumothorax"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if request.param == "postgres" else None
    return database_url(request.param, tmp_path, postgres)


@pytest.fixture
def app(tmp_path: Path, db_url: str, orthanc: OrthancServer) -> Iterator[Flask]:
    application = create_app(make_config(tmp_path, db_url, orthanc))
    yield application
    state_ = application.extensions["dicomlab_labeling_api"]
    state_.db.dispose()


@pytest.fixture
def admin(app: Flask) -> Api:
    return Api(app).login(*ADMIN)


@pytest.fixture
def job(app: Flask, admin: Api, tmp_path: Path, synthetic_set: list[dict[str, Any]]) -> dict[str, Any]:
    key = write_manifest(tmp_path, synthetic_set[:4])
    status, data = admin.call("POST", "/admin/jobs", {"name": "batch-1", "manifestUri": key, "readersPerImage": 2,
                                                      "instructions": "Tick what you see.", "leaseSeconds": 60,
                                                      "strategy": "in-order"})
    assert status == 201, data
    create_users(admin, ["ann", "bob", "cid"])
    create_users(admin, ["rev"], role="reviewer")
    return dict(data)


def reader(app: Flask, name: str) -> Api:
    return Api(app).login(name, PASSWORD)


def test_login_session_cookie_and_csrf(app: Flask, admin: Api) -> None:
    client = app.test_client()
    status = client.post("/api/auth/login", json={"username": "admin", "password": "wrong-password"}).status_code
    assert status == 401
    response = client.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "dicomlab_session=" in cookie
    csrf = response.get_json()["csrfToken"]
    assert client.get("/api/auth/me").get_json()["user"]["role"] == "admin"
    # A state-changing request without the CSRF header is refused, with it accepted.
    assert client.post("/api/admin/users", json={"username": "x1", "password": PASSWORD}).status_code == 403
    assert client.post("/api/admin/users", json={"username": "x1", "password": PASSWORD},
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/auth/me").status_code == 401
    # Roles: an annotator cannot reach admin or review endpoints.
    annotator = Api(app).login("x1", PASSWORD)
    assert annotator.call("GET", "/admin/jobs")[0] == 403
    assert annotator.call("GET", "/review/jobs/1/tasks")[0] == 403


def test_login_rate_limit(app: Flask) -> None:
    client = app.test_client()
    for _ in range(5):
        assert client.post("/api/auth/login", json={"username": "admin", "password": "nope-nope-nope"}).status_code == 401
    limited = client.post("/api/auth/login", json={"username": "admin", "password": ADMIN[1]})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_sso_trusted_header_only_from_trusted_proxy(tmp_path: Path, db_url: str, orthanc: OrthancServer) -> None:
    from dataclasses import replace

    config = make_config(tmp_path, db_url, orthanc)
    config = replace(config, auth=replace(config.auth, sso_enabled=True, trusted_proxies=("10.0.0.0/8",)))
    application = create_app(config)
    client = application.test_client()
    headers = {"X-Forwarded-Email": "dana@example.org", "X-Forwarded-User": "dana"}
    assert client.get("/api/auth/me", headers=headers, environ_base={"REMOTE_ADDR": "192.168.1.5"}).status_code == 401
    ok = client.get("/api/auth/me", headers=headers, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200
    assert ok.get_json()["user"] == {"id": 2, "username": "dana", "role": "annotator", "active": True,
                                     "email": "dana@example.org"}
    assert "dicomlab_session=" in ok.headers["Set-Cookie"]
    # A state-changing request still needs the session's CSRF token (a forged cross-site POST has none).
    forged = client.post("/api/auth/logout", headers=headers, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert forged.status_code == 403
    csrf = ok.get_json()["csrfToken"]
    assert client.post("/api/auth/logout", headers={**headers, "X-CSRF-Token": csrf},
                       environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 204
    application.extensions["dicomlab_labeling_api"].db.dispose()


def test_label_flow_blinded_idempotent_versions(app: Flask, job: dict[str, Any],
                                                synthetic_set: list[dict[str, Any]]) -> None:
    ann = reader(app, "ann")
    status, data = ann.call("POST", f"/jobs/{job['id']}/next", {"lookahead": 1})
    assert status == 200, data
    first, upcoming = data["assignment"], data["upcoming"]
    assert len(upcoming) == 1 and upcoming[0]["taskId"] != first["taskId"]
    # In-order strategy: the first manifest line first; blinded; no patient identifiers.
    assert first["image"]["orthancId"] == synthetic_set[0]["orthanc_id"]
    assert first["image"]["sopInstanceUid"] == synthetic_set[0]["sop_uid"]
    assert first["image"]["fileUrl"] == f"http://proxy.test:8081/instances/{synthetic_set[0]['orthanc_id']}/file"
    assert first["patient"] is None and first["mySubmission"] is None and first["labels"] == LABELS
    claims = TokenSigner(state_of(app).signer.keyring).verify(first["token"])
    assert claims.scope.instances == (synthetic_set[0]["sop_uid"],)
    assert claims.scope.orthanc_ids == (synthetic_set[0]["orthanc_id"],)
    assert len(claims.token_id) == 16  # every token has an id (jti), which the proxy's access log records
    assert claims.scope.allows(study=synthetic_set[0]["study_uid"], instance=synthetic_set[0]["sop_uid"])
    assert not claims.scope.allows(study=synthetic_set[1]["study_uid"], instance=synthetic_set[1]["sop_uid"])

    # Asking again returns the same leased assignments, nothing new.
    again = ann.call("POST", f"/jobs/{job['id']}/next", {"lookahead": 1})[1]
    assert [again["assignment"]["id"], again["upcoming"][0]["id"]] == [first["id"], upcoming[0]["id"]]

    client_id = str(uuid.uuid4())
    findings = {"Cardiomegaly": "present", "Edema": "uncertain"}
    status, stored = ann.submit(first["id"], findings, client_id=client_id, sop=synthetic_set[0]["sop_uid"])
    assert status == 201 and stored["duplicate"] is False and stored["submission"]["version"] == 1
    assert stored["submission"]["answer"]["findings"] == {"No Finding": "absent", "Cardiomegaly": "present",
                                                          "Edema": "uncertain", "Pneumothorax": "absent"}
    # Double submit (a retry after a lost response): same answer, no new version.
    status, repeat = ann.submit(first["id"], findings, client_id=client_id)
    assert status == 200 and repeat["duplicate"] is True and repeat["submission"]["id"] == stored["submission"]["id"]
    # An edit is a new immutable version.
    status, edited = ann.submit(first["id"], {"Cardiomegaly": "present"})
    assert status == 201 and edited["submission"]["version"] == 2
    with state_of(app).db.session() as session:
        versions = session.scalars(select(Submission.answer).where(Submission.assignment_id == first["id"])
                                   .order_by(Submission.version)).all()
    assert [v["findings"]["Edema"] for v in versions] == ["uncertain", "absent"]

    # Another reader gets image 1 too (2 readers per image) but never sees ann's answer.
    bob = reader(app, "bob")
    bob_first = bob.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert bob_first["taskId"] == first["taskId"] and bob_first["mySubmission"] is None
    assert bob.call("GET", f"/assignments/{first['id']}")[0] == 403
    assert bob.call("POST", f"/assignments/{first['id']}/submit",
                    {"clientSubmissionId": "x", "answer": {"findings": {}}})[0] == 403
    assert bob.call("GET", f"/review/tasks/{first['taskId']}")[0] == 403
    # ann resumes her assignment and sees her own latest answer.
    resumed = ann.call("GET", f"/assignments/{first['id']}")[1]
    assert resumed["mySubmission"]["version"] == 2


@pytest.mark.parametrize(("findings", "message"), [
    ({"Cardiomegaly": "present", "Unicorn": "present"}, "unknown label 'Unicorn'"),
    ({"No Finding": "present", "Edema": "present"}, "'No Finding' is present together with 'Edema'"),
    ({"Edema": "maybe"}, "unknown state"),
])
def test_invalid_labels_are_refused(app: Flask, job: dict[str, Any], findings: dict[str, str], message: str) -> None:
    ann = reader(app, "ann")
    assignment = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    status, error = ann.submit(assignment["id"], findings)
    assert status == 400 and message in error["description"]
    status, error = ann.submit(assignment["id"], {"Edema": "present"}, sop="1.2.3.4")
    assert status == 400 and "sopInstanceUid" in error["description"]
    with state_of(app).db.session() as session:
        assert session.scalar(select(Submission.id)) is None


@pytest.mark.parametrize("state", ["absent", None])
def test_an_roi_of_a_finding_that_is_not_there_is_refused(app: Flask, job: dict[str, Any], state: str | None) -> None:
    ann = reader(app, "ann")
    assignment = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    findings = {"Cardiomegaly": "present"} | ({"Edema": state} if state else {})
    rois = [{"tool": "rectangle", "finding": "Cardiomegaly", "points": [[1, 2], [30, 40]]},
            {"tool": "ellipse", "finding": "Edema", "points": [[5, 5], [20, 20]]}]
    answer: dict[str, Any] = {"findings": findings, "rois": rois, "timeSpentSeconds": 4}
    body = {"clientSubmissionId": uuid.uuid4().hex, "answer": answer}
    status, error = ann.call("POST", f"/assignments/{assignment['id']}/submit", body)
    assert status == 400, error
    assert "ROI 2" in error["description"] and "'Edema'" in error["description"]
    with state_of(app).db.session() as session:
        assert session.scalar(select(Submission.id)) is None
    # Present or uncertain: the same ROIs are accepted and stored.
    answer["findings"] = {"Cardiomegaly": "present", "Edema": "uncertain"}
    status, stored = ann.call("POST", f"/assignments/{assignment['id']}/submit", body)
    assert status == 201, stored
    assert [r["finding"] for r in ann.call("GET", f"/assignments/{assignment['id']}")[1]["mySubmission"]["answer"]
            ["rois"]] == ["Cardiomegaly", "Edema"]


def test_pages_above_a_users_role_send_them_to_their_queue(app: Flask, admin: Api, job: dict[str, Any]) -> None:
    """An annotator opening the review or admin page lands on the queue, not on a page frame with a 403."""
    expected = {"ann": {"/ui/review": True, "/ui/admin": True},
                "rev": {"/ui/review": False, "/ui/admin": True},
                ADMIN[0]: {"/ui/review": False, "/ui/admin": False}}
    for name, pages in expected.items():
        api = Api(app).login(name, ADMIN[1] if name == ADMIN[0] else PASSWORD)
        assert api.client is not None
        for path, redirected in pages.items():
            response = api.client.get(path)
            if redirected:
                assert response.status_code == 302 and response.headers["Location"].endswith("/ui/queue"), (name, path)
            else:
                assert response.status_code != 302, (name, path)
    # Without a session the page itself is served (its script sends the visitor to sign in).
    assert app.test_client().get("/ui/admin").status_code != 302


def expire(app: Flask, assignment_id: int) -> None:
    with state_of(app).db.session() as session:
        session.execute(update(Assignment).where(Assignment.id == assignment_id)
                        .values(expires_at=utcnow() - timedelta(seconds=5)))


def test_expired_lease_is_requeued_and_late_submit_conflicts(app: Flask, job: dict[str, Any]) -> None:
    ann, bob, cid = reader(app, "ann"), reader(app, "bob"), reader(app, "cid")
    a = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    b = bob.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert a["taskId"] == b["taskId"]  # in order: both readers of image 1
    expire(app, a["id"])
    # Late, but nobody took the slot yet: accepted.
    status, _ = ann.submit(a["id"], {"Edema": "present"})
    assert status == 201
    # bob's lease expires; cid's next request re-queues it and takes the slot.
    expire(app, b["id"])
    c = cid.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert c["taskId"] == b["taskId"]
    status, error = bob.submit(b["id"], {"Edema": "absent"})
    assert status == 409 and "given to another reader" in error["description"]
    assert bob.call("POST", f"/assignments/{b['id']}/heartbeat")[0] == 409
    # bob never gets image 1 again; his next image is image 2.
    b2 = bob.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert b2["taskId"] != b["taskId"]
    # A heartbeat extends the lease.
    status, beat = bob.call("POST", f"/assignments/{b2['id']}/heartbeat")
    assert status == 200 and beat["leaseExpiresAt"] >= b2["leaseExpiresAt"]
    progress = Api(app).login(*ADMIN).call("GET", f"/admin/jobs/{job['id']}/progress")[1]
    assert progress["expiredLeases"] == 1 and progress["answers"] == 1 and progress["activeLeases"] == 2


def test_token_refresh_and_skip(app: Flask, job: dict[str, Any]) -> None:
    ann = reader(app, "ann")
    a = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    status, fresh = ann.call("POST", f"/assignments/{a['id']}/token")
    assert status == 200 and fresh["token"] != a["token"]
    signer = state_of(app).signer
    assert signer.verify(fresh["token"]).scope.orthanc_ids == (a["image"]["orthancId"],)
    # The token is scoped to the lease: it outlives the lease by a margin, not the configured 12 h.
    claims = signer.verify(fresh["token"])
    assert claims.expires_at - claims.issued_at == 60 + 300
    assert ann.call("POST", f"/assignments/{a['id']}/skip", {"reason": ""})[0] == 400
    status, skipped = ann.call("POST", f"/assignments/{a['id']}/skip", {"reason": "image cut off"})
    assert status == 200 and skipped["status"] == "skipped"
    assert ann.call("POST", f"/assignments/{a['id']}/token")[0] == 404
    seen = {ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]["taskId"]}
    assert a["taskId"] not in seen


def test_patient_identifiers_only_when_allowed(app: Flask, admin: Api, job: dict[str, Any],
                                               synthetic_set: list[dict[str, Any]]) -> None:
    ann = reader(app, "ann")
    signer = TokenSigner(state_of(app).signer.keyring)
    hidden = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert hidden["patient"] is None
    # Hidden identifiers: a de-identified proxy token, and the viewer reads metadata + frames, not the file.
    assert signer.verify(hidden["token"]).deidentified and hidden["image"]["deidentified"]
    assert hidden["image"]["viewerUrl"] == hidden["image"]["wadoUri"]
    assert hidden["image"]["viewerUrl"].startswith("wadors:") and hidden["image"]["viewerUrl"].endswith("/frames/1")
    refreshed = ann.call("POST", f"/assignments/{hidden['id']}/token")[1]
    assert signer.verify(refreshed["token"]).deidentified
    status, _ = admin.call("PATCH", f"/admin/jobs/{job['id']}", {"allowPatientIdentifiers": True})
    assert status == 200
    shown = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert shown["patient"]["id"] == synthetic_set[0]["patient_id"]
    assert not signer.verify(shown["token"]).deidentified
    assert shown["image"]["viewerUrl"] == shown["image"]["fileUrl"]


def test_review_adjudication_stats_and_export(app: Flask, admin: Api, job: dict[str, Any], tmp_path: Path) -> None:
    ann, bob = reader(app, "ann"), reader(app, "bob")
    answers = {"ann": [{"Cardiomegaly": "present"}, {"Edema": "present"}, {"No Finding": "present"},
                       {"Pneumothorax": "present"}],
               "bob": [{"Cardiomegaly": "present"}, {"Edema": "absent"}, {"No Finding": "present"},
                       {"Pneumothorax": "present", "Edema": "uncertain"}]}
    for name, client in (("ann", ann), ("bob", bob)):
        for findings in answers[name]:
            assignment = client.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
            assert client.submit(assignment["id"], findings, seconds=10.0)[0] == 201
        assert client.call("POST", f"/jobs/{job['id']}/next")[0] == 204
    rev = reader(app, "rev")
    status, listing = rev.call("GET", f"/review/jobs/{job['id']}/tasks")
    assert status == 200 and listing["total"] == 2
    top = listing["tasks"][0]
    assert top["disagreeingFindings"] == ["Edema"] and top["answers"] == 2
    status, detail = rev.call("GET", f"/review/tasks/{top['taskId']}")
    assert status == 200 and sorted(a["reader"] for a in detail["answers"]) == ["ann", "bob"]
    assert detail["consolidated"]["Cardiomegaly"]["value"] in ("present", "absent", "uncertain")
    status, adjudicated = rev.call("POST", f"/review/tasks/{top['taskId']}/adjudicate",
                                   {"findings": {"Edema": "present"}, "note": "clear edema"})
    assert status == 201 and adjudicated["adjudication"]["findings"]["Edema"] == "present"
    assert rev.call("POST", f"/review/tasks/{top['taskId']}/adjudicate",
                    {"findings": {"No Finding": "present", "Edema": "present"}})[0] == 400

    status, readers = admin.call("GET", f"/admin/jobs/{job['id']}/readers")
    rows = {r["username"]: r for r in readers["readers"]}
    assert rows["ann"]["submissions"] == 4 and rows["ann"]["meanSecondsPerImage"] == 10.0
    status, agreement = admin.call("GET", f"/admin/jobs/{job['id']}/agreement")
    assert status == 200 and set(agreement["findings"]) == set(LABELS)
    status, exported = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})
    assert status == 200 and exported["images"] == 4
    manifest = Path(exported["manifestUri"].removeprefix("file://")).read_text()
    csv_text = Path(exported["csvUri"].removeprefix("file://")).read_text()
    # Idempotent: a second export writes the same bytes.
    admin.call("POST", f"/admin/jobs/{job['id']}/export", {})
    assert Path(exported["manifestUri"].removeprefix("file://")).read_text() == manifest
    from dicomlab_core.groundtruth import read_output_manifest

    rows_out = list(read_output_manifest(manifest.splitlines()))
    assert len(rows_out) == 4 and all(r.attribute == "batch-1" for r in rows_out)
    adjudicated_row = next(r for r in rows_out if r.source == detail["image"]["orthancId"])
    assert adjudicated_row.values["Edema"] == 1.0
    header = csv_text.splitlines()[0].split(",")
    assert header[-4:] == LABELS and len(csv_text.splitlines()) == 5
    with state_of(app).db.session() as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"login", "task-leased", "submitted", "answers-viewed", "adjudicated", "exported"} <= actions


def state_of(app: Flask) -> Any:
    with app.app_context():
        return state()


def test_strategies_pause_and_delete(app: Flask, admin: Api, job: dict[str, Any], tmp_path: Path,
                                     synthetic_set: list[dict[str, Any]]) -> None:
    import json

    records = synthetic_set[:4]
    lines = [{"source": r["orthanc_id"], "sop-instance-uid": r["sop_uid"], "study-uid": r["study_uid"],
              "series-uid": r["series_uid"], "model-uncertainty": u} for r, u in zip(records, [0.1, 0.9, 0.5, 0.7],
                                                                                       strict=True)]
    (tmp_path / "store" / "manifests" / "scored.manifest").write_text("\n".join(json.dumps(x) for x in lines))
    status, scored = admin.call("POST", "/admin/jobs", {"name": "scored", "manifestUri": "manifests/scored.manifest",
                                                        "strategy": "uncertainty-first", "labels": LABELS})
    assert status == 201 and scored["readersPerImage"] == 3
    ann, bob = reader(app, "ann"), reader(app, "bob")
    got = ann.call("POST", f"/jobs/{scored['id']}/next", {"lookahead": 3})[1]
    order = [a["image"]["orthancId"] for a in [got["assignment"], *got["upcoming"]]]
    assert order == [records[i]["orthanc_id"] for i in (1, 3, 2, 0)]  # most uncertain first
    # Fewest answers first spreads readers: bob's first image is one nobody holds yet.
    status, _ = admin.call("PATCH", f"/admin/jobs/{job['id']}", {"strategy": "fewest-answers-first"})
    first = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    second = bob.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    assert first["taskId"] != second["taskId"]
    assert admin.call("PATCH", f"/admin/jobs/{job['id']}", {"strategy": "best"})[0] == 400
    assert admin.call("PATCH", f"/admin/jobs/{job['id']}", {"status": "paused"})[0] == 200
    status, error = ann.call("POST", f"/jobs/{job['id']}/next")
    assert status == 409 and "paused" in error["description"]
    assert [j["name"] for j in ann.call("GET", "/jobs")[1]["jobs"]] == ["scored"]
    assert admin.call("DELETE", f"/admin/jobs/{scored['id']}")[0] == 204
    assert admin.call("GET", f"/admin/jobs/{scored['id']}")[0] == 404
    events = admin.call("GET", f"/admin/audit?jobId={scored['id']}")[1]["events"]
    assert events[0]["action"] == "job-deleted" and events[0]["user"] == "admin"
