"""SR write-back round trip: export → STOW-RS into a real Orthanc → read back → dsrdump → re-export."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.orthanc import OrthancClient, ResourceLevel
from dicomlab_labeling.app import create_app
from dicomlab_labeling.sr import series_uid

pytestmark = pytest.mark.skipif(shutil.which("dsrdump") is None, reason="dcmtk's dsrdump is not installed")


def _content(ds: pydicom.Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in ds.ContentSequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CODE":
            props = {p.ConceptNameCodeSequence[0].CodeMeaning: float(p.MeasuredValueSequence[0].NumericValue)
                     for p in item.ContentSequence}
            out[name] = (item.ConceptCodeSequence[0].CodeMeaning, item.ConceptNameCodeSequence[0].CodingSchemeDesignator,
                         props)
        elif item.ValueType == "TEXT":
            out[name] = item.TextValue
        elif item.ValueType == "IMAGE":
            out[name] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return out


def test_sr_round_trip_and_idempotent_reexport(tmp_path: Path, orthanc: OrthancServer, orthanc_client: OrthancClient,
                                               synthetic_set: list[dict[str, Any]]) -> None:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    records = synthetic_set[4:6]
    key = write_manifest(tmp_path, records)
    status, job = admin.call("POST", "/admin/jobs", {"name": "sr-trip", "manifestUri": key, "readersPerImage": 2,
                                                     "strategy": "in-order"})
    assert status == 201
    create_users(admin, ["ann", "bob"])
    create_users(admin, ["rev"], role="reviewer")
    for name, edema in (("ann", "present"), ("bob", "absent")):
        client = Api(app).login(name, PASSWORD)
        for _ in records:
            assignment = client.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
            assert client.submit(assignment["id"], {"Cardiomegaly": "present", "Edema": edema})[0] == 201

    status, first = admin.call("POST", f"/admin/jobs/{job['id']}/export", {"sr": True})
    assert status == 200 and first["sr"] == {"stored": 2, "skipped": 0, "replaced": 0, "failed": 0}

    record = records[0]
    sr_series = series_uid(type("J", (), {"name": "sr-trip"})(), record["orthanc_id"])  # type: ignore[arg-type]
    found = orthanc_client.find(ResourceLevel.SERIES, {"SeriesInstanceUID": sr_series}, expand=True)
    assert len(found) == 1 and len(found[0]["Instances"]) == 1
    data = orthanc_client.get_instance_file(found[0]["Instances"][0])
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.StudyInstanceUID == record["study_uid"] and ds.PatientID == record["patient_id"]
    content = _content(ds)
    assert content["Source image"] == record["sop_uid"]
    assert content["Labeling job"] == "sr-trip"
    assert content["Cardiomegaly"][0] == "Present" and content["Cardiomegaly"][1] == "SCT"
    assert content["Cardiomegaly"][2]["Reader agreement"] == 1.0
    # One present, one absent: a tie, settled as uncertain (the default tie rule) with nobody agreeing.
    assert content["Pulmonary edema"][0] == "Equivocal" and content["Pulmonary edema"][2]["Reader agreement"] == 0.0
    assert content["No Finding"][0] == "Absent" and content["No Finding"][1] == "99DCMLAB"
    sr_file = tmp_path / "sr.dcm"
    sr_file.write_bytes(data)
    dump = subprocess.run(["dsrdump", str(sr_file)], capture_output=True, text=True, check=False)
    assert dump.returncode == 0, dump.stderr
    assert "Comprehensive SR" in dump.stdout and "Cardiomegaly" in dump.stdout

    # Re-export without changes: nothing new in the PACS.
    status, second = admin.call("POST", f"/admin/jobs/{job['id']}/export", {"sr": True})
    assert second["sr"] == {"stored": 0, "skipped": 2, "replaced": 0, "failed": 0}
    # After an adjudication the SR of that image is replaced, never duplicated.
    rev = Api(app).login("rev", PASSWORD)
    task_id = rev.call("GET", f"/review/jobs/{job['id']}/tasks")[1]["tasks"][0]["taskId"]
    assert rev.call("POST", f"/review/tasks/{task_id}/adjudicate", {"findings": {"Cardiomegaly": "present",
                                                                                 "Edema": "present"}})[0] == 201
    status, third = admin.call("POST", f"/admin/jobs/{job['id']}/export", {"sr": True})
    assert third["sr"] == {"stored": 1, "skipped": 1, "replaced": 1, "failed": 0}
    adjudicated_source = next(r for r in records if r["orthanc_id"] == rev.call(
        "GET", f"/review/tasks/{task_id}")[1]["image"]["orthancId"])
    series = series_uid(type("J", (), {"name": "sr-trip"})(), adjudicated_source["orthanc_id"])  # type: ignore[arg-type]
    found = orthanc_client.find(ResourceLevel.SERIES, {"SeriesInstanceUID": series}, expand=True)
    assert len(found[0]["Instances"]) == 1
    replaced = pydicom.dcmread(io.BytesIO(orthanc_client.get_instance_file(found[0]["Instances"][0])))
    assert _content(replaced)["Consolidation method"] == "adjudicated"
    assert _content(replaced)["Pulmonary edema"][0] == "Present"
    app.extensions["dicomlab_labeling_api"].db.dispose()
