"""The pixel pipeline against arrays computed by hand from the DICOM rules."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from dicomlab_core.synth import available_compressions
from dicomlab_training.pixels import SkipImage, SkipReason, decode, read_dataset, resize_pad, to_grey

ROWS, COLS = 32, 24


def stored_image(seed: int = 0, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """A 12-bit test image: a gradient plus a bright square (bone) and a dark region (air)."""
    rng = np.random.default_rng(seed)
    values = np.tile(np.linspace(600, 3400, cols), (rows, 1))
    values[4:12, 4:12] = 4000
    values[20:28, 14:22] = 80
    values += rng.integers(0, 20, size=values.shape)
    return np.clip(values, 0, 4095).astype(np.uint16)


def make_ds(stored: np.ndarray, photometric: str = "MONOCHROME2", **tags: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P-1"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_monochrome2_is_scaled_min_max() -> None:
    stored = stored_image()
    grey = to_grey(read_dataset(to_bytes(make_ds(stored))))
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(grey, expected, atol=1e-6)


def test_monochrome1_is_inverted_to_the_same_image() -> None:
    stored = stored_image()
    mono2 = to_grey(read_dataset(to_bytes(make_ds(stored))))
    mono1 = to_grey(read_dataset(to_bytes(make_ds((4095 - stored).astype(np.uint16), "MONOCHROME1"))))
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)
    # bone (bright square) stays bright, air stays dark
    assert mono1[6, 6] > 0.95 and mono1[24, 18] < 0.05


def test_presentation_lut_inverse_with_monochrome1_is_one_inversion() -> None:
    stored = stored_image()
    plain = to_grey(read_dataset(to_bytes(make_ds((4095 - stored).astype(np.uint16), "MONOCHROME1"))))
    with_shape = to_grey(read_dataset(to_bytes(make_ds((4095 - stored).astype(np.uint16), "MONOCHROME1",
                                                       PresentationLUTShape="INVERSE"))))
    np.testing.assert_array_equal(plain, with_shape)


def test_rescale_then_window_clips_as_the_standard_says() -> None:
    stored = stored_image()
    slope, intercept, center, width = 2.0, -1000.0, 3000.0, 2000.0
    ds = make_ds(stored, RescaleSlope=slope, RescaleIntercept=intercept, WindowCenter=center, WindowWidth=width)
    grey = to_grey(read_dataset(to_bytes(ds)))
    x = stored * slope + intercept
    # PS3.3 C.11.2.1.2.1 (LINEAR): output range 0..4095 for 12-bit unsigned, then scaled to 0..1
    y = ((x - (center - 0.5)) / (width - 1) + 0.5)
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, np.where(x > center - 0.5 + (width - 1) / 2, 1.0, y))
    np.testing.assert_allclose(grey, y, atol=1e-6)
    assert (grey == 0).any() and (grey == 1).any()  # the window really clips


def test_voi_lut_sequence_is_applied() -> None:
    stored = stored_image()
    first, entries = 500, 3100
    lut = (np.sqrt(np.linspace(0, 1, entries)) * 4095).astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, first, 12])
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    ds = make_ds(stored)
    ds.VOILUTSequence = Sequence([item])
    grey = to_grey(read_dataset(to_bytes(ds)))
    expected = lut[np.clip(stored.astype(np.int64) - first, 0, entries - 1)] / 4095.0
    np.testing.assert_allclose(grey, expected, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(syntax: UID) -> None:
    names = {RLELossless: "rle", JPEGLSLossless: "jpeg-ls", JPEG2000Lossless: "jpeg2000"}
    if names[syntax] not in {c.value for c in available_compressions()}:
        pytest.skip(f"no encoder for {syntax.name} here")
    stored = stored_image(3, 128, 96)  # OpenJPEG's default resolutions need more than 32 pixels
    reference = to_grey(read_dataset(to_bytes(make_ds(stored, "MONOCHROME1"))))
    ds = make_ds(stored, "MONOCHROME1")
    ds.compress(syntax, generate_instance_uid=False)
    data = to_bytes(ds)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(to_grey(read_dataset(data)), reference)


def test_resize_preserves_aspect_and_pads_with_air() -> None:
    image = np.ones((40, 20), dtype=np.float32)
    out = resize_pad(image, 16)
    assert out.shape == (16, 16)
    # 40×20 → 16×8 centred: columns 4..11 are image, the rest padding
    np.testing.assert_allclose(out[:, 4:12], 1.0, atol=1e-6)
    assert out[:, :4].max() == 0 and out[:, 12:].max() == 0
    # area averaging: a 2×2 checkerboard downsampled by 2 is flat grey
    checker = np.indices((32, 32)).sum(axis=0) % 2
    np.testing.assert_allclose(resize_pad(checker.astype(np.float32), 16), 0.5, atol=1e-6)


def test_decode_reports_ids_without_phi() -> None:
    ds = make_ds(stored_image())
    decoded = decode(to_bytes(ds), 16, expected_sop_uid=str(ds.SOPInstanceUID))
    assert decoded.pixels.shape == (16, 16) and decoded.pixels.dtype == np.float32
    assert decoded.sop_uid == ds.SOPInstanceUID and decoded.original_shape == (ROWS, COLS)
    assert "P-1" not in decoded.patient_key and len(decoded.patient_key) == 16


def test_unusable_inputs_raise_counted_reasons() -> None:
    ds = make_ds(stored_image())
    with pytest.raises(SkipImage) as not_dicom:
        decode(b"<html>error page</html>", 16)
    assert not_dicom.value.reason is SkipReason.NOT_DICOM
    with pytest.raises(SkipImage) as mismatch:
        decode(to_bytes(ds), 16, expected_sop_uid="1.2.3.4")
    assert mismatch.value.reason is SkipReason.SOP_MISMATCH
    no_pixels = make_ds(stored_image())
    del no_pixels.PixelData
    with pytest.raises(SkipImage) as empty:
        decode(to_bytes(no_pixels), 16)
    assert empty.value.reason is SkipReason.NO_PIXEL_DATA
    truncated = to_bytes(ds)[:-200]
    with pytest.raises(SkipImage) as broken:
        decode(truncated, 16)
    assert broken.value.reason in (SkipReason.DECODE_ERROR, SkipReason.NOT_DICOM)
