"""Turning a rendered phantom into a DICOM DX or CR instance (pydicom), and into Part-10 bytes.

Pixels are 12-bit (BitsStored 12 in 16 allocated, unsigned), uncompressed or losslessly compressed
(RLE, JPEG Lossless SV1 with our encoder, JPEG-LS, JPEG 2000). MONOCHROME1 images *store* inverted
values (``4095 - v``), so a reader that forgets the inversion sees a negative. The VOI is either a
clipping window, a VOI LUT Sequence (a sigmoid lookup table) or, for DX without either, a window
spanning the stored range (DX for presentation requires a VOI). CR may carry a non-identity
Rescale Slope/Intercept; window values are then in rescaled (output) units, as the standard says.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicomlab_core.labels import CHEXPERT_LABELS

from .canvas import Box
from .jpeg_lossless import encode_jpeg_lossless
from .phantom import expose
from .plan import Compression, ImageSpec, Modality, Photometric, Voi
from .render import render

logger = logging.getLogger(__name__)

BITS_STORED = 12
MAX_STORED = (1 << BITS_STORED) - 1
DETECTOR_MM = 430.0
"""Detector edge length: pixel spacing is this divided by the matrix size."""

TRANSFER_SYNTAX: dict[Compression, UID] = {
    Compression.NONE: ExplicitVRLittleEndian, Compression.RLE: RLELossless,
    Compression.JPEG_LOSSLESS: JPEGLosslessSV1, Compression.JPEG_LS: JPEGLSLossless,
    Compression.JPEG2000: JPEG2000Lossless,
}
SOP_CLASS: dict[Modality, UID] = {
    Modality.DX: DigitalXRayImageStorageForPresentation, Modality.CR: ComputedRadiographyImageStorage,
}
MANUFACTURER = "dicomlab synthetic"
SYNTHETIC_NOTICE = "SYNTHETIC IMAGE - NOT A REAL PATIENT"


@dataclass
class SynthImage:
    """One generated image with its ground truth."""

    spec: ImageSpec
    dataset: Dataset
    regions: dict[str, Box] = field(default_factory=dict)
    """Per finding present: its bounding box as image fractions (x0, y0, x1, y1)."""

    @property
    def findings(self) -> dict[str, bool]:
        return {label: label in self.spec.findings for label in CHEXPERT_LABELS}

    @property
    def patient_id(self) -> str:
        return self.spec.patient_id

    @property
    def study_uid(self) -> str:
        return self.spec.study_uid

    @property
    def series_uid(self) -> str:
        return self.spec.series_uid

    @property
    def sop_uid(self) -> str:
        return self.spec.sop_uid

    @property
    def photometric(self) -> str:
        return str(self.spec.photometric)

    @property
    def transfer_syntax(self) -> str:
        return str(TRANSFER_SYNTAX[self.spec.compression])

    def truth_record(self) -> dict[str, Any]:
        """The JSON-able ground truth of this image (UIDs, encoding, findings as 0/1, regions)."""
        spec = self.spec
        return {
            "patient_id": spec.patient_id, "study_uid": spec.study_uid, "series_uid": spec.series_uid,
            "sop_uid": spec.sop_uid, "modality": str(spec.modality), "view": str(spec.view),
            "photometric": str(spec.photometric), "transfer_syntax": self.transfer_syntax,
            "compression": str(spec.compression), "voi": str(spec.voi),
            "rescale_slope": spec.rescale[0], "rescale_intercept": spec.rescale[1],
            "rows": spec.rows, "columns": spec.columns,
            "findings": {label: int(present) for label, present in self.findings.items()},
            "regions": {name: [round(v, 4) for v in box] for name, box in self.regions.items()},
        }


def stored_values(value: npt.NDArray[np.float32], spec: ImageSpec) -> npt.NDArray[np.uint16]:
    """Quantise display values (0..1, bright = dense) to 12-bit stored values for the photometric."""
    low, high = spec.exposure.low, spec.exposure.high
    stored = np.rint(low + value * (high - low)).astype(np.uint16)
    if spec.photometric == Photometric.MONOCHROME1:
        stored = (MAX_STORED - stored).astype(np.uint16)
    return stored


def _to_output(stored: float, spec: ImageSpec) -> float:
    slope, intercept = spec.rescale
    return stored * slope + intercept


def _stored_for(value: float, spec: ImageSpec) -> float:
    """The stored value a display value (MONOCHROME2 sense, 0..1) would get."""
    stored = spec.exposure.low + value * (spec.exposure.high - spec.exposure.low)
    return MAX_STORED - stored if spec.photometric == Photometric.MONOCHROME1 else stored


def _add_voi(ds: Dataset, spec: ImageSpec) -> None:
    rng = np.random.default_rng([spec.noise_seed, 7])
    if spec.voi == Voi.FULL_RANGE:
        a, b = _to_output(0, spec), _to_output(MAX_STORED, spec)
        ds.WindowCenter = f"{(a + b) / 2:.1f}"
        ds.WindowWidth = f"{abs(b - a) + 1:.1f}"
        ds.VOILUTFunction = "LINEAR"
    elif spec.voi == Voi.WINDOW:
        a = _to_output(_stored_for(float(rng.uniform(0.05, 0.2)), spec), spec)
        b = _to_output(_stored_for(float(rng.uniform(0.75, 0.92)), spec), spec)
        ds.WindowCenter = f"{(a + b) / 2:.1f}"
        ds.WindowWidth = f"{abs(b - a):.1f}"
        ds.VOILUTFunction = "LINEAR"
        ds.WindowCenterWidthExplanation = "SYNTH LUNG"
    elif spec.voi == Voi.LUT:
        first, last = sorted((int(_stored_for(0.0, spec)), int(_stored_for(1.0, spec))))
        entries = np.arange(first, last + 1, dtype=np.float64)
        centre = (first + last) / 2 + float(rng.uniform(-0.1, 0.1)) * (last - first)
        lut = MAX_STORED / (1 + np.exp(-(entries - centre) / (0.18 * (last - first))))
        item = Dataset()
        item.add_new("LUTDescriptor", "US", [len(entries), first, BITS_STORED])
        item.LUTExplanation = "SYNTH SIGMOID"
        item.add_new("LUTData", "OW", np.rint(lut).astype("<u2").tobytes())
        ds.VOILUTSequence = Sequence([item])


def build_dataset(spec: ImageSpec, stored: npt.NDArray[np.uint16]) -> Dataset:
    """The DICOM dataset of one image (uncompressed; :func:`encode` compresses it)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASS[spec.modality]
    ds.SOPInstanceUID = spec.sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = spec.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = spec.accession
    ds.Modality = str(spec.modality)
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "DICOMLAB SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC CHEST X-RAY"
    ds.SeriesDescription = f"CHEST {spec.view}"
    ds.ManufacturerModelName = "synth-phantom"
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.birth_date
    ds.PatientSex = spec.patient_sex
    ds.BodyPartExamined = "CHEST"
    ds.SoftwareVersions = "dicomlab-synth-1"
    ds.ViewPosition = str(spec.view)
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = spec.study_id
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = SYNTHETIC_NOTICE
    spacing = [round(DETECTOR_MM / spec.rows, 6), round(DETECTOR_MM / spec.columns, 6)]
    ds.ImagerPixelSpacing = spacing
    if spec.modality == Modality.DX:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if spec.photometric == Photometric.MONOCHROME1 else -1
        ds.PresentationLUTShape = "INVERSE" if spec.photometric == Photometric.MONOCHROME1 else "IDENTITY"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "43799004", "SCT", "Chest"
        ds.AnatomicRegionSequence = Sequence([region])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = str(spec.photometric)
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    if spec.modality == Modality.DX or spec.rescale != (1.0, 0.0):
        ds.RescaleIntercept = f"{spec.rescale[1]:g}"
        ds.RescaleSlope = f"{spec.rescale[0]:g}"
        ds.RescaleType = "US"
    _add_voi(ds, spec)
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    attach_file_meta(ds)
    return ds


def attach_file_meta(ds: Dataset) -> None:
    """Give ``ds`` the Part-10 file meta of an uncompressed (Explicit VR Little Endian) file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DICOMLAB_SYNTH"
    ds.file_meta = meta


def encode(ds: Dataset, compression: Compression, stored: npt.NDArray[np.uint16] | None = None) -> None:
    """Compress ``ds`` in place with a lossless transfer syntax (keeps its SOP Instance UID)."""
    if compression == Compression.NONE:
        return
    if compression == Compression.JPEG_LOSSLESS:  # no pydicom encoder: ours
        pixels = ds.pixel_array if stored is None else stored
        ds.PixelData = encapsulate([encode_jpeg_lossless(pixels, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        return
    ds.compress(TRANSFER_SYNTAX[compression], stored, generate_instance_uid=False)


def make_image(spec: ImageSpec) -> SynthImage:
    """Render, quantise and encode one planned image."""
    density, regions = render(spec)
    stored = stored_values(expose(density, spec), spec)
    ds = build_dataset(spec, stored)
    encode(ds, spec.compression, stored)
    return SynthImage(spec=spec, dataset=ds, regions=regions)


def to_bytes(dataset: Dataset) -> bytes:
    """A DICOM Part-10 file (preamble, 'DICM', file meta) of ``dataset``."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
