"""Objects a chest X-ray manifest must *not* select, for manifest and pipeline tests.

Real studies hold more than images: structured reports, presentation states, multi-frame objects,
encapsulated documents, and raw "for processing" images. :func:`make_extra_objects` makes one of
each, optionally inside an existing study, so a selector can be tested on what it skips. Each comes
as ``(reason, dataset)`` where ``reason`` is an :class:`ExtraKind`.
"""

from __future__ import annotations

import dataclasses
import logging
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    DigitalXRayImageStorageForProcessing,
    EncapsulatedPDFStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from .dicom import MANUFACTURER, SYNTHETIC_NOTICE, attach_file_meta, make_image
from .plan import Compression, Photometric, SynthConfig, Voi, make_uid, plan

logger = logging.getLogger(__name__)

EXTRAS_PATIENT_ID = "SYNTHEXTRA"
MINIMAL_PDF = (b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
               b"endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]>>endobj\ntrailer<</Root 1 0 R>>\n"
               b"%%EOF\n")


class ExtraKind(StrEnum):
    SR = "sr"
    PRESENTATION_STATE = "presentation_state"
    MULTIFRAME = "multiframe"
    NON_IMAGE = "non_image"
    FOR_PROCESSING = "for_processing"


def _base(seed: int, kind: ExtraKind, sop_class: str, modality: str, study_uid: str, patient_id: str,
          patient_name: str, series_number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = make_uid(seed, "extra", kind, "instance")
    ds.StudyDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"SYNX{seed % 1000:03d}"
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = make_uid(seed, "extra", kind, "series", study_uid)
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    attach_file_meta(ds)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _sr(ds: Dataset) -> Dataset:
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    finding.TextValue = "Synthetic report: no acute cardiopulmonary process."
    ds.ContentSequence = Sequence([finding])
    return ds


def _presentation_state(ds: Dataset, referenced: tuple[str, str, str] | None) -> Dataset:
    ds.ContentLabel = "SYNTH_PS"
    ds.ContentDescription = "Synthetic presentation state"
    ds.PresentationCreationDate = "20240102"
    ds.PresentationCreationTime = "120000"
    ds.ContentCreatorName = "SYNTH^READER"
    ds.PresentationLUTShape = "IDENTITY"
    if referenced:
        sop_class, series_uid, sop_uid = referenced
        image = Dataset()
        image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = sop_class, sop_uid
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedImageSequence = Sequence([image])
        ds.ReferencedSeriesSequence = Sequence([series])
    area = Dataset()
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [256, 256]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelSpacing = [1.0, 1.0]
    ds.DisplayedAreaSelectionSequence = Sequence([area])
    return ds


def _multiframe(ds: Dataset, seed: int) -> Dataset:
    frames, size = 3, 64
    rng = np.random.default_rng([seed, 31])
    pixels = (rng.integers(0, 4096, size=(frames, size, size))).astype("<u2")
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00182002  # Frame Label Vector
    ds.FrameLabelVector = [f"F{i + 1}" for i in range(frames)]
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _pdf(ds: Dataset) -> Dataset:
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Synthetic referral letter"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = MINIMAL_PDF + (b"\0" if len(MINIMAL_PDF) % 2 else b"")
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(MINIMAL_PDF)
    return ds


def make_extra_objects(seed: int = 0, study_uid: str | None = None, patient_id: str | None = None,
                       patient_name: str | None = None, size: int = 256) -> list[tuple[str, Dataset]]:
    """One of each non-qualifying object: SR, presentation state, multi-frame, PDF, for-processing DX.

    With ``study_uid`` they join that study (pass the study's ``patient_id`` too, or Orthanc will
    file them under a different patient); otherwise they form their own study. Deterministic by seed.
    """
    study = study_uid or make_uid(seed, "extra", "study")
    pid = patient_id or EXTRAS_PATIENT_ID
    name = patient_name or "SYNTH^EXTRAS"

    def base(kind: ExtraKind, sop_class: str, modality: str, number: int) -> Dataset:
        return _base(seed, kind, sop_class, modality, study, pid, name, 90 + number)

    # a raw (for processing) DX chest: a real image, but not one a reader should label
    spec = next(plan(SynthConfig(patients=1, seed=seed, rows=size, columns=size, compressed_fraction=0.0,
                                 monochrome1_fraction=0.0, voi_fraction=0.0, modalities=("DX",))))
    spec = dataclasses.replace(spec, study_uid=study, patient_id=pid, patient_name=name,
                               series_uid=make_uid(seed, "extra", ExtraKind.FOR_PROCESSING, "series", study),
                               sop_uid=make_uid(seed, "extra", ExtraKind.FOR_PROCESSING, "instance"),
                               compression=Compression.NONE, photometric=Photometric.MONOCHROME2, voi=Voi.NONE,
                               series_number=95)
    raw = make_image(spec).dataset
    raw.SOPClassUID = raw.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForProcessing
    raw.PresentationIntentType = "FOR PROCESSING"
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
        if keyword in raw:
            delattr(raw, keyword)
    result: list[tuple[str, Dataset]] = [
        (ExtraKind.SR, _sr(base(ExtraKind.SR, BasicTextSRStorage, "SR", 1))),
        (ExtraKind.PRESENTATION_STATE, _presentation_state(
            base(ExtraKind.PRESENTATION_STATE, GrayscaleSoftcopyPresentationStateStorage, "PR", 2),
            (str(raw.SOPClassUID), str(raw.SeriesInstanceUID), str(raw.SOPInstanceUID)))),
        (ExtraKind.MULTIFRAME, _multiframe(
            base(ExtraKind.MULTIFRAME, MultiFrameGrayscaleWordSecondaryCaptureImageStorage, "OT", 3), seed)),
        (ExtraKind.NON_IMAGE, _pdf(base(ExtraKind.NON_IMAGE, EncapsulatedPDFStorage, "DOC", 4))),
        (ExtraKind.FOR_PROCESSING, raw),
    ]
    result[2][1].ImageComments = SYNTHETIC_NOTICE
    return [(str(kind), ds) for kind, ds in result]
