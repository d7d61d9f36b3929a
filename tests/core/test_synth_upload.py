"""The synthetic set round-trips through a real Orthanc: found by QIDO, stored byte for byte."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from dicomlab_core.errors import UpstreamError
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.orthanc import OrthancClient, OrthancSettings, QidoLevel, dicom_json_value
from dicomlab_core.synth import (
    Compression,
    SynthConfig,
    load_ground_truth,
    make_image,
    plan,
    to_bytes,
    upload_study_set,
)

STUDY_INSTANCE_UID = "0020000D"


def test_synthetic_set_is_a_useful_mix(synthetic_set: list[dict[str, Any]], synthetic_config: SynthConfig) -> None:
    records = synthetic_set
    assert len(records) == sum(1 for _ in plan(synthetic_config))
    assert {r["photometric"] for r in records} == {"MONOCHROME1", "MONOCHROME2"}
    assert {r["modality"] for r in records} == {"DX", "CR"}
    assert {"window", "lut"} <= {r["voi"] for r in records}
    assert {str(c) for c in Compression} == {r["compression"] for r in records}
    assert all(set(r["findings"]) == set(CHEXPERT_LABELS) and r["orthanc_id"] for r in records)
    assert len({r["patient_id"] for r in records}) == synthetic_config.patients


def test_qido_finds_every_study(synthetic_set: list[dict[str, Any]], orthanc_client: OrthancClient) -> None:
    found = {dicom_json_value(item, STUDY_INSTANCE_UID) for item in orthanc_client.qido(QidoLevel.STUDIES)}
    assert {r["study_uid"] for r in synthetic_set} <= found
    record = synthetic_set[0]
    series = orthanc_client.qido(QidoLevel.INSTANCES, study_uid=record["study_uid"])
    per_study = Counter(r["study_uid"] for r in synthetic_set)
    assert len(series) == per_study[record["study_uid"]]


def test_stored_bytes_equal_generated_bytes(synthetic_set: list[dict[str, Any]], synthetic_config: SynthConfig,
                                            orthanc_client: OrthancClient) -> None:
    by_sop = {spec.sop_uid: spec for spec in plan(synthetic_config)}
    picked = {r["compression"]: r for r in synthetic_set}  # one record per compression
    for record in picked.values():
        expected = to_bytes(make_image(by_sop[record["sop_uid"]]).dataset)
        assert orthanc_client.get_instance_file(record["orthanc_id"]) == expected
        wado = orthanc_client.retrieve_instance(record["study_uid"], record["series_uid"], record["sop_uid"])
        assert wado == expected, f"WADO-RS changed a {record['compression']} instance"
        ds = pydicom.dcmread(io.BytesIO(wado))
        assert ds.file_meta.TransferSyntaxUID == record["transfer_syntax"]
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(io.BytesIO(expected)).pixel_array)


def test_upload_reports_progress_and_failures(orthanc_client: OrthancClient) -> None:
    config = SynthConfig(patients=2, seed=77, rows=32, columns=32, images_per_study=(1, 1))
    seen: list[tuple[int, int]] = []
    records = upload_study_set(config, orthanc_client, workers=2, progress=lambda d, t: seen.append((d, t)))
    total = len(records)
    assert sorted(seen) == [(n, total) for n in range(1, total + 1)]
    assert [r["sop_uid"] for r in records] == [s.sop_uid for s in plan(config)]
    for record in records:
        assert orthanc_client.lookup_instance(record["sop_uid"]) == record["orthanc_id"]
    broken = OrthancClient(OrthancSettings(url="http://127.0.0.1:9", connect_timeout=0.5, retries=0))
    with pytest.raises(UpstreamError, match=r"127\.0\.0\.1:9"):
        upload_study_set(config, broken, workers=2)
    broken.close()


def test_cli_upload_to_the_running_stack(orthanc: Any, orthanc_client: OrthancClient, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``dicomlab synth --upload`` finds Orthanc through the stack's context (here: the test Orthanc)."""
    from dicomlab_cli import stack
    from dicomlab_cli.main import main

    settings = orthanc.settings()
    context = stack.LocalContext(run_dir=tmp_path, orthanc_url=settings.url, orthanc_username=settings.username,
                                 orthanc_password=settings.password.reveal(), ports={}, credentials={},
                                 store_url=f"file://{tmp_path}")
    monkeypatch.setattr(stack, "require_running", lambda: (context, {}))
    assert main(["synth", "--upload", "--patients", "2", "--size", "32", "--seed", "78", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "uploaded" in captured.out and "/2 images" not in captured.out  # progress goes to stderr
    assert "images (" in captured.err
    records = load_ground_truth(tmp_path / "synth" / "ground_truth.json")
    assert records and all(orthanc_client.lookup_instance(r["sop_uid"]) == r["orthanc_id"] for r in records)
