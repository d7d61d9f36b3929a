"""Output manifests of every accepted shape → targets and masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_training.manifest import load_table

LABELS = "Atelectasis,Cardiomegaly,Pleural Effusion,No Finding"


def sample_answer(ticked: list[str], disease: dict[str, bool]) -> str:
    """The reference sample's worker answer: content string → labels string (three levels of JSON)."""
    inner = json.dumps({"label": ticked, "imageurl": "https://host/instances/x/file", "ROI": {}})
    return json.dumps({"disease": disease, "labels": inner})


def lines() -> list[dict[str, Any]]:
    ours: dict[str, Any] = {"source": "orthanc-1", "labels": LABELS, "sop-instance-uid": "1.2.3.1", "study-uid": "1.2.3",
            "series-uid": "1.2.3.0",
            "job-a": {"findings": {"Atelectasis": {"value": "present", "confidence": 0.9},
                                   "Cardiomegaly": {"value": "absent", "confidence": 0.8},
                                   "Pleural Effusion": {"value": "uncertain", "confidence": 0.5}},
                      "method": "dawid-skene"},
            "job-a-metadata": {"type": "groundtruth/custom", "job-name": "a", "human-annotated": "yes",
                               "creation-date": "2026-01-01T00:00:00.000000"}}
    aws_spelling: dict[str, Any] = {"source": "orthanc-2", "labels": LABELS.split(","),
                    "job-b": {"findings": {"Cardiomegaly": {"value": "present"}, "No Finding": {"value": "absent"}}},
                    "job-b-metadata": {"type": "groundTruth/custom", "job_name": "b",
                                       "creation-date": "2021-01-15T05:22:56.000000"}}
    yes = {"Atelectasis": False, "Cardiomegaly": True, "Pleural Effusion": True, "No Finding": False}
    no = {"Atelectasis": False, "Cardiomegaly": False, "Pleural Effusion": True, "No Finding": False}
    reference_sample: dict[str, Any] = {"source": "orthanc-3", "labels": LABELS,
                        "job-c": {"annotationsFromAllWorkers": [
                            {"workerId": "w1", "annotationData": {"content": sample_answer(["Cardiomegaly"], yes)}},
                            {"workerId": "w2", "annotationData": {"content": sample_answer(["Cardiomegaly"], yes)}},
                            {"workerId": "w3", "annotationData": {"content": sample_answer([], no)}}]},
                        "job-c-metadata": {"type": "groundtruth/custom", "job-name": "c",
                                           "creation-date": "2021-01-15T05:22:56.000000"}}
    duplicate = dict(ours)
    return [ours, aws_spelling, reference_sample, duplicate]


def write(tmp_path: Path) -> Path:
    path = tmp_path / "output.manifest"
    path.write_text("\n".join(json.dumps(line) for line in lines()) + "\n")
    return path


def test_every_shape_becomes_targets_and_masks(tmp_path: Path) -> None:
    table = load_table(str(write(tmp_path)))
    assert table.labels == ("No Finding", "Cardiomegaly", "Atelectasis", "Pleural Effusion")  # CheXpert order
    assert [s.key for s in table.samples] == ["1.2.3.1", "orthanc-2", "orthanc-3"]
    assert table.duplicates == 1
    col = {label: i for i, label in enumerate(table.labels)}
    t, m = table.targets, table.mask
    # ours: present / absent / uncertain (masked) / not answered (masked)
    assert (t[0, col["Atelectasis"]], m[0, col["Atelectasis"]]) == (1, 1)
    assert (t[0, col["Cardiomegaly"]], m[0, col["Cardiomegaly"]]) == (0, 1)
    assert m[0, col["Pleural Effusion"]] == 0 and m[0, col["No Finding"]] == 0
    # AWS spelling (job_name, groundTruth/custom), labels as a JSON array
    assert (t[1, col["Cardiomegaly"]], m[1, col["Cardiomegaly"]]) == (1, 1)
    assert m[1, col["Atelectasis"]] == 0
    # reference sample: nested answers of three workers, majority per label
    assert t[2, col["Cardiomegaly"]] == 1 and t[2, col["Pleural Effusion"]] == 1
    assert t[2, col["Atelectasis"]] == 0 and m[2].tolist() == [1, 1, 1, 1]
    assert table.samples[0].study_uid == "1.2.3" and table.samples[0].series_uid == "1.2.3.0"


def test_explicit_label_set_and_counts(tmp_path: Path) -> None:
    table = load_table(f"file://{write(tmp_path)}", labels=("Cardiomegaly", "Edema"))
    assert table.labels == ("Cardiomegaly", "Edema")
    np.testing.assert_array_equal(table.mask[:, 1], 0)  # nobody labelled Edema
    counts = table.counts()
    assert counts["Cardiomegaly"] == {"positive": 2, "negative": 1, "unknown": 0}
    assert counts["Edema"]["unknown"] == 3


def test_manifest_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    from dicomlab_core.objectstore import open_store

    store = open_store(s3_bucket)
    store.put_bytes("jobs/j/manifests/output/output.manifest", write(tmp_path).read_bytes())
    table = load_table(f"{s3_bucket}/jobs/j/manifests/output/output.manifest")
    assert len(table.samples) == 3 and set(CHEXPERT_LABELS) >= set(table.labels)


def test_a_malformed_line_names_its_number(tmp_path: Path) -> None:
    from dicomlab_core.errors import BadRequest

    path = tmp_path / "bad.manifest"
    path.write_text(json.dumps(lines()[0]) + "\n{not json\n")
    with pytest.raises(BadRequest, match="line 2"):
        load_table(str(path))
