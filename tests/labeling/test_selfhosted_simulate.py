"""Simulated readers over HTTP (the demo path), reader statistics, metrics, and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, serve, write_manifest

import dicomlab_labeling
from dicomlab_cli.main import main
from dicomlab_cli.processes import OrthancServer
from dicomlab_core.metrics import metrics_port
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.simulate import noisy_answer, simulate_readers

MIGRATIONS = Path(dicomlab_labeling.__file__).parent / "workflow" / "migrations" / "versions"

METRICS_BASE_URL = f"http://localhost:{metrics_port()}"
"""Flask test clients scrape /metrics on the metrics port (the public one answers 404)."""

LABELS = ["No Finding", "Cardiomegaly", "Edema", "Pneumothorax"]


def test_noisy_answer_is_valid_and_noisy() -> None:
    import random

    rng = random.Random(1)
    truth = {"Cardiomegaly": 1, "Edema": 0, "Pneumothorax": 0}
    perfect = noisy_answer(truth, LABELS, 1.0, rng, uncertain_rate=0.0)
    assert perfect == {"Cardiomegaly": "present", "Edema": "absent", "Pneumothorax": "absent", "No Finding": "absent"}
    flips = sum(noisy_answer(truth, LABELS, 0.6, rng, uncertain_rate=0.0)["Edema"] == "present" for _ in range(500))
    assert 150 < flips < 250  # about 40 % wrong
    for _ in range(200):
        answer = noisy_answer({}, LABELS, 0.5, rng)
        present = [k for k, v in answer.items() if v == "present" and k != "No Finding"]
        assert (answer["No Finding"] == "present") == (not present)


def test_simulated_readers_label_a_job(tmp_path: Path, orthanc: OrthancServer,
                                       synthetic_set: list[dict[str, Any]]) -> None:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'sim.db'}", orthanc))
    key = write_manifest(tmp_path, synthetic_set)
    truth = {r["sop_uid"]: r["findings"] for r in synthetic_set}
    with serve(app) as base_url:
        admin = Api(base_url=base_url).login(*ADMIN)
        status, job = admin.call("POST", "/admin/jobs", {"name": "sim", "manifestUri": key, "readersPerImage": 4})
        assert status == 201
        create_users(admin, ["good1", "good2", "good3", "sloppy"])
        readers = [("good1", PASSWORD, 0.97), ("good2", PASSWORD, 0.95), ("good3", PASSWORD, 0.95),
                   ("sloppy", PASSWORD, 0.55)]
        outcomes = simulate_readers(base_url, job["id"], readers, truth, seed=7)
        assert all(o.errors == [] for o in outcomes)
        # Every reader reads every image: which reader a racing thread leaves without images (3 of 4 per
        # image) would otherwise depend on the machine's load.
        assert sum(o.submitted for o in outcomes) == 4 * len(synthetic_set)
        progress = admin.call("GET", f"/admin/jobs/{job['id']}/progress")[1]
        assert progress["complete"] == len(synthetic_set) and progress["activeLeases"] == 0
        stats = {r["username"]: r for r in admin.call("GET", f"/admin/jobs/{job['id']}/readers")[1]["readers"]}
        assert stats["sloppy"]["agreementWithConsensus"] < min(stats[g]["agreementWithConsensus"]
                                                               for g in ("good1", "good2", "good3"))
        assert stats["good1"]["medianSecondsPerImage"] is not None
        agreement = admin.call("GET", f"/admin/jobs/{job['id']}/agreement")[1]
        assert agreement["objects"] == len(synthetic_set)
        exported = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})[1]
        from dicomlab_core.groundtruth import read_output_manifest

        rows = list(read_output_manifest(Path(exported["manifestUri"].removeprefix("file://")).read_text()
                                         .splitlines()))
        by_source = {r["orthanc_id"]: r for r in synthetic_set}
        right = sum(row.values[label] == float(by_source[row.source]["findings"][label])
                    for row in rows for label in ("Cardiomegaly", "Edema", "Pneumothorax"))
        assert right / (3 * len(rows)) > 0.9  # consolidation recovers the truth despite the sloppy reader
        assert admin.http.get(f"{base_url}/metrics", timeout=10).status_code == 404  # type: ignore[union-attr]
        metrics = app.test_client().get("/metrics", base_url=METRICS_BASE_URL).get_data(as_text=True)
    for name in ("dicomlab_labeling_assignments_handed_out_total", "dicomlab_labeling_submissions_total",
                 "dicomlab_labeling_time_per_image_seconds_bucket",
                 "dicomlab_labeling_ui_time_to_first_image_seconds_count", 'dicomlab_labeling_queue_depth{labeling_job="sim"} 0.0',
                 'dicomlab_labeling_agreement_ratio{finding="Cardiomegaly",labeling_job="sim"}'):
        assert name in metrics, name
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_cli_db_user_job_export(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", orthanc)
    env = {"DICOMLAB_LABELING__TOKEN_KEYS": config.token_keys[0].reveal(),
           "DICOMLAB_LABELING__DATABASE_URL": config.database_url.reveal(),
           "DICOMLAB_LABELING__STORE_URL": config.store_url,
           "DICOMLAB_LABELING__ORTHANC__URL": orthanc.url,
           "DICOMLAB_LABELING__ORTHANC__PASSWORD": orthanc.password.reveal(),
           "DICOMLAB_PASSWORD": PASSWORD}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    key = write_manifest(tmp_path, synthetic_set[:2], with_uids=False)
    assert main(["labeling", "db", "upgrade"]) == 0
    assert main(["labeling", "db", "current"]) == 0
    head = sorted(p.name[:4] for p in MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))[-1]
    assert capsys.readouterr().out.split() == [head, head]  # the upgrade's revision, then the current one
    assert main(["labeling", "user", "add", "--username", "ann"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "annotator"
    assert main(["labeling", "job", "create", "--name", "cli-job", "--manifest", key, "--readers", "1"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["counts"]["images"] == 2 and job["labels"] == LABELS
    app = create_app(config)
    ann = Api(app).login("ann", PASSWORD)
    assignment = ann.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
    # UIDs were looked up in Orthanc because the manifest had none.
    assert assignment["image"]["sopInstanceUid"] in {r["sop_uid"] for r in synthetic_set[:2]}
    assert ann.submit(assignment["id"], {"Edema": "present"})[0] == 201
    assert main(["labeling", "job", "export", "--name", "cli-job"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["images"] == 1 and Path(outcome["csvUri"].removeprefix("file://")).exists()
    app.extensions["dicomlab_labeling_api"].db.dispose()
