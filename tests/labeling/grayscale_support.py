"""Reference renderings and test images for the viewer's grayscale pipeline.

The reference is the training decoder (``dicomlab_training.pixels.to_grey``), which follows the standard's
Modality LUT → VOI LUT → Presentation LUT Shape / MONOCHROME1 order. A viewer screenshot and the
reference are compared on a coarse grid (area averages), by mean absolute error and correlation: both
fail on an inverted image, so a polarity error cannot pass.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomlab_core.synth import SynthConfig, generate, to_bytes
from dicomlab_core.synth.dicom import encode
from dicomlab_core.synth.plan import Compression, available_compressions

GRID = 24
"""The comparison grid (cells per side)."""
MAX_MAE = 0.03
"""Largest mean absolute error (0..1 brightness) between the viewer and the reference."""
MIN_CORRELATION = 0.98
"""Smallest correlation between the viewer and the reference."""

REAL_FILES = ("RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "vlut_04.dcm", "mlut_18.dcm",
              "JPEG-LL.dcm")
"""Real-world files of ``pydicom-data``: chest radiographs (CR, MONOCHROME1, Pixel Spacing 0\\0 or none,
15 and 10 bits; uncompressed and JPEG 2000), a VOI LUT Sequence, a Modality LUT Sequence, a signed
16-bit JPEG Lossless image."""


def reference_grey(data: bytes) -> npt.NDArray[np.float32]:
    """The training decoder's rendering of a DICOM file: 0..1, bright = displayed white."""
    from dicomlab_training.pixels import to_grey

    return to_grey(pydicom.dcmread(io.BytesIO(data)))


def grid(image: npt.NDArray[Any], cells: int = GRID) -> npt.NDArray[np.float64]:
    """Area-average ``image`` (any range) down to cells × cells."""
    pil = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((cells, cells), Image.Resampling.BOX), dtype=np.float64)


def screenshot_grey(png: bytes) -> npt.NDArray[np.float64]:
    """A screenshot as 0..1 brightness."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64) / 255.0


@dataclass(frozen=True)
class Agreement:
    mae: float
    correlation: float

    @property
    def ok(self) -> bool:
        return self.mae <= MAX_MAE and self.correlation >= MIN_CORRELATION


def agreement(shown: npt.NDArray[Any], reference: npt.NDArray[Any]) -> Agreement:
    """Mean absolute error and correlation of two images on the comparison grid."""
    a, b = grid(shown).ravel(), grid(reference).ravel()
    mae = float(np.abs(a - b).mean())
    if a.std() == 0 or b.std() == 0:
        return Agreement(mae, 0.0)
    return Agreement(mae, float(np.corrcoef(a, b)[0, 1]))


# ------------------------------------------------------------------------------------------- synthetic
@dataclass(frozen=True)
class Variant:
    """One synthetic case of the transfer syntax × photometric × Presentation LUT Shape × VOI matrix."""

    name: str
    data: bytes
    sop_uid: str


VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def _base() -> tuple[Dataset, npt.NDArray[np.uint16]]:
    """An uncompressed MONOCHROME2 DX chest phantom without VOI, odd width, and its stored values."""
    image = next(generate(SynthConfig(patients=1, rows=180, columns=151, seed=23, monochrome1_fraction=0.0,
                                      compressed_fraction=0.0, modalities=("DX",), voi_fraction=0.0)))
    ds = image.dataset
    stored = np.asarray(ds.pixel_array, dtype=np.uint16)
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation",
                    "VOILUTSequence", "PresentationLUTShape"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds, stored


def _sigmoid_lut(low: int, high: int) -> Dataset:
    entries = np.arange(low, high + 1, dtype=np.float64)
    lut = 65535 / (1 + np.exp(-(entries - (low + high) / 2) / (0.2 * (high - low))))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(entries), low, 16])
    item.LUTExplanation = "TEST SIGMOID"
    item.add_new("LUTData", "OW", np.rint(lut).astype("<u2").tobytes())
    return item


def synthetic_variants() -> list[Variant]:
    """Every supported transfer syntax × MONOCHROME1/2 × with/without Presentation LUT Shape × VOI
    (two windows with explanations — LINEAR, LINEAR_EXACT or SIGMOID in turn —, a VOI LUT Sequence, or
    none for the uncompressed ones)."""
    base, stored2 = _base()
    out: list[Variant] = []
    index = 0
    for compression in (Compression.NONE, *available_compressions()):
        for photometric in ("MONOCHROME2", "MONOCHROME1"):
            stored = stored2 if photometric == "MONOCHROME2" else (4095 - stored2).astype(np.uint16)
            slope, intercept = float(base.get("RescaleSlope", 1)), float(base.get("RescaleIntercept", 0))
            values = stored * slope + intercept
            low, high = np.percentile(values, [8, 85])
            vois = ("window", "lut", "none") if compression == Compression.NONE else ("window", "lut")
            for shape in ("", "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"):
                for voi in vois:
                    index += 1
                    ds = copy.deepcopy(base)
                    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(base.SOPInstanceUID), str(index)])
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.PhotometricInterpretation = photometric
                    ds.PixelData = stored.astype("<u2").tobytes()
                    if shape:
                        ds.PresentationLUTShape = shape
                    function = VOI_FUNCTIONS[index % len(VOI_FUNCTIONS)]
                    if voi == "window":
                        ds.WindowCenter = [f"{(low + high) / 2:.1f}", f"{float(values.mean()):.1f}"]
                        ds.WindowWidth = [f"{high - low:.1f}", f"{float(values.max() - values.min()):.1f}"]
                        ds.WindowCenterWidthExplanation = ["TEST LUNG", "TEST FULL"]
                        ds.VOILUTFunction = function
                    elif voi == "lut":
                        ds.VOILUTSequence = Sequence([_sigmoid_lut(int(values.min()), int(values.max()))])
                    encode(ds, compression, stored)
                    label = f"{compression}-{photometric}-{shape or 'noPLS'}-{voi}" + (
                        f"-{function}" if voi == "window" else "")
                    out.append(Variant(label, to_bytes(ds), str(ds.SOPInstanceUID)))
    return out
