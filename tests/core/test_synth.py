"""The synthetic generator writes valid, deterministic DICOM with the encodings it claims."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_voi_lut

from dicomlab_core.labels import CHEXPERT_LABELS, NO_FINDING, Finding
from dicomlab_core.synth import (
    GROUND_TRUTH_CSV,
    Compression,
    ExtraKind,
    Photometric,
    SynthConfig,
    SynthImage,
    Voi,
    available_compressions,
    generate,
    load_ground_truth,
    make_extra_objects,
    make_image,
    plan,
    to_bytes,
    write_study_set,
)
from dicomlab_core.synth.dicom import MAX_STORED

SMALL = SynthConfig(patients=4, seed=11, rows=128, columns=96, monochrome1_fraction=0.5, voi_fraction=0.5,
                    compressed_fraction=0.5)


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_images_are_valid_dicom_with_the_declared_encoding() -> None:
    images = list(generate(SMALL))
    assert len(images) >= 4
    for image in images:
        ds = read(to_bytes(image.dataset))
        assert ds.file_meta.TransferSyntaxUID == image.transfer_syntax
        assert ds.SOPInstanceUID == image.sop_uid and ds.StudyInstanceUID == image.study_uid
        assert ds.Modality in {"DX", "CR"}
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.PhotometricInterpretation == image.photometric
        assert ds.PatientID.startswith("SYNTH") and str(ds.PatientName).startswith("SYNTH^")
        pixels = ds.pixel_array
        assert pixels.shape == (128, 96) and pixels.dtype == np.uint16 and int(pixels.max()) <= MAX_STORED
        assert "SYNTHETIC" in ds.ImageComments
        if ds.Modality == "DX":  # DX for presentation needs a VOI and identity rescale
            assert "WindowCenter" in ds or "VOILUTSequence" in ds
            assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk not installed")
def test_dcmtk_reads_the_files(tmp_path: Path) -> None:
    picked: dict[tuple[str, str], SynthImage] = {}
    for image in generate(SMALL):
        picked.setdefault((image.spec.modality, image.spec.compression), image)
    objects = [image.dataset for image in picked.values()] + [ds for _, ds in make_extra_objects(seed=1, size=64)]
    for n, ds in enumerate(objects):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(to_bytes(ds))
        result = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "E:" not in result.stderr and "W:" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("dcmdjpeg") is None, reason="dcmtk not installed")
def test_dcmtk_decodes_our_jpeg_lossless(tmp_path: Path) -> None:
    """An independent decoder (DCMTK's) agrees with the pixels our JPEG Lossless SV1 encoder wrote."""
    spec = dataclasses.replace(next(plan(SMALL)), compression=Compression.JPEG_LOSSLESS)
    source, decoded = tmp_path / "jl.dcm", tmp_path / "plain.dcm"
    source.write_bytes(to_bytes(make_image(spec).dataset))
    subprocess.run(["dcmdjpeg", str(source), str(decoded)], check=True, capture_output=True, timeout=30)
    plain = make_image(dataclasses.replace(spec, compression=Compression.NONE)).dataset
    np.testing.assert_array_equal(pydicom.dcmread(decoded).pixel_array, read(to_bytes(plain)).pixel_array)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    config = dataclasses.replace(SMALL, patients=2)
    first = [to_bytes(image.dataset) for image in generate(config)]
    second = [to_bytes(image.dataset) for image in generate(config)]
    assert first == second
    other = [to_bytes(image.dataset) for image in generate(dataclasses.replace(config, seed=12))]
    assert {read(b).SOPInstanceUID for b in other}.isdisjoint({read(b).SOPInstanceUID for b in first})


def test_monochrome1_stores_inverted_pixels() -> None:
    spec = next(plan(SMALL))
    m2 = make_image(dataclasses.replace(spec, photometric=Photometric.MONOCHROME2, compression=Compression.NONE))
    m1 = make_image(dataclasses.replace(spec, photometric=Photometric.MONOCHROME1, compression=Compression.NONE))
    raw1 = read(to_bytes(m1.dataset)).pixel_array.astype(np.int32)
    raw2 = read(to_bytes(m2.dataset)).pixel_array.astype(np.int32)
    np.testing.assert_array_equal(MAX_STORED - raw1, raw2)
    # a reader that forgets the inversion sees a negative: strongly anti-correlated with the truth
    assert np.corrcoef(raw1.ravel(), raw2.ravel())[0, 1] < -0.99
    # and the lungs (dark in MONOCHROME2) are *high* stored values in MONOCHROME1
    centre_lung = (slice(50, 70), slice(15, 30))
    assert raw2[centre_lung].mean() < raw2.mean() and raw1[centre_lung].mean() > raw1.mean()


@pytest.mark.parametrize("compression", available_compressions())
def test_compressed_decodes_to_the_uncompressed_pixels(compression: Compression) -> None:
    spec = next(plan(SMALL))
    for photometric in Photometric:
        plain = make_image(dataclasses.replace(spec, compression=Compression.NONE, photometric=photometric))
        packed = make_image(dataclasses.replace(spec, compression=compression, photometric=photometric))
        data = to_bytes(packed.dataset)
        assert len(data) < len(to_bytes(plain.dataset))
        ds = read(data)
        assert ds.file_meta.TransferSyntaxUID.is_compressed and ds.SOPInstanceUID == spec.sop_uid
        np.testing.assert_array_equal(ds.pixel_array, read(to_bytes(plain.dataset)).pixel_array)


def test_every_lossless_encoder_available_here() -> None:
    # pydicom 3 + pylibjpeg-rle + pyjpegls + pylibjpeg-openjpeg are installed; JPEG Lossless
    # (process 14) has no encoder in pydicom, so the generator brings its own.
    assert set(available_compressions()) == set(Compression) - {Compression.NONE}


def test_voi_window_and_lut_change_the_rendering() -> None:
    spec = next(plan(SMALL))
    window = make_image(dataclasses.replace(spec, voi=Voi.WINDOW, compression=Compression.NONE))
    lut = make_image(dataclasses.replace(spec, voi=Voi.LUT, compression=Compression.NONE))
    for image in (window, lut):
        ds = read(to_bytes(image.dataset))
        raw = ds.pixel_array
        shown = apply_voi_lut(raw, ds)
        assert not np.allclose(shown, raw)
    ds = read(to_bytes(window.dataset))
    low = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
    high = float(ds.WindowCenter) + float(ds.WindowWidth) / 2
    clipped = np.mean((ds.pixel_array < low) | (ds.pixel_array > high))
    assert 0.02 < clipped < 0.9, "a clipping window must actually clip part of the image"
    assert read(to_bytes(lut.dataset)).VOILUTSequence[0].LUTDescriptor[2] == 12


def test_rescale_only_on_cr_and_windows_in_output_units() -> None:
    config = SynthConfig(patients=30, seed=5, rows=32, columns=32, rescale_fraction=1.0)
    specs = list(plan(config))
    assert any(s.rescale != (1.0, 0.0) for s in specs), "some CR images must carry a non-identity rescale"
    assert all(s.modality == "CR" for s in specs if s.rescale != (1.0, 0.0))
    spec = dataclasses.replace(next(s for s in specs if s.modality == "CR"), voi=Voi.WINDOW, rescale=(2.0, -1024.0),
                               compression=Compression.NONE)
    ds = read(to_bytes(make_image(spec).dataset))
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1024.0)
    out = ds.pixel_array * 2.0 - 1024.0
    assert out.min() < float(ds.WindowCenter) < out.max()
    assert float(ds.WindowWidth) > 2 * 500  # in output units: twice the stored span


def test_prevalence_and_fractions_match_the_config() -> None:
    config = SynthConfig(patients=300, seed=3, rows=32, columns=32)
    specs = list(plan(config))  # the statistics come from the plan (cheap) ...
    for image in itertools.islice(generate(config), 40):  # ... which the encoded images follow
        spec = specs[image.spec.index]
        assert image.dataset.PhotometricInterpretation == spec.photometric and image.dataset.Modality == spec.modality
        assert image.dataset.file_meta.TransferSyntaxUID.is_compressed == (spec.compression != Compression.NONE)
        assert image.spec == spec
    n = len(specs)
    assert 350 < n < 800
    assert abs(sum(s.photometric == Photometric.MONOCHROME1 for s in specs) / n - 0.3) < 0.06
    assert abs(sum(s.compression != Compression.NONE for s in specs) / n - 0.2) < 0.04
    assert abs(sum(s.voi in (Voi.WINDOW, Voi.LUT) for s in specs) / n - 0.3) < 0.06
    assert {s.modality for s in specs} == {"DX", "CR"}
    counts = Counter(label for s in specs for label in s.findings)
    for label in CHEXPERT_LABELS:
        assert 0.02 * n <= counts[label] <= 0.5 * n, (label, counts[label])
    for spec in specs:  # No Finding exactly when nothing else
        assert (NO_FINDING in spec.findings) == (spec.findings == {NO_FINDING})
        assert spec.findings
    # co-occurrence: pneumonia mostly comes with lung opacity; edema mostly with cardiomegaly or effusion
    with_pneumonia = [s.findings for s in specs if Finding.PNEUMONIA in s.findings]
    assert sum(Finding.LUNG_OPACITY in f for f in with_pneumonia) / len(with_pneumonia) > 0.6
    with_edema = [s.findings for s in specs if Finding.EDEMA in s.findings]
    assert sum(Finding.CARDIOMEGALY in f or Finding.PLEURAL_EFFUSION in f for f in with_edema) / len(with_edema) > 0.6
    # patients -> studies -> series: several studies for some patients, one series per study
    studies_of = Counter(s.patient_id for s in specs if s.instance_number == 1)
    assert max(studies_of.values()) == 2 and min(studies_of.values()) == 1
    assert len({s.series_uid for s in specs}) == len({s.study_uid for s in specs}) == sum(studies_of.values())


def test_write_study_set_exports_ground_truth(tmp_path: Path) -> None:
    path = write_study_set(SMALL, tmp_path)
    records = load_ground_truth(path)
    document = json.loads(path.read_text())
    assert document["labels"] == list(CHEXPERT_LABELS) and document["config"]["seed"] == SMALL.seed
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == len(records)
    for record in records:
        ds = pydicom.dcmread(tmp_path / record["path"])
        assert ds.SOPInstanceUID == record["sop_uid"] and ds.PatientID == record["patient_id"]
        assert ds.file_meta.TransferSyntaxUID == record["transfer_syntax"]
        assert set(record["findings"]) == set(CHEXPERT_LABELS)
        assert set(record["regions"]) == {k for k, v in record["findings"].items() if v and k != NO_FINDING}
        assert record["path"].startswith(record["patient_id"] + "/")
    with (tmp_path / GROUND_TRUTH_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sop_uid"] for r in rows] == [r["sop_uid"] for r in records]
    for row, record in zip(rows, records, strict=True):
        assert {label: int(row[label]) for label in CHEXPERT_LABELS} == record["findings"]


def test_extra_objects_join_the_given_study() -> None:
    study = next(plan(SMALL))
    extras = make_extra_objects(seed=4, study_uid=study.study_uid, patient_id=study.patient_id, size=64)
    assert [kind for kind, _ in extras] == [str(k) for k in ExtraKind]
    for kind, ds in extras:
        back = read(to_bytes(ds))
        assert back.StudyInstanceUID == study.study_uid and back.PatientID == study.patient_id
        assert back.SOPInstanceUID != study.sop_uid
        if kind == ExtraKind.MULTIFRAME:
            assert back.pixel_array.shape == (3, 64, 64)
        if kind == ExtraKind.FOR_PROCESSING:
            assert back.PresentationIntentType == "FOR PROCESSING" and back.pixel_array.shape == (64, 64)
    assert [to_bytes(ds) for _, ds in extras] == [to_bytes(ds) for _, ds in make_extra_objects(
        seed=4, study_uid=study.study_uid, patient_id=study.patient_id, size=64)]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="monochrome1_fraction"):
        SynthConfig(monochrome1_fraction=1.5)
    with pytest.raises(ValueError, match="modalities"):
        SynthConfig(modalities=("MR",))
    with pytest.raises(ValueError, match="images_per_study"):
        SynthConfig(images_per_study=(2, 1))


def test_cli_writes_a_study_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlab_cli.main import main

    assert main(["synth", "--out", str(tmp_path), "--patients", "2", "--size", "64", "--seed", "9", "--extras"]) == 0
    assert "ground truth" in capsys.readouterr().out
    records = load_ground_truth(tmp_path / "ground_truth.json")
    assert records and all((tmp_path / r["path"]).exists() for r in records)
    assert len(list((tmp_path / "extras").glob("*.dcm"))) == len(ExtraKind)
