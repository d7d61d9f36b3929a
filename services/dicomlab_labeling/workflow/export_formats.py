"""Export formats other tools read directly: COCO JSON for the ROIs and a CheXpert-style label CSV.

Both are built from the same final labels as the output manifest (consensus, or the adjudication), so
the three files of one export always agree.

- **COCO** (``coco.json``): ``images`` are the labelled images with ``id`` = SOP Instance UID and
  ``file_name`` = the image's DICOMweb path (``studies/<study>/series/<series>/instances/<sop>``, relative
  to the WADO-RS root); ``width``/``height`` when the PACS told them. ``categories`` are the job's findings
  (ids 1..n in the job's label order, each with its DICOM code). ``annotations`` are the final ROIs
  (:func:`dicomlab_labeling.workflow.results.final_rois`) tied to a finding: ``bbox`` ``[x, y, w, h]``, ``area``,
  ``segmentation`` (a polygon; an ellipse as 64 points on its outline) and, to read the ROI back exactly,
  ``attributes: {"tool", "points"}``. Coordinates are image pixels, (0, 0) = top-left corner of the image.
- **CheXpert-style CSV** (``chexpert.csv``): ``Path`` (the DICOMweb path) then one column per finding in
  the job's order with CheXpert's values: ``1.0`` present, ``0.0`` absent, ``-1.0`` uncertain, blank when
  no reader answered that finding (and nobody adjudicated it). One row per labelled image.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from dicomlab_core.errors import ServiceError
from dicomlab_core.groundtruth import ConsolidatedLabel, Roi, RoiTool
from dicomlab_core.labels import FindingState, finding_code
from dicomlab_core.orthanc import OrthancClient
from dicomlab_labeling.workflow.models import Job
from dicomlab_labeling.workflow.results import ADJUDICATED, TaskAnswers, final_rois

logger = logging.getLogger(__name__)

CHEXPERT_VALUES = {FindingState.PRESENT: "1.0", FindingState.ABSENT: "0.0", FindingState.UNCERTAIN: "-1.0"}
ELLIPSE_POINTS = 64
"""Vertices of the polygon that stands for an ellipse in COCO ``segmentation`` (COCO has no ellipses)."""

Final = Sequence[tuple[TaskAnswers, ConsolidatedLabel]]
Dimensions = Callable[[str], tuple[int, int] | None]
"""Orthanc instance id → (columns, rows), or None when unknown."""


def image_path(item: TaskAnswers) -> str:
    """The image's DICOMweb path relative to the WADO-RS root (stable, and no patient data in it)."""
    task = item.task
    return f"studies/{task.study_instance_uid}/series/{task.series_instance_uid}/instances/{task.sop_instance_uid}"


def chexpert_csv(final: Final, labels: Sequence[str]) -> bytes:
    """The CheXpert-style CSV of the final labels (see the module docstring)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Path", *labels])
    for item, label in final:
        row = [image_path(item)]
        for name in labels:
            consensus = label.findings.get(name)
            unanswered = consensus is None or (consensus.answers == 0 and label.method != ADJUDICATED)
            row.append("" if unanswered or consensus is None else CHEXPERT_VALUES[consensus.value])
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")


def _outline(roi: Roi) -> list[tuple[float, float]]:
    """The ROI's outline as polygon vertices (rectangle corners, ellipse samples, polygon vertices)."""
    if roi.tool is RoiTool.POLYGON:
        return list(roi.points)
    xs, ys = [p[0] for p in roi.points], [p[1] for p in roi.points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if roi.tool is RoiTool.RECTANGLE:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * math.cos(2 * math.pi * k / ELLIPSE_POINTS), cy + ry * math.sin(2 * math.pi * k / ELLIPSE_POINTS))
            for k in range(ELLIPSE_POINTS)]


def _area(roi: Roi, outline: list[tuple[float, float]]) -> float:
    if roi.tool is RoiTool.ELLIPSE:
        xs, ys = [p[0] for p in roi.points], [p[1] for p in roi.points]
        return math.pi * (max(xs) - min(xs)) * (max(ys) - min(ys)) / 4
    following = outline[1:] + outline[:1]
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(outline, following, strict=True))) / 2


def coco_json(job: Job, final: Final, labels: Sequence[str], dimensions: Dimensions | None = None) -> bytes:
    """The COCO object-detection file of the final ROIs (see the module docstring)."""
    categories = {name: index for index, name in enumerate(labels, 1)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for item, label in final:
        image: dict[str, Any] = {"id": item.task.sop_instance_uid, "file_name": image_path(item),
                                 "study_instance_uid": item.task.study_instance_uid,
                                 "series_instance_uid": item.task.series_instance_uid}
        size = dimensions(item.task.source) if dimensions is not None else None
        if size is not None:
            image["width"], image["height"] = size
        images.append(image)
        for roi in final_rois(item, label, list(labels)):
            if roi.finding is None or roi.finding not in categories:
                continue  # COCO needs a category; a ROI tied to no finding has none
            outline = _outline(roi)
            xs, ys = [p[0] for p in outline], [p[1] for p in outline]
            annotations.append({
                "id": len(annotations) + 1, "image_id": item.task.sop_instance_uid,
                "category_id": categories[roi.finding],
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                "area": round(_area(roi, outline), 4),
                "segmentation": [[round(c, 4) for point in outline for c in point]],
                "iscrowd": 0,
                "attributes": {"tool": roi.tool.value, "points": [list(p) for p in roi.points],
                               "method": label.method}})
    category_list = []
    for name, index in categories.items():
        code = finding_code(name)
        category_list.append({"id": index, "name": name, "supercategory": "finding",
                              "code": {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}})
    document = {"info": {"description": f"dicomlab labeling job {job.name}", "version": "1.0",
                         "contributor": "dicomlab"},
                "licenses": [], "images": images, "annotations": annotations, "categories": category_list}
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def orthanc_dimensions(orthanc: OrthancClient) -> Dimensions:
    """Image size from Orthanc's tags (Columns × Rows); None, with a warning, when they cannot be read."""

    def dimensions(source: str) -> tuple[int, int] | None:
        try:
            tags = orthanc.instance_tags(source)
            return int(tags["Columns"]), int(tags["Rows"])
        except (ServiceError, KeyError, TypeError, ValueError) as exc:  # a missing size must not fail the export
            logger.warning("image size unknown for the COCO export", extra={"reason": type(exc).__name__})
            return None

    return dimensions
