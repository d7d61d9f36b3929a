"""Admin and review endpoints behind the admin/review pages: chart data (per-day counts, time per image,
reader-versus-consensus matrix), images/hour from time spent, the manifest list, export downloads
served by the service, and review pagination with filters (SQLite, real Orthanc for the manifest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest

from dicomlab_cli.processes import OrthancServer
from dicomlab_labeling.app import create_app

# Per reader: image index → answer, and seconds spent. ann and bob agree except on image 1 (Edema).
ANSWERS = {"ann": ({"Edema": "present", "Cardiomegaly": "absent"}, 10.0),
           "bob": ({"Edema": "absent", "Cardiomegaly": "absent"}, 30.0)}


@pytest.fixture(scope="module")
def job_site(orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("admin-api")
    app = create_app(make_config(tmp, f"sqlite:///{tmp / 'admin.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    key = write_manifest(tmp, synthetic_set[:3])
    (tmp / "store" / "manifests" / "from-service.summary.json").write_text(json.dumps({"instances": 3}))
    (tmp / "store" / "manifests" / "from-service.jsonl").write_text("")
    status, job = admin.call("POST", "/admin/jobs", {"name": "stats", "manifestUri": key, "readersPerImage": 2,
                                                     "strategy": "in-order"})
    assert status == 201, job
    create_users(admin, ["ann", "bob", "cat"])
    create_users(admin, ["rev"], role="reviewer")
    for name in ("ann", "bob"):
        reader = Api(app).login(name, PASSWORD)
        for index in range(3):
            assignment = reader.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
            findings, seconds = ANSWERS[name]
            if index != 1:
                findings = {"Edema": "absent", "Cardiomegaly": "absent"}
            assert reader.submit(assignment["id"], findings, seconds=seconds)[0] == 201
    yield {"app": app, "admin": admin, "job": job, "tmp": tmp, "manifest": key}
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_readers_images_per_hour_come_from_time_spent(job_site: dict[str, Any]) -> None:
    readers = {r["username"]: r for r in
               job_site["admin"].call("GET", f"/admin/jobs/{job_site['job']['id']}/readers")[1]["readers"]}
    assert readers["ann"]["imagesPerHour"] == pytest.approx(3600 / 10.0)
    assert readers["bob"]["imagesPerHour"] == pytest.approx(3600 / 30.0)


def test_activity_gives_chart_data(job_site: dict[str, Any]) -> None:
    status, data = job_site["admin"].call("GET", f"/admin/jobs/{job_site['job']['id']}/activity")
    assert status == 200, data
    assert {r: sum(days.values()) for r, days in data["perDay"].items()} == {"ann": 3, "bob": 3}
    assert sorted(data["secondsPerImage"]) == [10.0] * 3 + [30.0] * 3
    matrix = data["readerConsensus"]
    assert set(matrix) == {"ann", "bob"}
    # Everyone agrees on Cardiomegaly; on Edema one of the two departs from the consensus once.
    assert matrix["ann"]["Cardiomegaly"] == 1.0 and matrix["bob"]["Cardiomegaly"] == 1.0
    assert min(matrix["ann"]["Edema"], matrix["bob"]["Edema"]) == pytest.approx(2 / 3, abs=1e-3)
    annotator = Api(job_site["app"]).login("cat", PASSWORD)
    assert annotator.call("GET", f"/admin/jobs/{job_site['job']['id']}/activity")[0] == 403


def test_manifest_list_names_store_manifests_not_exports(job_site: dict[str, Any]) -> None:
    admin = job_site["admin"]
    assert admin.call("POST", f"/admin/jobs/{job_site['job']['id']}/export", {})[0] == 200
    listed = {m["key"]: m for m in admin.call("GET", "/admin/manifests")[1]["manifests"]}
    assert job_site["manifest"] in listed
    assert listed["manifests/from-service.jsonl"]["instances"] == 3
    assert not any(k.startswith("labeling/") for k in listed)


def test_export_gives_authenticated_download_links(job_site: dict[str, Any]) -> None:
    admin, job_id = job_site["admin"], job_site["job"]["id"]
    status, out = admin.call("POST", f"/admin/jobs/{job_id}/export", {})
    assert status == 200, out
    assert out["downloads"]["csv"] == f"/api/admin/jobs/{job_id}/export/csv"
    client = admin.client
    assert client is not None
    response = client.get(out["downloads"]["manifest"])
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    lines = [json.loads(line) for line in response.data.decode().splitlines() if line.strip()]
    assert len(lines) == 3
    csv = client.get(out["downloads"]["csv"])
    assert csv.status_code == 200 and csv.mimetype == "text/csv" and b"Edema" in csv.data
    assert admin.call("GET", f"/admin/jobs/{job_id}/export/secrets")[0] == 404
    reviewer = Api(job_site["app"]).login("rev", PASSWORD)
    assert reviewer.client is not None
    assert reviewer.client.get(out["downloads"]["csv"]).status_code == 403
    anonymous = job_site["app"].test_client()
    assert anonymous.get(out["downloads"]["csv"]).status_code == 401


def test_review_pagination_and_filters(job_site: dict[str, Any]) -> None:
    reviewer = Api(job_site["app"]).login("rev", PASSWORD)
    base = f"/review/jobs/{job_site['job']['id']}/tasks"
    status, page = reviewer.call("GET", f"{base}?filter=all&limit=2&offset=0")
    assert status == 200, page
    assert page["total"] == 3 and len(page["tasks"]) == 2 and page["readers"] == ["ann", "bob"]
    rest = reviewer.call("GET", f"{base}?filter=all&limit=2&offset=2")[1]
    assert len(rest["tasks"]) == 1
    assert {t["taskId"] for t in page["tasks"]} | {t["taskId"] for t in rest["tasks"]} == \
        {t["taskId"] for t in reviewer.call("GET", f"{base}?filter=all")[1]["tasks"]}
    edema = reviewer.call("GET", f"{base}?filter=all&finding=Edema")[1]
    assert edema["total"] == 1 and edema["tasks"][0]["disagreeingFindings"] == ["Edema"]
    assert reviewer.call("GET", f"{base}?filter=all&finding=Cardiomegaly")[1]["total"] == 0
    assert reviewer.call("GET", f"{base}?filter=all&reader=ann")[1]["total"] == 3
    assert reviewer.call("GET", f"{base}?filter=all&reader=cat")[1]["total"] == 0
    assert reviewer.call("GET", f"{base}?filter=all&minDisagreement=0.01")[1]["total"] == 1
    assert reviewer.call("GET", f"{base}?filter=all&minDisagreement=1")[1]["total"] == 0
    assert reviewer.call("GET", f"{base}?finding=Nope")[0] == 400
    assert reviewer.call("GET", f"{base}?minDisagreement=2")[0] == 400
    assert reviewer.call("GET", f"{base}?minDisagreement=x")[0] == 400


@pytest.mark.parametrize(("kappa", "band"), [(-0.1, "poor"), (0.0, "slight"), (0.2, "slight"), (0.35, "fair"),
                                             (0.5, "moderate"), (0.7, "substantial"), (0.95, "almost perfect"),
                                             (None, None)])
def test_kappa_bands_follow_landis_and_koch(kappa: float | None, band: str | None) -> None:
    from dicomlab_labeling.consensus.agreement import kappa_band

    assert kappa_band(kappa) == band


@pytest.mark.parametrize(("alpha", "band"), [(0.5, "unreliable"), (0.666, "unreliable"), (0.667, "tentative"),
                                             (0.79, "tentative"), (0.8, "reliable"), (None, None)])
def test_alpha_bands_follow_krippendorff(alpha: float | None, band: str | None) -> None:
    from dicomlab_labeling.consensus.agreement import alpha_band

    assert alpha_band(alpha) == band


def test_agreement_names_the_band_of_each_statistic(job_site: dict[str, Any]) -> None:
    from dicomlab_labeling.consensus.agreement import alpha_band, kappa_band

    findings = job_site["admin"].call("GET", f"/admin/jobs/{job_site['job']['id']}/agreement")[1]["findings"]
    assert set(findings) >= {"Edema", "Cardiomegaly"}
    for value in findings.values():
        assert value["kappaBand"] == kappa_band(value["fleissKappa"])
        assert value["alphaBand"] == alpha_band(value["krippendorffAlpha"])
