"""SR write-back: export → STOW-RS into a real Orthanc → read back with highdicom, dciodvfy, dcmjs → re-export.

Two readers label two images with ROIs; one export writes, per image, each reader's TID 1500 report and
the consensus report. They are read back from the PACS and checked three ways: highdicom parses them
into the same findings and ROIs, Debian's dciodvfy (dicom3tools) finds no error, and dcmjs with
Cornerstone3D's measurement-report adapter (what OHIF uses) turns them into annotations on the right
image (a node script, ``sr_readback/read-sr.mjs``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.labels import (
    CHEXPERT_LABELS,
    FINDING_CODES,
    FINDING_STATE_CODES,
    PRIVATE_SCHEME,
    PRIVATE_SCHEME_UID,
    Finding,
    FindingState,
    finding_code,
)
from dicomlab_core.orthanc import OrthancClient, ResourceLevel
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.sr import reader_pseudonym, series_uid
from dicomlab_labeling.workflow.sr_report import QUALITATIVE_EVALUATIONS

READBACK = Path(__file__).parent / "sr_readback"
RECT = {"tool": "rectangle", "finding": "Cardiomegaly", "points": [[40, 60], [180, 200]]}
ELLIPSE = {"tool": "ellipse", "finding": "Lung Lesion", "points": [[20, 30], [80, 50]]}
POLYGON = {"tool": "polygon", "finding": "Edema", "points": [[10, 10], [100, 20], [60, 90]]}
BOB_RECT = {"tool": "rectangle", "finding": "Cardiomegaly", "points": [[50, 70], [170, 190]]}
REVIEW_POLYGON = {"tool": "polygon", "finding": "Edema", "points": [[12, 12], [90, 25], [70, 95], [15, 80]]}
ANSWERS = {  # ann: three findings with a ROI each; bob agrees on two, draws one box, says no edema
    "ann": ({"Cardiomegaly": "present", "Lung Lesion": "present", "Edema": "present"}, [RECT, ELLIPSE, POLYGON]),
    "bob": ({"Cardiomegaly": "present", "Lung Lesion": "present", "Edema": "absent"}, [BOB_RECT]),
}


def _job(name: str) -> Any:
    return type("J", (), {"name": name})()


@dataclass
class Exported:
    app: Any
    admin: Api
    job_id: int
    records: list[dict[str, Any]]
    first: dict[str, Any]
    user_ids: dict[str, int]
    files: dict[tuple[str, str], Path]
    """(orthanc id, "consensus" | reader pseudonym) → the SR file read back from Orthanc."""
    images: dict[str, Path]
    """orthanc id → the source image file."""


def _sr_file(orthanc_client: OrthancClient, series: str, out: Path) -> Path:
    found = orthanc_client.find(ResourceLevel.SERIES, {"SeriesInstanceUID": series}, expand=True)
    assert len(found) == 1 and len(found[0]["Instances"]) == 1, found
    out.write_bytes(orthanc_client.get_instance_file(found[0]["Instances"][0]))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancServer, orthanc_client: OrthancClient,
             synthetic_set: list[dict[str, Any]]) -> Exported:
    tmp_path = tmp_path_factory.mktemp("sr")
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    records = synthetic_set[4:6]
    key = write_manifest(tmp_path, records)
    status, job = admin.call("POST", "/admin/jobs", {"name": "sr-trip", "manifestUri": key, "readersPerImage": 2,
                                                     "strategy": "in-order", "labels": list(CHEXPERT_LABELS)})
    assert status == 201
    create_users(admin, ["ann", "bob"])
    create_users(admin, ["rev"], role="reviewer")
    user_ids = {u["username"]: u["id"] for u in admin.call("GET", "/admin/users")[1]["users"]}
    for name, (findings, rois) in ANSWERS.items():
        client = Api(app).login(name, PASSWORD)
        for _ in records:
            assignment = client.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
            answer = {"findings": findings, "rois": rois, "timeSpentSeconds": 5}
            status, body = client.call("POST", f"/assignments/{assignment['id']}/submit",
                                       {"clientSubmissionId": uuid.uuid4().hex, "answer": answer})
            assert status == 201, body
    status, first = admin.call("POST", f"/admin/jobs/{job['id']}/export", {"sr": True})
    assert status == 200, first
    files: dict[tuple[str, str], Path] = {}
    images: dict[str, Path] = {}
    for record in records:
        oid = record["orthanc_id"]
        images[oid] = tmp_path / f"{oid}.dcm"
        images[oid].write_bytes(orthanc_client.get_instance_file(oid))
        for slot in ("consensus", *(reader_pseudonym(user_ids[n]) for n in ANSWERS)):
            files[(oid, slot)] = _sr_file(orthanc_client, series_uid(_job("sr-trip"), oid, slot),
                                          tmp_path / f"{oid}-{slot}.dcm")
    return Exported(app, admin, job["id"], records, first, user_ids, files, images)


def _report(path: Path) -> tuple[pydicom.Dataset, hd.sr.MeasurementReport]:
    ds = pydicom.dcmread(path)
    return ds, hd.sr.MeasurementReport.from_sequence([ds])


def _read(report: hd.sr.MeasurementReport) -> tuple[dict[str, str], list[dict[str, Any]], set[str]]:
    """(finding meaning → state meaning, ROIs as {finding, graphic type, points, image}, referenced images)."""
    (evaluations,) = find_content_items(report[0], name=QUALITATIVE_EVALUATIONS)
    findings = {e.name.meaning: e.value.meaning for e in evaluations.ContentSequence}
    rois, images = [], set()
    for group in report.get_image_measurement_groups():  # every group is a ROI (what OHIF expects)
        (area,) = group.get_measurements()
        (coords,) = area.referenced_coordinates
        images.add(coords.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        rois.append({"finding": group.finding_type.meaning if group.finding_type else None,
                     "type": coords.graphic_type.value, "points": coords.value.tolist(),
                     "tracking": group.tracking_identifier, "uid": group.tracking_uid, "area": area.value})
    return findings, rois, images


def _meaning(label: str) -> str:
    return finding_code(label).meaning


def test_export_writes_one_report_per_reader_and_one_consensus(exported: Exported) -> None:
    assert exported.first["sr"] == {"stored": 6, "skipped": 0, "replaced": 0, "failed": 0,  # 2 images × 3
                                    "consensus": 2, "readers": 4}
    for record in exported.records:
        ds, report = _report(exported.files[(record["orthanc_id"], "consensus")])
        assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        # Patient and study modules come from the source image: the SR files into the image's study.
        source = pydicom.dcmread(exported.images[record["orthanc_id"]], stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
            assert ds.get(keyword) == source.get(keyword), keyword
        assert ds.StudyInstanceUID == record["study_uid"] and ds.PatientID == record["patient_id"]
        assert ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == record["sop_uid"]
        findings, rois, images = _read(report)
        assert images == {record["sop_uid"]}
        assert findings[_meaning("Cardiomegaly")] == "Present" and findings[_meaning("Lung Lesion")] == "Present"
        assert findings[_meaning("Edema")] == "Undetermined"  # 1–1: a tie, uncertain by the default rule
        assert findings[_meaning("No Finding")] == "Absent" and len(findings) == len(CHEXPERT_LABELS)
        # The consensus keeps the ROIs of findings that ended up present: both boxes and ann's ellipse.
        by_finding = sorted((r["finding"], r["type"]) for r in rois)
        assert by_finding == [("Cardiomegaly", "POLYLINE"), ("Cardiomegaly", "POLYLINE"), ("Lung lesion", "ELLIPSE")]
        (observer,) = [o for o in report.get_observer_contexts() if o.observer_type.meaning == "Device"]
        assert observer.observer_identifying_attributes.name == "dicomlab"


def test_reader_reports_read_back_to_the_submitted_findings_and_rois(exported: Exported) -> None:
    for record in exported.records:
        for name, (answered, drawn) in ANSWERS.items():
            pseudonym = reader_pseudonym(exported.user_ids[name])
            ds, report = _report(exported.files[(record["orthanc_id"], pseudonym)])
            (person,) = report.get_observer_contexts()
            assert person.observer_type.meaning == "Person"
            assert str(person.observer_identifying_attributes.name) == f"{pseudonym}^"  # never the username
            assert name not in ds.to_json()
            findings, rois, images = _read(report)
            assert images == {record["sop_uid"]}
            expected = {_meaning(label): FINDING_STATE_CODES[FindingState(answered.get(label, "absent"))].meaning
                        for label in CHEXPERT_LABELS}
            assert findings == expected
            assert len({r["uid"] for r in rois}) == len(rois)  # one tracking UID per ROI
            for roi, sent in zip(rois, drawn, strict=True):
                assert roi["finding"] == _meaning(sent["finding"])
                assert roi["tracking"].startswith("Cornerstone3DTools@^0.1.0:")
                (x0, y0), (x1, y1) = sent["points"][0], sent["points"][-1]
                if sent["tool"] == "rectangle":
                    assert roi["points"] == [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
                elif sent["tool"] == "ellipse":  # major axis (horizontal here), then minor axis
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    assert roi["points"] == [[x0, cy], [x1, cy], [cx, y0], [cx, y1]]
                else:
                    assert roi["points"] == [*sent["points"], sent["points"][0]]
                assert roi["area"] > 0


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")
def test_dciodvfy_finds_no_error_and_only_the_declared_private_scheme(exported: Exported) -> None:
    for path in exported.files.values():
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        lines = (result.stdout + result.stderr).splitlines()
        assert [line for line in lines if line.startswith("Error")] == [], path.name
        warnings = [line for line in lines if line.startswith("Warning")]
        # dicom3tools knows the standard coding schemes only: a private one, even declared, is an
        # "unrecognized defined term". Nothing else may warn.
        assert set(warnings) <= {
            f"Warning - Unrecognized defined term <{PRIVATE_SCHEME}> for value 1 of attribute <Coding Scheme Designator>",
            f"Warning - Unrecognized defined term <{PRIVATE_SCHEME_UID}> for value 1 of attribute <Coding Scheme UID>"}
        ds = pydicom.dcmread(path)
        (declared,) = ds.CodingSchemeIdentificationSequence
        assert declared.CodingSchemeDesignator == PRIVATE_SCHEME and declared.CodingSchemeUID == PRIVATE_SCHEME_UID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")
def test_dciodvfy_is_silent_on_a_report_with_standard_codes_only(tmp_path: Path) -> None:
    from dicomlab_core.groundtruth import Roi, RoiTool
    from dicomlab_core.synth import SynthConfig, make_image, plan
    from dicomlab_labeling.workflow.sr_report import Observer, ReportContent, build_report

    image = make_image(next(plan(SynthConfig(patients=1, seed=7, rows=64, columns=64)))).dataset
    standard = [f.value for f, c in FINDING_CODES.items() if c.scheme != PRIVATE_SCHEME]
    content = ReportContent(
        findings={name: FindingState.PRESENT if name == "Cardiomegaly" else FindingState.ABSENT for name in standard},
        rois=(Roi(RoiTool.RECTANGLE, ((4.0, 5.0), (30.0, 40.0)), "Cardiomegaly"),
              Roi(RoiTool.ELLIPSE, ((10.0, 10.0), (20.0, 50.0)), "Cardiomegaly"),
              Roi(RoiTool.POLYGON, ((1.0, 1.0), (9.0, 2.0), (5.0, 8.0)), "Cardiomegaly")),
        observer=Observer(person="reviewer-1", device=True), description="dicomlab t consensus", final=True)
    uids = [f"2.25.{n}" for n in range(1, 6)]
    report = build_report(image, content, series_instance_uid=uids[0], series_number=1, sop_instance_uid=uids[1],
                          tracking_uids=uids[2:5])
    assert "CodingSchemeIdentificationSequence" not in report  # no private code, nothing to declare
    # A report without ROIs has the findings only (no Imaging Measurements container at all).
    no_rois = build_report(image, replace(content, rois=()), series_instance_uid=uids[0], series_number=1,
                           sop_instance_uid=uids[2], tracking_uids=[])
    parsed = hd.sr.MeasurementReport.from_sequence([no_rois])
    assert parsed.get_image_measurement_groups() == []
    (evaluations,) = find_content_items(parsed[0], name=QUALITATIVE_EVALUATIONS)
    assert {e.name.meaning: e.value.meaning for e in evaluations.ContentSequence}["Cardiomegaly"] == "Present"
    for name, dataset in (("standard", report), ("no-rois", no_rois)):
        path = tmp_path / f"{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        lines = (result.stdout + result.stderr).splitlines()
        assert [line for line in lines if line.startswith(("Error", "Warning"))] == [], name


def test_every_chexpert_finding_has_one_code_standard_where_one_exists() -> None:
    assert set(FINDING_CODES) == set(Finding)
    assert len({(c.value, c.scheme) for c in FINDING_CODES.values()}) == len(Finding)
    private = {f.value for f, c in FINDING_CODES.items() if c.scheme == PRIVATE_SCHEME}
    assert private == {"Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other"}
    assert {c.scheme for c in FINDING_CODES.values()} == {"SCT", "DCM", PRIVATE_SCHEME}
    assert all(len(c.value) <= 16 for c in FINDING_CODES.values())
    # A custom label gets a stable private code of its own.
    custom = finding_code("Nodule > 3 cm")
    assert custom.scheme == PRIVATE_SCHEME and custom == finding_code("Nodule > 3 cm") != finding_code("Nodule")
    assert len(custom.value) == 16 and custom.meaning == "Nodule > 3 cm"


def _npm_ready() -> Path:
    """``npm ci`` in ``sr_readback`` when its node_modules is missing or older than the lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the dcmjs read-back")
    lock = READBACK / "package-lock.json"
    stamp = READBACK / "node_modules" / ".dicomlab-lock.sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != digest:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=READBACK, check=True, timeout=900,
                       capture_output=True)
        stamp.write_text(digest)
    return READBACK / "read-sr.mjs"


def _dcmjs(script: Path, sr: Path, *images: Path) -> dict[str, Any]:
    result = subprocess.run(["node", str(script), str(sr), *map(str, images)], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("SR-READBACK ")]
    data: dict[str, Any] = json.loads(line.removeprefix("SR-READBACK "))
    return data


def test_dcmjs_and_the_cornerstone3d_adapter_load_our_rois_on_the_right_image(exported: Exported) -> None:
    script = _npm_ready()
    first, second = exported.records
    for name, (_, drawn) in ANSWERS.items():
        pseudonym = reader_pseudonym(exported.user_ids[name])
        sr = exported.files[(first["orthanc_id"], pseudonym)]
        # Both images are offered; the annotations must land on the one the SR references.
        data = _dcmjs(script, sr, exported.images[first["orthanc_id"]], exported.images[second["orthanc_id"]])
        right = data["imageIds"][f"{first['sop_uid']}:1"]
        tools = data["tools"]
        expected_tools = {"rectangle": "RectangleROI", "ellipse": "EllipticalROI", "polygon": "PlanarFreehandROI"}
        assert sorted(tools) == sorted({expected_tools[r["tool"]] for r in drawn})
        for sent in drawn:
            (annotation,) = [a for a in tools[expected_tools[sent["tool"]]]
                             if a["finding"]["meaning"] == _meaning(sent["finding"])]
            assert annotation["referencedImageId"] == right and annotation["sopInstanceUid"] == first["sop_uid"]
            code = finding_code(sent["finding"])
            assert (annotation["finding"]["value"], annotation["finding"]["scheme"]) == (code.value, code.scheme)
            points = [[round(c, 3) for c in p[:2]] for p in annotation["points"]]  # float32 world coordinates
            (x0, y0), (x1, y1) = sent["points"][0], sent["points"][-1]
            if sent["tool"] == "rectangle":  # Cornerstone3D's handle order: TL, TR, BL, BR
                assert points == [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]
            elif sent["tool"] == "ellipse":
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                assert points == [[x0, cy], [x1, cy], [cx, y0], [cx, y1]]
            else:
                assert points == sent["points"] and annotation["closed"] is True


def test_reexport_skips_unchanged_reports_and_adjudication_replaces_the_consensus(
        exported: Exported, orthanc_client: OrthancClient) -> None:
    admin, job_id = exported.admin, exported.job_id
    status, second = admin.call("POST", f"/admin/jobs/{job_id}/export", {"sr": True})
    assert status == 200 and second["sr"] == {"stored": 0, "skipped": 6, "replaced": 0, "failed": 0,
                                               "consensus": 2, "readers": 4}
    rev = Api(exported.app).login("rev", PASSWORD)
    task_id = rev.call("GET", f"/review/jobs/{job_id}/tasks")[1]["tasks"][0]["taskId"]
    decision = {"findings": {"Cardiomegaly": "present", "Edema": "present"}, "rois": [REVIEW_POLYGON]}
    assert rev.call("POST", f"/review/tasks/{task_id}/adjudicate", decision)[0] == 201
    status, third = admin.call("POST", f"/admin/jobs/{job_id}/export", {"sr": True})
    assert third["sr"] == {"stored": 1, "skipped": 5, "replaced": 1, "failed": 0, "consensus": 2, "readers": 4}
    oid = rev.call("GET", f"/review/tasks/{task_id}")[1]["image"]["orthancId"]
    series = series_uid(_job("sr-trip"), oid)
    found = orthanc_client.find(ResourceLevel.SERIES, {"SeriesInstanceUID": series}, expand=True)
    assert len(found) == 1 and len(found[0]["Instances"]) == 1  # replaced, never duplicated
    ds = pydicom.dcmread(io.BytesIO(orthanc_client.get_instance_file(found[0]["Instances"][0])))
    report = hd.sr.MeasurementReport.from_sequence([ds])
    findings, rois, _ = _read(report)
    assert findings[_meaning("Edema")] == "Present" and findings[_meaning("Lung Lesion")] == "Absent"
    assert [(r["finding"], r["points"]) for r in rois] == [
        (_meaning("Edema"), [*REVIEW_POLYGON["points"], REVIEW_POLYGON["points"][0]])]  # the reviewer's ROI
    observers = {o.observer_type.meaning: o for o in report.get_observer_contexts()}
    assert str(observers["Person"].observer_identifying_attributes.name) == \
        f"reviewer-{exported.user_ids['rev']}^"
    assert "Device" in observers and ds.PreliminaryFlag == "FINAL"
    exported.app.extensions["dicomlab_labeling_api"].db.dispose()
