"""The manifest service's hot-path line formatter writes exactly the bytes of the Ground Truth package's
input line writer, from the same key constants, and the line reads back as a valid input line."""

from __future__ import annotations

import json

import pytest

from dicomlab_core.groundtruth import input_line, parse_manifest_line
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_manifest.listing import InstanceInfo, SeriesInfo, StudyInfo
from dicomlab_manifest.selection import line_parts, manifest_line

CASES = [
    # plain identifiers (the fast path of the formatter)
    ("502b0a4b-5cb43965-7f092716-bd6fe6d6-4f7fc3ce", "1.2.840.113619.2.55.3.1", "1.2.3.4.5",
     "1.2.3.4.5.6", "9f86d081884c7d65", ",".join(CHEXPERT_LABELS)),
    # values that need JSON escaping: quotes, backslash, a control character, non-ASCII (kept as UTF-8)
    ('id"with\\quote', "1.2.3", "1.2.3.4", "1.2.3.4.5\n", "clé-é", "Cardiomegaly, Épanchement pleural"),
    ("", "", "", "", "", ""),
]


@pytest.mark.parametrize(("orthanc_id", "study_uid", "series_uid", "sop_uid", "patient_key", "labels"), CASES)
def test_the_manifest_writer_and_the_gt_package_write_identical_bytes(
        orthanc_id: str, study_uid: str, series_uid: str, sop_uid: str, patient_key: str, labels: str) -> None:
    study = StudyInfo(orthanc_id="st", study_uid=study_uid, date="", description="", patient_id="p",
                      series_ids=("se",))
    series = SeriesInfo(orthanc_id="se", study_id="st", series_uid=series_uid, modality="DX", body_part="",
                        description="", instance_ids=(orthanc_id,))
    instance = InstanceInfo(orthanc_id=orthanc_id, series_id="se", sop_uid=sop_uid, number=1, frames=1)
    labels_json = json.dumps(labels, ensure_ascii=False)  # as the builder passes it
    expected = input_line(orthanc_id, labels, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                          patient_key=patient_key)

    written = manifest_line(instance, series, study, labels_json, patient_key)
    reused = manifest_line(instance, series, study, labels_json, patient_key,
                           line_parts(series, study, labels_json, patient_key))

    assert written.encode("utf-8") == reused.encode("utf-8") == expected.encode("utf-8")
    if orthanc_id:
        line = parse_manifest_line(written)
        assert line.source == orthanc_id and line.sop_uid == (sop_uid or None)
        assert line.labels == tuple(label.strip() for label in labels.split(",") if label.strip())
