"""Generating whole study sets: lazily in memory, as files with ground truth, or into Orthanc.

Ground truth is written as ``ground_truth.json`` (``{"generator", "config", "labels", "images"}``,
one record per image from :meth:`SynthImage.truth_record` plus its relative ``path``) and
``ground_truth.csv`` (one row per image, one 0/1 column per CheXpert label). Uploads render and
send with a bounded number of threads and a bounded number of images in flight, so memory stays
flat however large the set is.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.orthanc import OrthancClient

from .dicom import SynthImage, make_image, to_bytes
from .plan import SynthConfig, plan

logger = logging.getLogger(__name__)

GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_CSV = "ground_truth.csv"
GENERATOR = "dicomlab-synth-1"
CSV_COLUMNS = ("path", "patient_id", "study_uid", "series_uid", "sop_uid", "modality", "view", "photometric",
               "transfer_syntax", "voi", "rows", "columns")


def generate(config: SynthConfig) -> Iterator[SynthImage]:
    """Every image of the config, rendered one at a time (bounded memory)."""
    for spec in plan(config):
        yield make_image(spec)


def relative_path(image: SynthImage) -> str:
    """Where an image goes under a study-set folder: patient/study/series/instance.dcm."""
    spec = image.spec
    return (f"{spec.patient_id}/{spec.study_date}-{spec.study_uid.rsplit('.', 1)[-1][:12]}/"
            f"{spec.series_number:03d}-{spec.modality}/{spec.instance_number:04d}.dcm")


def write_ground_truth(config: SynthConfig, records: list[dict[str, Any]], directory: Path) -> Path:
    """Write ground_truth.json and ground_truth.csv under ``directory``; return the JSON path."""
    json_path = directory / GROUND_TRUTH_JSON
    document = {"generator": GENERATOR, "config": dataclasses.asdict(config), "labels": list(CHEXPERT_LABELS),
                "images": records}
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=1))
    tmp.replace(json_path)
    extra = ["orthanc_id"] if any("orthanc_id" in r for r in records) else []
    with (directory / GROUND_TRUTH_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, *extra, *CHEXPERT_LABELS])
        for record in records:
            writer.writerow([*(record.get(c, "") for c in (*CSV_COLUMNS, *extra)),
                             *(record["findings"][label] for label in CHEXPERT_LABELS)])
    return json_path


def load_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The image records of a ground_truth.json written by :func:`write_study_set`."""
    document = json.loads(Path(path).read_text())
    images: list[dict[str, Any]] = document["images"]
    return images


def write_study_set(config: SynthConfig, directory: Path,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write every image as a .dcm file (patient/study/series folders) plus the ground truth."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    total = sum(1 for _ in plan(config))
    records = []
    for done, image in enumerate(generate(config), start=1):
        rel = relative_path(image)
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(to_bytes(image.dataset))
        records.append({**image.truth_record(), "path": rel})
        if progress:
            progress(done, total)
    path = write_ground_truth(config, records, directory)
    logger.info("wrote synthetic study set", extra={"images": len(records), "directory": str(directory)})
    return path


def upload_study_set(config: SynthConfig, client: OrthancClient, workers: int = 4,
                     progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Render and upload every image to Orthanc (``POST /instances``) with ``workers`` threads.

    Returns the truth records in plan order, each with ``orthanc_id`` (Orthanc's instance ID).
    At most ``2 * workers`` images are rendered but not yet uploaded at any time.
    """
    specs = list(plan(config))
    total = len(specs)
    records: list[dict[str, Any] | None] = [None] * total
    lock = threading.Lock()
    done = 0

    def one(position: int) -> None:
        nonlocal done
        image = make_image(specs[position])
        answer = client.upload_instance(to_bytes(image.dataset))
        records[position] = {**image.truth_record(), "orthanc_id": str(answer["ID"])}
        with lock:
            done += 1
            if progress:
                progress(done, total)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="synth-upload") as pool:
        pending: set[Future[None]] = set()
        for position in range(total):
            if len(pending) >= 2 * max(1, workers):
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
            pending.add(pool.submit(one, position))
        for future in pending:
            future.result()
    logger.info("uploaded synthetic study set", extra={"images": total})
    return [r for r in records if r is not None]
