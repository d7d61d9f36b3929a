"""The HTTP API: auth, jobs (async and sync), listing, errors, metrics, resume at start-up, gunicorn."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from manifest_support import Population, make_config
from support.servers import MANIFEST_APP, gunicorn

from dicomlab_core.metrics import metrics_port
from dicomlab_manifest.app import create_app

METRICS_BASE_URL = f"http://localhost:{metrics_port()}"
"""Flask test clients scrape /metrics on the metrics port (the public one answers 404)."""

AUTH = {"Authorization": "Bearer test-service-token"}


@pytest.fixture
def app(population: Population, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(make_config(population.server, tmp_path, sync_wait_seconds=60.0))
    yield app
    app.extensions["dicomlab_manifest"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def wait_for(client: FlaskClient, location: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(location, headers=AUTH).get_json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {body}")


def test_every_route_needs_the_service_token(client: FlaskClient) -> None:
    for method, path in [("post", "/manifests"), ("get", "/manifests"), ("get", "/manifests/x"),
                         ("get", "/manifests/jobs/abc")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}):
            response = getattr(client, method)(path, headers=headers, json={"name": "x"})
            assert response.status_code == 401, (method, path, headers)
            assert response.get_json()["name"] == "Unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_async_job_then_status_list_and_summary(client: FlaskClient, population: Population) -> None:
    response = client.post("/manifests", headers=AUTH, json={"name": "api-async", "body_parts": ["CHEST"]})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("queued", "running", "succeeded") and body["name"] == "api-async"
    assert response.headers["Location"] == f"/manifests/jobs/{body['id']}" == body["links"]["self"]
    job = wait_for(client, response.headers["Location"])
    assert job["status"] == "succeeded", job
    expected = population.select(lambda i: i.body_part == "CHEST")
    assert job["result"]["instances"] == len(expected)
    assert job["progress"]["counts"]["instances_scanned"] > 0
    listing = client.get("/manifests", headers=AUTH).get_json()["manifests"]
    assert [m["name"] for m in listing] == ["api-async"] and listing[0]["instances"] == len(expected)
    summary = client.get("/manifests/api-async", headers=AUTH).get_json()
    assert summary["sha256"] == job["result"]["sha256"] and summary["filters"]["body_parts"] == ["CHEST"]
    jobs = client.get("/manifests/jobs", headers=AUTH).get_json()["jobs"]
    assert jobs[0]["id"] == body["id"]


def test_sync_mode_answers_201_with_the_result(client: FlaskClient, population: Population) -> None:
    response = client.post("/manifests?sync=true", headers=AUTH, json={"name": "api-sync", "max_count": 7, "seed": 1})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "succeeded" and body["result"]["instances"] == 7
    assert body["result"]["manifest"].endswith("/manifests/api-sync.jsonl")


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"name": "a", "colour": "red"}, 400, "unknown filter 'colour'"),
    ({"name": "a", "modalities": ["SR"]}, 400, "modalities: 'SR' is not allowed; allowed values: CR, DX, MG"),
    ({"name": "a", "since_manifest": "nope"}, 400, "since_manifest: no manifest named 'nope'"),
    ({"name": "a", "study_date_from": "yesterday"}, 400, "study_date_from: 'yesterday' is not a date"),
    (None, 400, "must be a JSON selection spec"),
    ({"name": "a", "max_count": 10**12}, 400, "max_count: must be from 1 to 10000000"),
    ({"name": "a", "seed": -5}, 400, "seed: must be from 0 to 9223372036854775807"),
    ({"name": "a", "seed": 10**30}, 400, "seed: must be from 0 to 9223372036854775807"),
    ({"name": "a", "sample_fraction": -0.1}, 400, "sample_fraction: expected a number in (0, 1]"),
    ("NAN", 400, "sample_fraction: expected a number in (0, 1]"),
])
def test_bad_requests_name_the_field(client: FlaskClient, body: Any, status: int, message: str) -> None:
    if body is None:
        response = client.post("/manifests", headers=AUTH, data="not json", content_type="text/plain")
    elif body == "NAN":  # Python's JSON reader accepts NaN; the bound must still refuse it
        response = client.post("/manifests", headers=AUTH, data='{"name": "a", "sample_fraction": NaN}',
                               content_type="application/json")
    else:
        response = client.post("/manifests", headers=AUTH, json=body)
    assert response.status_code == status
    payload = response.get_json()
    assert payload["code"] == status and message in payload["description"]


def test_conflict_empty_selection_and_unknown_resources(client: FlaskClient) -> None:
    assert client.post("/manifests?sync=true", headers=AUTH, json={"name": "once", "max_count": 1}).status_code == 201
    conflict = client.post("/manifests", headers=AUTH, json={"name": "once"})
    assert conflict.status_code == 409 and "once" in conflict.get_json()["description"]
    empty = client.post("/manifests?sync=true", headers=AUTH, json={"name": "empty", "study_uids": ["1.2.3"]})
    assert empty.status_code == 422
    assert "matched no qualifying instance" in empty.get_json()["description"]
    job = client.get(f"/manifests/jobs/{empty.get_json()['job']}", headers=AUTH).get_json()
    assert job["status"] == "failed" and job["error"]["code"] == 422
    assert client.get("/manifests/empty", headers=AUTH).status_code == 404
    assert client.get("/manifests/jobs/0123abcd", headers=AUTH).status_code == 404
    assert client.post("/manifests?sync=maybe", headers=AUTH, json={"name": "z"}).status_code == 400


def test_metrics_count_scanned_selected_and_skipped(client: FlaskClient) -> None:
    assert client.post("/manifests?sync=true", headers=AUTH, json={"name": "metered"}).status_code == 201
    text = client.get("/metrics", base_url=METRICS_BASE_URL).get_data(as_text=True)
    for needle in ("dicomlab_manifest_instances_scanned_total", "dicomlab_manifest_instances_selected_total",
                   'dicomlab_manifest_instances_skipped_total{reason="structured-report"}',
                   'dicomlab_manifest_job_duration_seconds_count{mode="full",outcome="succeeded"}',
                   "dicomlab_manifest_orthanc_errors_total"):
        assert needle in text


def test_unfinished_jobs_resume_when_the_service_starts(population: Population, tmp_path: Path) -> None:
    config = make_config(population.server, tmp_path)
    job_dir = config.state_dir / "jobs" / "0a1b2c3d"
    job_dir.mkdir(parents=True)
    spec = {"name": "resumed-at-start", "modalities": ["CR"], "labels": ["A", "B"]}
    record = {"id": "0a1b2c3d", "name": spec["name"], "status": "running", "created": "2026-01-01T00:00:00Z",
              "spec": spec, "progress": None, "error": None, "result": None}
    (job_dir / "job.json").write_text(json.dumps(record))
    app = create_app(config)
    try:
        service = app.extensions["dicomlab_manifest"]
        done = service.runner.wait("0a1b2c3d", 60)
        assert done["status"] == "succeeded", done
        assert done["result"]["instances"] == len(population.select(modalities=("CR",)))
        assert not (job_dir / "build").exists()
    finally:
        app.extensions["dicomlab_manifest"].close()


def test_under_gunicorn(population: Population, tmp_path: Path) -> None:
    config = make_config(population.server, tmp_path)
    env = {"DICOMLAB_MANIFEST__ORTHANC__URL": population.server.url,
           "DICOMLAB_MANIFEST__ORTHANC__USERNAME": population.server.username,
           "DICOMLAB_MANIFEST__ORTHANC__PASSWORD": population.server.password.reveal(),
           "DICOMLAB_MANIFEST__PATIENT_KEY_SECRET": "k", "DICOMLAB_MANIFEST__SERVICE_TOKEN": "test-service-token",
           "DICOMLAB_MANIFEST__STORE_URL": config.store_url, "DICOMLAB_MANIFEST__STATE_DIR": str(config.state_dir)}
    with gunicorn("manifest", MANIFEST_APP, tmp_path, env, workers=2, threads=4) as service:
        url = service.url
        response = requests.post(f"{url}/manifests", params={"sync": "true"}, headers=AUTH, timeout=60,
                                 json={"name": "gunicorn", "modalities": ["DX"]})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        # any worker can answer for any job: the records are on the shared state volume
        for _ in range(4):
            assert requests.get(f"{url}/manifests/jobs/{job_id}", headers=AUTH, timeout=10).json()["status"] == \
                "succeeded"
        assert requests.post(f"{url}/manifests", headers={"Authorization": "Bearer nope"}, json={},
                             timeout=10).status_code == 401
        metrics = requests.get(f"{service.metrics_url}/metrics", timeout=10).text
        assert "dicomlab_manifest_instances_selected_total" in metrics
        log = service.log_path.read_text()
        assert "PAT0" not in log and "test-service-token" not in log


def test_local_stack_environment_loads_into_a_valid_config(tmp_path: Path) -> None:
    from dicomlab_cli.wiring import LocalContext, stack_env
    from dicomlab_core.config import load_config
    from dicomlab_core.errors import ConfigError
    from dicomlab_manifest.config import PREFIX, Config

    ctx = LocalContext(run_dir=tmp_path, orthanc_url="http://127.0.0.1:8042", orthanc_username="dicomlab",
                       orthanc_password="pw", ports={"manifest": 8082},
                       credentials={"patient_key_secret": "pks", "service_token": "tok"},
                       store_url=f"file://{tmp_path / 'store'}")
    config = load_config(Config, PREFIX, stack_env(ctx, "manifest"))
    assert config.orthanc.url == "http://127.0.0.1:8042" and config.orthanc.password.reveal() == "pw"
    assert config.patient_key_secret.reveal() == "pks" and config.service_token.reveal() == "tok"
    assert config.state_dir == tmp_path / "manifest-state" and config.store_url.startswith("file://")
    with pytest.raises(ConfigError, match="DICOMLAB_MANIFEST__PATIENT_KEY_SECRET is required"):
        load_config(Config, PREFIX, {})
    with pytest.raises(ConfigError, match="DICOMLAB_MANIFEST__SERVICE_TOKEN is required"):
        create_app(load_config(Config, PREFIX, {"DICOMLAB_MANIFEST__PATIENT_KEY_SECRET": "x"}))
