"""One image's labels as a DICOM TID 1500 Measurement Report, built with highdicom's template classes.

The content tree is assembled by highdicom (``MeasurementReport`` and the TID 1501/1410 group
classes), never by hand, so it follows the template that OHIF, dcmjs and dciodvfy check::

    Imaging Measurement Report (TID 1500)
      Language; observation context (TID 1001/1002/1004):
        person observer  "reader-<id>"  (a reader's report; the reviewer of an adjudicated one)
        device observer  dicomlab, model "dicomlab <version>"  (consensus and adjudicated reports)
      Procedure reported: Plain radiography (SCT 168537006)
      Image Library: the source image
      Qualitative Evaluations (C0034375, UMLS):
        one CODE per finding: <finding code> = Present | Absent | Undetermined (SCT, CID 240)
      Imaging Measurements (only when there are ROIs)
        Measurement Group (TID 1501) per ROI: Tracking Identifier + UID, Finding = <finding code>,
          Area (TID 300, mm²) INFERRED FROM Image Region = SCOORD on the source image (TID 320;
          rectangle and polygon: closed POLYLINE; ellipse: ELLIPSE)

Finding codes come from :data:`dicomlab_core.labels.FINDING_CODES`; the private ``99DCMLAB`` scheme
is declared in the Coding Scheme Identification Sequence. The ROI groups' tracking identifiers follow
Cornerstone3D's convention (``Cornerstone3DTools@^0.1.0:<tool>``) so OHIF and the Cornerstone3D
measurement-report adapter load them as the matching tool; the Tracking UID identifies each ROI.
Patient and study modules are copied from the source image by highdicom (the image is the evidence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from dicomlab_core import __version__
from dicomlab_core.groundtruth import Roi, RoiTool
from dicomlab_core.labels import (
    FINDING_STATE_CODES,
    PRIVATE_SCHEME,
    PRIVATE_SCHEME_NAME,
    PRIVATE_SCHEME_UID,
    FindingState,
    StandardCode,
    finding_code,
)

logger = logging.getLogger(__name__)

MANUFACTURER = "dicomlab"
DEVICE_UID = "2.25.65326745221472335017494354212892263182342317565184677591808"
"""Device Observer UID of dicomlab itself (fixed, so every consensus report names the same device)."""
PROCEDURE = hd.sr.CodedConcept("168537006", "SCT", "Plain radiography")
"""Procedure reported (PS3.16 CID 10005)."""
IMAGE_FINDINGS = "Image findings"
"""Tracking identifier of the stand-in group of a report without ROIs (dropped, see build_report)."""
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
"""TID 1500's container of image-level evaluations (the concept dcmjs's TID 1500 writer uses too)."""
IMAGING_MEASUREMENTS = codes.DCM.ImagingMeasurements
CORNERSTONE_TAG = "Cornerstone3DTools@^0.1.0"
CORNERSTONE_TOOLS = {RoiTool.RECTANGLE: "RectangleROI", RoiTool.ELLIPSE: "EllipticalROI",
                     RoiTool.POLYGON: "PlanarFreehandROI"}
"""Our ROI tools as Cornerstone3D annotation tools (the viewer draws them with these)."""


@dataclass(frozen=True)
class Observer:
    """Who the report speaks for: a reader (person), the consensus (device), or both (adjudicated)."""

    person: str | None = None
    """Pseudonymous person name (``reader-<user id>`` / ``reviewer-<user id>``), never a username."""
    device: bool = False
    """Whether dicomlab itself is an observer (consensus and adjudication)."""


@dataclass(frozen=True)
class ReportContent:
    """What one report says about one image."""

    findings: dict[str, FindingState]
    """Finding label → state, in the job's label order; only findings that were answered."""
    rois: tuple[Roi, ...]
    observer: Observer
    description: str
    """Series description, e.g. ``dicomlab <job> consensus``."""
    final: bool = False


def coded(code: StandardCode) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _observation_context(observer: Observer) -> hd.sr.ObservationContext:
    person = device = None
    if observer.person is not None:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            # The pseudonym as a family name only: the trailing caret says so (a bare word is the retired PN form).
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=f"{observer.person}^"))
    if observer.device:
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=DEVICE_UID, name=MANUFACTURER, manufacturer_name=MANUFACTURER,
                model_name=f"{MANUFACTURER} {__version__}"))
    return hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)


def scoord(roi: Roi) -> tuple[hd.sr.GraphicTypeValues, np.ndarray]:
    """The SCOORD graphic of a ROI (image pixel coordinates, (0, 0) = top-left corner of the first pixel).

    Rectangle: the closed polyline of its four corners from top-left, clockwise. Ellipse (the one
    inscribed in the two-corner bounding box): ELLIPSE's major-axis end points, then minor-axis ones.
    Polygon: its vertices, closed by repeating the first.
    """
    points = np.asarray(roi.points, dtype=float)
    if roi.tool is RoiTool.POLYGON:
        return hd.sr.GraphicTypeValues.POLYLINE, np.vstack([points, points[:1]])
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    if roi.tool is RoiTool.RECTANGLE:
        corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return hd.sr.GraphicTypeValues.POLYLINE, np.asarray(corners, dtype=float)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    horizontal = [[x0, cy], [x1, cy]]
    vertical = [[cx, y0], [cx, y1]]
    axes = horizontal + vertical if x1 - x0 >= y1 - y0 else vertical + horizontal
    return hd.sr.GraphicTypeValues.ELLIPSE, np.asarray(axes, dtype=float)


def pixel_spacing(source: pydicom.Dataset) -> tuple[float, float]:
    """(row, column) spacing in mm: Pixel Spacing, else Imager Pixel Spacing, else 1 mm per pixel.

    Radiographs often declare no spacing or ``0\\0``; like the viewer, such images are measured at
    1 mm per pixel (the area is then in pixels).
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = source.get(keyword)
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column
    return 1.0, 1.0


def roi_area(roi: Roi) -> float:
    """The ROI's area in square pixels (rectangle, inscribed ellipse, or polygon by the shoelace formula)."""
    points = np.asarray(roi.points, dtype=float)
    if roi.tool is RoiTool.POLYGON:
        x, y = points[:, 0], points[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
    width, height = points.max(axis=0) - points.min(axis=0)
    factor = np.pi / 4 if roi.tool is RoiTool.ELLIPSE else 1.0
    return float(width * height * factor)


def _roi_group(source: pydicom.Dataset, roi: Roi, tracking_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One ROI as a TID 1501 group: Finding, and its Area (TID 300) inferred from the SCOORD (TID 320).

    This is the layout OHIF writes and Cornerstone3D's measurement-report adapter reads back for every
    tool. A TID 1410 group (Image Region at group level) would be the other choice, but highdicom allows
    no coordinates under its measurements and the adapter then fails on ellipses and polygons.
    """
    graphic_type, data = scoord(roi)
    row, column = pixel_spacing(source)
    area = hd.sr.Measurement(
        name=codes.SCT.Area, value=round(roi_area(roi) * row * column, 4), unit=codes.UCUM.SquareMillimeter,
        referenced_coordinates=[hd.sr.CoordinatesForMeasurement(
            graphic_type=graphic_type, graphic_data=data,
            source_image=hd.sr.SourceImageForRegion.from_source_image(source))])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=f"{CORNERSTONE_TAG}:{CORNERSTONE_TOOLS[roi.tool]}"),
        finding_type=coded(finding_code(roi.finding)) if roi.finding is not None else None,
        measurements=[area])


def _evaluations(findings: dict[str, FindingState]) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: one CODE item per finding, ``<finding> = <state>``.

    Image-level evaluations live here, not in a measurement group: OHIF (3.13) reads every group of
    Imaging Measurements as something to draw and fails on one without coordinates.
    """
    container = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(
        [item for label, state in findings.items()
         for item in hd.sr.QualitativeEvaluation(name=coded(finding_code(label)),
                                                 value=coded(FINDING_STATE_CODES[state]))],
        is_root=False)
    return container


def _coding_schemes(used: set[str]) -> list[pydicom.Dataset]:
    """Coding Scheme Identification Sequence items for the private schemes the report uses (PS3.3 C.12.1.1.2)."""
    if PRIVATE_SCHEME not in used:
        return []
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeUID = PRIVATE_SCHEME_UID
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return [item]


def build_report(source: pydicom.Dataset, content: ReportContent, *, series_instance_uid: str, series_number: int,
                 sop_instance_uid: str, tracking_uids: Sequence[str]) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report for ``source`` (see the module docstring); UIDs are given, so it is deterministic.

    ``tracking_uids`` has one UID per ROI (same order).
    """
    groups = [_roi_group(source, roi, uid) for roi, uid in zip(content.rois, tracking_uids, strict=True)]
    # highdicom builds TID 1500 only around at least one measurement group; a report without ROIs is
    # built around a stand-in group that is then dropped with its container (rows 6 and 10 are "at least
    # one of", so the Qualitative Evaluations container alone is a complete report).
    stand_in = not groups and bool(content.findings)
    if stand_in:
        groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier=IMAGE_FINDINGS))]
    report = hd.sr.MeasurementReport(observation_context=_observation_context(content.observer),
                                     procedure_reported=PROCEDURE, imaging_measurements=groups,
                                     referenced_images=[source])
    root = report[0]
    items = [item for item in root.ContentSequence
             if not (stand_in and item.ValueType == "CONTAINER"
                     and item.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS.value)]
    if content.findings:
        items.append(_evaluations(content.findings))
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        is_final=content.final, series_description=content.description[:64], software_versions=__version__)
    used = {finding_code(label).scheme for label in content.findings}
    used |= {finding_code(r.finding).scheme for r in content.rois if r.finding is not None}
    schemes = _coding_schemes(used)
    if schemes:
        sr.CodingSchemeIdentificationSequence = schemes
    return sr
