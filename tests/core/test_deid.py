"""The de-identification list and its application to DICOM JSON (:mod:`dicomlab_core.deid`)."""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword

from dicomlab_core.deid import IDENTIFYING_KEYWORDS, IDENTIFYING_TAGS, identifying, strip_dataset, strip_datasets


def test_the_list_covers_the_patient_module_and_keeps_uids_and_pixels() -> None:
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientIDsSequence",
                    "PatientAddress", "ReferringPhysicianName", "InstitutionName", "AccessionNumber", "StudyDate"):
        assert keyword in IDENTIFYING_KEYWORDS and f"{tag_for_keyword(keyword):08X}" in IDENTIFYING_TAGS
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns", "PixelData",
                    "PhotometricInterpretation", "WindowCenter", "RescaleSlope", "BitsAllocated"):
        assert not identifying(f"{tag_for_keyword(keyword):08X}"), keyword
    assert len(set(IDENTIFYING_KEYWORDS)) == len(IDENTIFYING_KEYWORDS) == len(IDENTIFYING_TAGS)


@pytest.mark.parametrize(("tag", "removed"), [
    ("00091001", True),   # private
    ("60003000", True),   # overlay data
    ("60024000", True),   # overlay comments, another overlay group
    ("60000010", False),  # overlay rows: no identity
    ("50000005", True),   # curve data (retired)
    ("7FE00010", False),
    ("not-a-tag", True),
    ("00100010", True), ("00100010".lower(), True),
])
def test_group_rules(tag: str, removed: bool) -> None:
    assert identifying(tag) is removed


def test_strip_removes_identifiers_in_nested_sequences_and_keeps_the_rest() -> None:
    name = {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    dataset = {
        "00100010": name, "00100020": {"vr": "LO", "Value": ["PID-1"]}, "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00280010": {"vr": "US", "Value": [512]},
        "00081140": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.4"]}, "00100010": name,
                                            "00091010": {"vr": "LO", "Value": ["x"]}}]},
        "00101002": {"vr": "SQ", "Value": [{"00100020": {"vr": "LO", "Value": ["PID-2"]}}]},
    }
    out = strip_dataset(dataset)
    assert set(out) == {"00080018", "00280010", "00081140"}
    assert out["00081140"]["Value"] == [{"00081155": {"vr": "UI", "Value": ["1.2.4"]}}]
    assert "Doe" not in repr(out) and "PID" not in repr(out)
    assert dataset["00081140"]["Value"][0]["00100010"] is name  # the input is not changed


@pytest.mark.parametrize("document", [{}, [1], "x", None, [{"a": 1}, 2]])
def test_unknown_shapes_are_refused(document: object) -> None:
    with pytest.raises(ValueError):
        strip_datasets(document)
