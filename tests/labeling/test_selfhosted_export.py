"""One export call writes the Ground Truth output manifest, COCO JSON and a CheXpert-style CSV that agree.

Round trips: what readers submitted (findings, ROIs) and what a reviewer decided comes back out of each
file when it is read the way its usual consumers read it (COCO: images/annotations/categories by id;
CheXpert: ``Path`` plus one float column per finding; the manifest: :func:`read_output_manifest`).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.groundtruth import ConsolidatedLabel, FindingConsensus, read_output_manifest
from dicomlab_core.labels import CHEXPERT_LABELS, FindingState, finding_code
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.export_formats import chexpert_csv
from dicomlab_labeling.workflow.models import Task
from dicomlab_labeling.workflow.results import TaskAnswers

RECT = {"tool": "rectangle", "finding": "Cardiomegaly", "points": [[40.5, 60], [180, 200.25]]}
ELLIPSE = {"tool": "ellipse", "finding": "Lung Lesion", "points": [[20, 30], [80, 50]]}
POLYGON = {"tool": "polygon", "finding": "Edema", "points": [[10, 10], [100, 20], [60, 90]]}
BOB_RECT = {"tool": "rectangle", "finding": "Cardiomegaly", "points": [[50, 70], [170, 190]]}
REVIEW_BOX = {"tool": "rectangle", "finding": "Pneumothorax", "points": [[5, 6], [25, 46]]}
ANSWERS = {
    "ann": ({"Cardiomegaly": "present", "Lung Lesion": "present", "Edema": "present"}, [RECT, ELLIPSE, POLYGON]),
    "bob": ({"Cardiomegaly": "present", "Lung Lesion": "absent", "Edema": "present"}, [BOB_RECT]),
}


def _file(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _key(roi: dict[str, Any]) -> tuple[Any, ...]:
    return roi["tool"], roi["finding"], tuple(tuple(float(c) for c in p) for p in roi["points"])


@pytest.fixture
def exported(tmp_path: Path, orthanc: OrthancServer, synthetic_set: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", orthanc))
    admin = Api(app).login(*ADMIN)
    records = synthetic_set[6:9]
    status, job = admin.call("POST", "/admin/jobs", {
        "name": "formats", "manifestUri": write_manifest(tmp_path, records), "readersPerImage": 2,
        "strategy": "in-order", "labels": list(CHEXPERT_LABELS)})
    assert status == 201, job
    create_users(admin, list(ANSWERS))
    create_users(admin, ["rev"], role="reviewer")
    for name, (findings, rois) in ANSWERS.items():
        client = Api(app).login(name, PASSWORD)
        for _ in records[:2]:  # the third image stays unlabelled
            assignment = client.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
            answer = {"findings": findings, "rois": rois, "timeSpentSeconds": 4}
            status, body = client.call("POST", f"/assignments/{assignment['id']}/submit",
                                       {"clientSubmissionId": uuid.uuid4().hex, "answer": answer})
            assert status == 201, body
    rev = Api(app).login("rev", PASSWORD)
    tasks = rev.call("GET", f"/review/jobs/{job['id']}/tasks")[1]["tasks"]
    adjudicated = next(t for t in tasks if t["sopInstanceUid"] == records[1]["sop_uid"])
    decision = {"findings": {"Pneumothorax": "present", "Cardiomegaly": "present"}, "rois": [REVIEW_BOX]}
    assert rev.call("POST", f"/review/tasks/{adjudicated['taskId']}/adjudicate", decision)[0] == 201
    status, outcome = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})
    assert status == 200, outcome
    yield {"outcome": outcome, "records": records, "admin": admin, "job": job}
    app.extensions["dicomlab_labeling_api"].db.dispose()


def test_coco_round_trip(exported: dict[str, Any]) -> None:
    outcome, records = exported["outcome"], exported["records"]
    assert outcome["sr"] is None and outcome["images"] == 2
    coco = json.loads(_file(outcome["cocoUri"]).read_text())
    assert set(coco) == {"info", "licenses", "images", "annotations", "categories"}
    # Categories are the findings, with their DICOM codes.
    categories = {c["id"]: c for c in coco["categories"]}
    assert [c["name"] for c in coco["categories"]] == list(CHEXPERT_LABELS)
    assert categories[3]["code"] == finding_code(CHEXPERT_LABELS[2])._asdict()
    # Images are keyed by SOP Instance UID; the unlabelled one is not there; sizes come from the PACS.
    images = {i["id"]: i for i in coco["images"]}
    consensus_image, adjudicated_image = records[0], records[1]
    assert set(images) == {consensus_image["sop_uid"], adjudicated_image["sop_uid"]}
    for record in (consensus_image, adjudicated_image):
        image = images[record["sop_uid"]]
        assert image["file_name"] == (f"studies/{record['study_uid']}/series/{record['series_uid']}"
                                      f"/instances/{record['sop_uid']}")
        assert (image["width"], image["height"]) == (256, 256)
    by_image: dict[str, list[dict[str, Any]]] = {}
    for annotation in coco["annotations"]:
        assert annotation["image_id"] in images and annotation["iscrowd"] == 0
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])

    def back(annotation: dict[str, Any]) -> dict[str, Any]:
        """A COCO annotation read back as the ROI the reader drew."""
        name = categories[annotation["category_id"]]["name"]
        return {"tool": annotation["attributes"]["tool"], "finding": name, "points": annotation["attributes"]["points"]}

    # Consensus: present findings keep every reader's ROI; Lung Lesion (a 1–1 tie) is uncertain: no ROI.
    consensus = by_image[consensus_image["sop_uid"]]
    assert sorted(map(_key, map(back, consensus))) == sorted(map(_key, [RECT, POLYGON, BOB_RECT]))
    for annotation in consensus:
        roi = back(annotation)
        xs, ys = [p[0] for p in roi["points"]], [p[1] for p in roi["points"]]
        assert annotation["bbox"] == [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        outline = annotation["segmentation"][0]
        if roi["tool"] == "polygon":
            assert outline == [c for p in roi["points"] for c in p]
            assert annotation["area"] == pytest.approx(0.5 * abs(90 * 80 - 10 * 50))  # shoelace of the triangle
        else:
            assert annotation["area"] == pytest.approx((max(xs) - min(xs)) * (max(ys) - min(ys)))
            assert sorted(zip(outline[::2], outline[1::2], strict=True)) == sorted(
                [(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))])
    # Adjudicated: the reviewer's ROI replaces the readers'.
    (decided,) = by_image[adjudicated_image["sop_uid"]]
    assert _key(back(decided)) == _key(REVIEW_BOX) and decided["attributes"]["method"] == "adjudicated"


def test_chexpert_csv_and_manifest_agree_with_what_was_answered(exported: dict[str, Any]) -> None:
    outcome, records = exported["outcome"], exported["records"]
    rows = list(csv.DictReader(io.StringIO(_file(outcome["chexpertCsvUri"]).read_text())))
    assert list(rows[0]) == ["Path", *CHEXPERT_LABELS]
    by_sop = {row["Path"].rsplit("/", 1)[-1]: row for row in rows}
    assert set(by_sop) == {records[0]["sop_uid"], records[1]["sop_uid"]}
    consensus = {k: float(v) if v else None for k, v in by_sop[records[0]["sop_uid"]].items() if k != "Path"}
    assert consensus["Cardiomegaly"] == 1.0 and consensus["Edema"] == 1.0
    assert consensus["Lung Lesion"] == -1.0  # a tie
    assert all(consensus[n] == 0.0 for n in CHEXPERT_LABELS if n not in ("Cardiomegaly", "Edema", "Lung Lesion"))
    decided = by_sop[records[1]["sop_uid"]]
    assert decided["Pneumothorax"] == "1.0" and decided["Edema"] == "0.0" and decided["Lung Lesion"] == "0.0"
    # The output manifest (as today) says the same: 1 / 0 / None where the CSV says 1.0 / 0.0 / -1.0.
    manifest = {o.sop_uid: o for o in read_output_manifest(_file(outcome["manifestUri"]).read_text().splitlines())}
    for sop, row in by_sop.items():
        values = manifest[sop].values  # the label list of the input lines: No Finding, Cardiomegaly, Edema, Pneumothorax
        assert {"Cardiomegaly", "Edema", "Pneumothorax"} <= set(values)
        for name, value in values.items():
            assert float(row[name]) == (-1.0 if value is None else value), (sop, name)
    # Re-export: the same bytes (the export depends only on the database).
    admin, job = exported["admin"], exported["job"]
    before = {k: _file(outcome[k]).read_bytes() for k in ("cocoUri", "chexpertCsvUri", "manifestUri")}
    again = admin.call("POST", f"/admin/jobs/{job['id']}/export", {})[1]
    assert {k: _file(again[k]).read_bytes() for k in before} == before


def test_chexpert_blank_means_nobody_answered_the_finding() -> None:
    task = Task(id=1, job_id=1, position=0, source="o", sop_instance_uid="1.2.3", study_instance_uid="1.2",
                series_instance_uid="1.2.9", manifest_line={}, created_at=datetime.now(UTC))
    label = ConsolidatedLabel(findings={
        "Edema": FindingConsensus(FindingState.PRESENT, 1.0, 1.0, 2),
        "Fracture": FindingConsensus(FindingState.UNCERTAIN, 0.5, 0.5, 2),
        "Pneumonia": FindingConsensus(FindingState.UNCERTAIN, 0.0, 0.0, 0),  # nobody answered it
    }, method="majority")
    text = chexpert_csv([(TaskAnswers(task, [], None), label)], ["Edema", "Fracture", "Pneumonia", "Atelectasis"])
    assert text.decode().splitlines() == ["Path,Edema,Fracture,Pneumonia,Atelectasis",
                                          "studies/1.2/series/1.2.9/instances/1.2.3,1.0,-1.0,,"]
