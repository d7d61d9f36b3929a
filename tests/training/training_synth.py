"""Synthetic study sets with an output manifest made from their truth (helpers for the training tests)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomlab_core.groundtruth import dump_line, output_manifest_line
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.synth import SynthConfig, load_ground_truth, write_study_set


@dataclass(frozen=True)
class SynthSet:
    directory: Path
    manifest: Path
    records: list[dict[str, Any]]


def write_manifest(records: Sequence[dict[str, Any]], path: Path, *, shuffle_seed: int | None = None,
                   uncertain: float = 0.0, seed: int = 0) -> Path:
    """An output manifest (our consolidated shape) with the synthetic truth as labels.

    ``shuffle_seed`` permutes the label vectors between images (a control that destroys the signal);
    ``uncertain`` marks that fraction of findings uncertain (masked in training).
    """
    findings = [r["findings"] for r in records]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(findings)
    rng = random.Random(seed)
    lines = []
    for record, truth in zip(records, findings, strict=True):
        content = {"findings": {label: {"value": "uncertain" if rng.random() < uncertain
                                        else "present" if truth[label] else "absent", "confidence": 1.0}
                                for label in CHEXPERT_LABELS},
                   "method": "synthetic-truth"}
        base = {"source": record.get("orthanc_id", record["sop_uid"]), "labels": ",".join(CHEXPERT_LABELS),
                "study-uid": record["study_uid"], "series-uid": record["series_uid"],
                "sop-instance-uid": record["sop_uid"]}
        lines.append(dump_line(output_manifest_line(base, "chest-xray", content, job_name="synthetic")))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_set(directory: Path, **config: Any) -> SynthSet:
    truth = write_study_set(SynthConfig(**config), directory)
    records = load_ground_truth(truth)
    return SynthSet(directory, write_manifest(records, directory.parent / f"{directory.name}.manifest"), records)
