"""The manifest tests' population and helpers (the fixtures are in conftest.py).

The population (~270 small instances, 8x8 pixels) covers what the selector must tell apart: DX/CR
chest and abdomen images, CT and MR images, SR, presentation states, multi-frame DX, encapsulated
PDF, a raw "for processing" DX (from :func:`dicomlab_core.synth.make_extra_objects`), one SOP
Instance UID stored twice under two patients, and a DX series hiding a non-image object.
Every uploaded object is recorded with what a test needs to compute the expected selection.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.config import Secret
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest.config import Config
from dicomlab_manifest.service import ManifestService

PATIENT_KEY_SECRET = "test-patient-key-secret"
STORAGE = "1.2.840.10008.5.1.4.1.1."
SOP_CLASSES = {"DX": STORAGE + "1.1", "CR": STORAGE + "1", "CT": STORAGE + "2", "MR": STORAGE + "4"}


@dataclass(frozen=True)
class Item:
    """One uploaded object and the facts the expected selections are computed from."""

    orthanc_id: str
    sop_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    modality: str
    study_date: str
    study_description: str
    series_description: str
    body_part: str
    kind: str  # image | sr | pr | multiframe | doc | for-processing | hidden-non-image


def tiny_dataset(*, patient_id: str, study_uid: str, series_uid: str, modality: str, number: int, study_date: str,
                 study_description: str, series_description: str, body_part: str, sop_class: str | None = None,
                 sop_uid: str | None = None, frames: int = 1, pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class or SOP_CLASSES[modality]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.PatientID, ds.PatientName = patient_id, f"Test^{patient_id}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.InstanceNumber, ds.StudyDate = modality, number, study_date
    ds.StudyDescription, ds.SeriesDescription, ds.BodyPartExamined = study_description, series_description, body_part
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 7, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = bytes(64 * frames)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def population_datasets() -> list[tuple[str, Dataset]]:
    """(kind, dataset) for the whole population, in upload order."""
    out: list[tuple[str, Dataset]] = []
    descriptions = ["CHEST PA AND LATERAL", "CHEST PORTABLE", "ABDOMEN SUPINE"]
    duplicate_of: Dataset | None = None
    for p in range(6):
        patient = f"PAT{p + 1:03d}"
        for s in range(2):
            study = generate_uid()
            date = f"{2023 + (p + s) % 3}{(p * 2 + s) % 12 + 1:02d}15"
            study_description = descriptions[(p + s) % 3]
            body = "ABDOMEN" if study_description.startswith("ABDOMEN") else "CHEST"
            common = {"patient_id": patient, "study_uid": study, "study_date": date,
                      "study_description": study_description, "body_part": body}

            def series(modality: str, description: str, count: int, kind: str = "image", start: int = 1,
                       common: dict[str, Any] = common, **extra: Any) -> None:
                uid = generate_uid()
                for n in range(start, start + count):
                    out.append((kind, tiny_dataset(series_uid=uid, modality=modality, number=n,
                                                   series_description=description, **common, **extra)))

            series("DX", "PA", 10)
            if p == 1 and s == 0:
                duplicate_of = out[-10][1]  # the first DX image of this study, stored again under PAT099
            if (p + s) % 4 == 0:
                dx_series = out[-1][1].SeriesInstanceUID
                out.append(("multiframe", tiny_dataset(series_uid=dx_series, modality="DX", number=11, frames=3,
                                                       series_description="PA", **common)))
            series("CR", "LATERAL", 6)
            if p % 3 == 0:
                series("CT", "AXIAL", 5)
            if p % 3 == 1:
                series("MR", "T1 SAG", 4)
            series("SR", "REPORT", 1, kind="sr", sop_class=STORAGE + "88.11", pixels=False)
            if s == 0:
                series("PR", "GSPS", 1, kind="pr", sop_class=STORAGE + "11.1", pixels=False)
            if p == 5 and s == 1:
                series("DOC", "PDF", 1, kind="doc", sop_class=STORAGE + "104.1", pixels=False)
            if p == 2 and s == 1:
                uid = generate_uid()
                out.append(("image", tiny_dataset(series_uid=uid, modality="DX", number=1, series_description="MIXED",
                                                  **common)))
                out.append(("hidden-non-image", tiny_dataset(series_uid=uid, modality="DX", number=2,
                                                             series_description="MIXED", sop_class=STORAGE + "66",
                                                             pixels=False, **common)))
            if p == 0 and s == 0:
                out.extend(_synth_extras(study, patient, common))
    assert duplicate_of is not None and duplicate_of.SeriesDescription == "PA"
    twin = tiny_dataset(patient_id="PAT099", study_uid=generate_uid(), series_uid=generate_uid(), modality="DX",
                        number=1, study_date="20240301", study_description="CHEST PA AND LATERAL",
                        series_description="PA", body_part="CHEST", sop_uid=str(duplicate_of.SOPInstanceUID))
    out.append(("image", twin))
    return out


def _synth_extras(study: str, patient: str, common: dict[str, Any]) -> list[tuple[str, Dataset]]:
    from dicomlab_core.synth import make_extra_objects

    kinds = {"sr": "sr", "presentation_state": "pr", "multiframe": "multiframe", "non_image": "doc",
             "for_processing": "for-processing"}
    result = []
    for kind, ds in make_extra_objects(seed=7, study_uid=study, patient_id=patient, size=16):
        ds.StudyDate, ds.StudyDescription = common["study_date"], common["study_description"]
        ds.BodyPartExamined = common["body_part"]
        result.append((kinds[kind], ds))
    return result


def upload(client: OrthancClient, datasets: list[tuple[str, Dataset]]) -> list[Item]:
    def one(entry: tuple[str, Dataset]) -> Item:
        kind, ds = entry
        answer = client.upload_instance(to_bytes(ds))
        return Item(answer["ID"], str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                    str(ds.PatientID), str(ds.Modality), str(ds.get("StudyDate", "")),
                    str(ds.get("StudyDescription", "")), str(ds.get("SeriesDescription", "")),
                    str(ds.get("BodyPartExamined", "")), kind)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, datasets))


@dataclass
class Population:
    server: OrthancServer
    items: list[Item]

    def select(self, predicate: Callable[[Item], bool] = lambda i: True, *,
               modalities: tuple[str, ...] = ("DX", "CR"), hidden: bool = True) -> set[str]:
        """SOP Instance UIDs a build should select (series-mode SOP check lets ``hidden`` objects through)."""
        kinds = {"image", "hidden-non-image"} if hidden else {"image"}
        return {i.sop_uid for i in self.items if i.kind in kinds and i.modality in modalities and predicate(i)}


def make_config(server: OrthancServer, tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "orthanc": server.settings(retries=0, read_timeout=10.0), "patient_key_secret": Secret(PATIENT_KEY_SECRET),
        "service_token": Secret("test-service-token"), "store_url": f"file://{tmp_path / 'store'}",
        "state_dir": tmp_path / "state", "page_size": 3, "changes_page_size": 50, "workers": 3,
    }
    values.update(overrides)
    return dataclasses.replace(Config(), **values)


def build(service: ManifestService, job: str = "job", **spec: Any) -> dict[str, Any]:
    """Parse, check and run one build synchronously; returns the summary."""
    parsed = service.parse(spec)
    service.precheck(parsed)
    return service.builder(parsed, service.config.state_dir / job).run()


def manifest_bytes(service: ManifestService, name: str) -> bytes:
    return service.manifests.store.get_bytes(service.manifests.keys(name).manifest)


def manifest_lines(service: ManifestService, name: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in manifest_bytes(service, name).splitlines()]


def sops(lines: list[dict[str, Any]]) -> list[str]:
    return [line["sop-instance-uid"] for line in lines]
