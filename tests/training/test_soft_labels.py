"""Soft labels (#16 §5): the export's Dawid–Skene posteriors become training targets, and training on them runs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_synth import SynthSet

from dicomlab_core.groundtruth import LabeledObject, dump_line, output_manifest_line, read_output_manifest
from dicomlab_core.labels import CHEXPERT_LABELS, NO_FINDING
from dicomlab_labeling.config import ConsolidationMethod, ConsolidationSettings
from dicomlab_labeling.consensus import dawid_skene
from dicomlab_labeling.consensus.consolidation import collect, consolidate
from dicomlab_labeling.workflow.simulate import noisy_answer
from dicomlab_training import load_train_config, run
from dicomlab_training.data import prepare
from dicomlab_training.manifest import build_table, soft_target

READERS = (("good", 0.95), ("fair", 0.85), ("unreliable", 0.6))


def test_soft_targets_from_value_and_confidence() -> None:
    obj = LabeledObject(source="a", labels=("A", "B", "C", "D"), values={"A": 1.0, "B": 0.0, "C": None, "D": 1.0},
                        sop_uid="1.2", confidence={"A": 0.8, "B": 0.9, "C": 0.7})
    soft = build_table([obj], soft=True)
    hard = build_table([obj])
    assert soft.targets[0].tolist() == pytest.approx([0.8, 0.1, 0.0, 1.0])
    assert soft.mask[0].tolist() == hard.mask[0].tolist() == [1.0, 1.0, 0.0, 1.0]  # uncertain stays masked
    assert hard.targets[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert soft_target(0.0, None) == 0.0 and soft_target(1.0, 1.5) == 1.0  # missing / invalid → hard


def noisy_export(records: list[dict[str, Any]], seed: int = 0) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Three simulated readers per image → Dawid–Skene consolidation → output manifest lines."""
    rng = random.Random(seed)
    labels = list(CHEXPERT_LABELS)
    raw = [[(name, {"findings": noisy_answer(r["findings"], labels, accuracy, rng)}) for name, accuracy in READERS]
           for r in records]
    items = [collect(r["sop_uid"], answers, labels) for r, answers in zip(records, raw, strict=True)]
    result = consolidate(items, labels, ConsolidationSettings(method=ConsolidationMethod.DAWID_SKENE))
    lines = []
    for record, label in zip(records, result.labels, strict=True):
        base = {"source": record["sop_uid"], "sop-instance-uid": record["sop_uid"], "study-uid": record["study_uid"],
                "series-uid": record["series_uid"]}
        lines.append(dump_line(output_manifest_line(base, "readers", label, job_name="soft")))
    return lines, raw


def test_soft_targets_are_the_dawid_skene_posteriors(small_set: SynthSet) -> None:
    records = small_set.records
    lines, raw = noisy_export(records)
    table = build_table(list(read_output_manifest(lines)), soft=True)
    reader_index = {name: i for i, (name, _) in enumerate(READERS)}
    checked = 0
    for j, label in enumerate(table.labels):
        if label == NO_FINDING:
            continue  # the No Finding conflict rule may override the model's value
        objects, readers, states = [], [], []
        for o, answers in enumerate(raw):
            for name, answer in answers:
                value = answer["findings"][label]
                if value in ("present", "absent"):
                    objects.append(o)
                    readers.append(reader_index[name])
                    states.append(1 if value == "present" else 0)
        fit = dawid_skene.fit(np.array(objects, dtype=np.intp), np.array(readers, dtype=np.intp),
                              np.array(states, dtype=np.int8), n_objects=len(raw), n_readers=len(READERS))
        known = table.mask[:, j] > 0
        assert np.abs(table.targets[known, j] - fit.posterior[known]).max() < 1e-3
        checked += int(known.sum())
    assert checked > len(records) * 5
    soft_values = table.targets[table.mask > 0]
    assert ((soft_values > 0.001) & (soft_values < 0.999)).any()  # really soft somewhere, not just 0/1


def test_soft_label_training_runs_and_reports_intervals(small_set: SynthSet, tmp_path: Path) -> None:
    lines, _ = noisy_export(small_set.records, seed=1)
    manifest = tmp_path / "soft.manifest"
    manifest.write_text("\n".join(lines) + "\n")
    settings = {"manifest": str(manifest), "dicom_dir": str(small_set.directory), "out": str(tmp_path / "run"),
                "cache_dir": str(tmp_path / "cache"), "pixels.size": 32, "model.arch": "densenet-tiny", "epochs": 1,
                "batch_size": 4, "eval_batch_size": 16, "warmup_steps": 1, "num_workers": 0, "threads": 1,
                "export": False, "seed": 7, "val_fraction": 0.2, "test_fraction": 0.3, "soft_labels": True}
    config = load_train_config(overrides=settings, environ={})
    data = prepare(config)
    expected = build_table(list(read_output_manifest(lines)), soft=True)
    assert np.array_equal(data.table.targets, expected.targets)
    assert config.digest() != load_train_config(overrides={**settings, "soft_labels": False}, environ={}).digest()
    result = run(config)
    assert np.isfinite(result.history[0]["train_loss"])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["config"]["soft_labels"] is True and "bootstrap" in report["test"]
    defined = [v for v in report["test"]["per_label"].values() if v["auroc"] is not None]
    assert defined and all("auroc_ci95" in v and v["ece"] is not None for v in defined)
    assert (tmp_path / "run" / "plots" / "auroc_ci.png").stat().st_size > 5000
    assert "95% CI" in (tmp_path / "run" / "model-card.md").read_text()
