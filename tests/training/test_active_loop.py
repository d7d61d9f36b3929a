"""``dicomlab loop`` end to end on tiny data: train → predict → uncertainty-first/random job → simulated labels → retrain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training_synth import SynthSet

from dicomlab_core.synth import GROUND_TRUTH_JSON


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def labelled_uids(path: Path) -> set[str]:
    return {x["sop-instance-uid"] for x in read_jsonl(path)}


def test_loop_end_to_end_on_tiny_data(small_set: SynthSet, tmp_path: Path) -> None:
    from dicomlab_cli.main import main

    out = tmp_path / "loop"
    code = main(["loop", "--rounds", "2", "--budget", "5", "--dicom-dir", str(small_set.directory), "--truth",
                 str(small_set.directory / GROUND_TRUTH_JSON), "--out", str(out), "--size", "32", "--epochs", "1",
                 "--batch-size", "4", "--workers", "0", "--device", "cpu", "--set", "model.arch=densenet-tiny",
                 "--set", "warmup_steps=1", "--set", "threads=1", "--set", "eval_batch_size=16"])
    assert code == 0
    report = json.loads((out / "loop-report.json").read_text())
    results = report["results"]
    assert set(results) == {"uncertainty-first", "random"}
    for rows in results.values():
        assert [r["round"] for r in rows] == [0, 1, 2] and [r["labelled"] for r in rows] == [5, 10, 15]
    # Round 0 is the same initial set: trained once, shared.
    assert results["uncertainty-first"][0]["model"] == results["random"][0]["model"]
    heldout_patients = report["heldout_images"]
    assert heldout_patients > 0 and report["pool_images"] + heldout_patients == len(small_set.records)
    by_uid = {r["sop_uid"]: r for r in small_set.records}
    initial = labelled_uids(out / "uncertainty-first" / "round-0" / "labels.manifest")
    assert len(initial) == 5
    # Uncertainty-first took the 5 most uncertain pool images of the round-0 model's predictions.
    predictions = read_jsonl(out / "uncertainty-first" / "round-0" / "pool-predictions.manifest")
    top = {x["sop-instance-uid"] for x in sorted(predictions, key=lambda x: -x["model-uncertainty"])[:5]}
    round1 = labelled_uids(out / "uncertainty-first" / "round-1" / "labels.manifest")
    assert top <= round1 and len(round1) == 10 and initial <= round1
    # Random took 5 other pool images; nothing held out is ever labelled.
    random_round1 = labelled_uids(out / "random" / "round-1" / "labels.manifest")
    assert len(random_round1) == 10 and initial <= random_round1
    heldout = {x["sop-instance-uid"] for x in read_jsonl(out / "heldout.manifest")}
    for strategy in results:
        final = labelled_uids(out / strategy / "round-2" / "labels.manifest")
        assert len(final) == 15 and not final & heldout and all(u in by_uid for u in final)
    # The labels are the consolidated simulated readers' answers (three readers per image).
    line = read_jsonl(out / "random" / "round-2" / "labels.manifest")[0]
    assert len(line["readers"]["workers"]) == 3
    table = (out / "loop-report.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "uncertainty-first macro AUROC" in table[0]
    assert (out / "loop-auroc.png").stat().st_size > 5000
