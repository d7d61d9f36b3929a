"""``dicomlab loop --seeds``/``--strategies``: the comparison over seeds with another uncertainty measure, and its summary."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from training_synth import SynthSet

from dicomlab_core.synth import GROUND_TRUTH_JSON


def fake_report(seed: int, values: dict[str, list[float | None]]) -> dict[str, Any]:
    results = {s: [{"round": i, "labelled": 10 * (i + 1), "macro_auroc": v, "positives": {"A": i + seed}}
                   for i, v in enumerate(vs)] for s, vs in values.items()}
    return {"rounds": 2, "budget": 10, "initial": 10, "labels": ["A"], "pool_images": 50, "heldout_images": 20,
            "readers": {}, "uncertainty": {}, "passes": 8, "seed": seed, "seconds": 1.5, "results": results}


def test_summary_statistics_and_paired_differences() -> None:
    from dicomlab_cli.loop_seeds import seeds_table, summarize

    reports = [fake_report(0, {"random": [0.5, 0.6, 0.7], "uncertainty-first": [0.5, 0.65, 0.68]}),
               fake_report(1, {"random": [0.55, 0.62, 0.66], "uncertainty-first": [0.55, 0.70, 0.74]}),
               fake_report(2, {"random": [0.52, 0.58, 0.69], "uncertainty-first": [0.52, None, 0.75]})]
    summary = summarize(reports)
    assert summary["seeds"] == [0, 1, 2] and summary["seconds"] == 4.5
    last = summary["results"]["uncertainty-first"][2]
    assert last["macro_auroc"]["mean"] == pytest.approx(statistics.fmean([0.68, 0.74, 0.75]), abs=1e-4)
    assert last["macro_auroc"]["sd"] == pytest.approx(statistics.stdev([0.68, 0.74, 0.75]), abs=1e-4)
    assert last["minus_random"]["mean"] == pytest.approx(statistics.fmean([-0.02, 0.08, 0.06]), abs=1e-4)
    assert last["ahead_of_random"] == 2
    # An undefined AUROC (None) is left out of the statistics, not counted as 0.
    middle = summary["results"]["uncertainty-first"][1]
    assert middle["macro_auroc"]["n"] == 2 and middle["minus_random"]["n"] == 2
    assert "minus_random" not in summary["results"]["random"][0]
    table = seeds_table(summary)
    assert "0.723 ± 0.038 (0.680–0.750)" in table and "(2/3 ahead)" in table


def test_loop_over_seeds_with_tta_end_to_end(small_set: SynthSet, tmp_path: Path) -> None:
    from dicomlab_cli.main import main

    out = tmp_path / "loop"
    args = ["loop", "--rounds", "1", "--budget", "4", "--dicom-dir", str(small_set.directory), "--truth",
            str(small_set.directory / GROUND_TRUTH_JSON), "--out", str(out), "--size", "32", "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--set", "model.arch=densenet-tiny",
            "--set", "warmup_steps=1", "--set", "threads=1", "--set", "eval_batch_size=16",
            "--strategies", "random,uncertainty-first/tta", "--passes", "3"]
    assert main([*args, "--seeds", "0,1"]) == 0
    summary = json.loads((out / "loop-seeds-report.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["results"]) == {"random", "uncertainty-first/tta"}
    assert summary["uncertainty"] == {"uncertainty-first/tta": "tta"}
    for seed in (0, 1):
        report = json.loads((out / f"seed-{seed}" / "loop-report.json").read_text())
        assert report["seed"] == seed
        rows = report["results"]["uncertainty-first/tta"]
        assert summary["results"]["uncertainty-first/tta"][1]["seeds"][seed] == rows[1]["macro_auroc"]
        # The TTA arm took the 4 pool images with the highest TTA disagreement of the round-0 model.
        folder = out / f"seed-{seed}" / "uncertainty-first-tta"
        predictions = [json.loads(x) for x in (folder / "round-0" / "pool-predictions.manifest").read_text()
                       .splitlines()]
        top = {x["sop-instance-uid"] for x in sorted(predictions, key=lambda x: -x["model-uncertainty"])[:4]}
        round1 = {json.loads(x)["sop-instance-uid"] for x in (folder / "round-1" / "labels.manifest").read_text()
                  .splitlines()}
        assert top <= round1 and len(round1) == 8
    # The two seeds held out different patients (the split is by seed).
    held = [(out / f"seed-{s}" / "heldout.manifest").read_text() for s in (0, 1)]
    assert held[0] != held[1]
    assert (out / "loop-seeds-auroc.png").stat().st_size > 5000
    assert "Paired difference to random" in (out / "loop-seeds-report.md").read_text()
    assert main([*args, "--seeds", "0,x"]) == 2
    assert main([*args[:-4], "--strategies", "random,uncertainty-first/bald", "--seeds", "0"]) == 2
