"""``dicomlab train predict --uncertainty entropy|mc-dropout|tta``: scores, output lines, resume and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_synth import SynthSet

from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_training.config import ModelConfig
from dicomlab_training.model import build_model
from dicomlab_training.pixels import decode
from dicomlab_training.predict import PredictOptions, run_predict
from dicomlab_training.uncertainty import (
    UncertaintyOptions,
    binary_entropy,
    inference_dropout,
    mutual_information,
    tta_offsets,
)

LABELS = tuple(CHEXPERT_LABELS)


@pytest.fixture
def setup(small_set: SynthSet, tmp_path: Path) -> dict[str, Any]:
    """A random tiny model saved as a run folder and an input manifest of 8 images."""
    from dicomlab_training import load_train_config

    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS))
    run = tmp_path / "run-u"
    (run / "models").mkdir(parents=True)
    torch.save(model.state_dict(), run / "models" / "best.pt")
    (run / "report.json").write_text(json.dumps({"run": "run-u", "labels": list(LABELS), "config": {
        "pixels": {"size": 32, "cache_dtype": "uint8"}, "model": {"arch": "densenet-tiny"}}}))
    records = small_set.records[:8]
    manifest = tmp_path / "pool.manifest"
    manifest.write_text("".join(json.dumps({"source": r["sop_uid"], "sop-instance-uid": r["sop_uid"]}) + "\n"
                                for r in records))
    config = load_train_config(overrides={"dicom_dir": str(small_set.directory), "cache_dir": str(tmp_path / "cache"),
                                          "device": "cpu"}, environ={})
    return {"model": run / "models" / "best.pt", "manifest": manifest, "config": config, "records": records,
            "folder": small_set.directory}


def predict(setup: dict[str, Any], out: Path, measure: UncertaintyOptions, chunk: int = 512) -> list[dict[str, Any]]:
    run_predict(setup["config"], PredictOptions(model=str(setup["model"]), manifest=str(setup["manifest"]),
                                                out=str(out), batch_size=3, chunk=chunk, uncertainty=measure))
    return [json.loads(x) for x in out.read_text().splitlines()]


def pixels(setup: dict[str, Any], record: dict[str, Any]) -> torch.Tensor:
    image = decode((setup["folder"] / record["path"]).read_bytes(), 32).pixels
    return torch.from_numpy(np.rint(image * 255.0) / 255.0).float()[None, None]  # quantized like the cache


def test_mutual_information_is_disagreement_and_bounded() -> None:
    same = np.full((5, 3, 4), 0.5)  # maximal entropy, but every pass agrees
    assert mutual_information(same).tolist() == pytest.approx([0.0] * 3, abs=1e-9)
    split = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])  # passes certain and opposite: one bit per label
    assert mutual_information(split).tolist() == pytest.approx([1.0], abs=1e-6)
    mild = np.array([[[0.4]], [[0.6]]])
    assert 0.0 < float(mutual_information(mild)[0]) < float(binary_entropy(0.5)) - float(binary_entropy(0.4)) + 1e-9
    offsets = tta_offsets(12, 32, 0.04)
    assert offsets[0] == (0, 0) and len(set(offsets)) == 12 and max(max(abs(a), abs(b)) for a, b in offsets) <= 2


def test_options_are_checked(setup: dict[str, Any], tmp_path: Path) -> None:
    for bad in (UncertaintyOptions(measure="bald"), UncertaintyOptions(measure="tta", passes=1),
                UncertaintyOptions(measure="mc-dropout", dropout=1.0)):
        with pytest.raises(BadRequest):
            predict(setup, tmp_path / "bad.manifest", bad)


def test_mc_dropout_output_lines_are_seeded_and_disagree(setup: dict[str, Any], tmp_path: Path) -> None:
    measure = UncertaintyOptions(measure="mc-dropout", passes=6, dropout=0.3, seed=5)
    lines = predict(setup, tmp_path / "mc.manifest", measure)
    plain = predict(setup, tmp_path / "plain.manifest", UncertaintyOptions())
    assert [x["sop-instance-uid"] for x in lines] == [r["sop_uid"] for r in setup["records"]]
    for line, base in zip(lines, plain, strict=True):
        assert list(line["model-predictions"]) == list(LABELS) and line["model-version"] == base["model-version"]
        assert 0.0 < line["model-uncertainty"] <= 1.0
    # Averaging dropout passes moves the probabilities away from the deterministic ones.
    assert any(line["model-predictions"] != base["model-predictions"] for line, base in zip(lines, plain, strict=True))
    # Same seed, same numbers (the dropout masks are seeded); another seed, other numbers.
    again = predict(setup, tmp_path / "mc-again.manifest", measure)
    assert again == lines
    other = predict(setup, tmp_path / "mc-other.manifest", UncertaintyOptions("mc-dropout", 6, 0.3, seed=6))
    assert [x["model-uncertainty"] for x in other] != [x["model-uncertainty"] for x in lines]
    # Dropout goes on every dense layer of the net, and only while the block runs.
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS)).eval()
    x = pixels(setup, setup["records"][0])
    with torch.no_grad():
        before = model(x)
        with inference_dropout(model, 0.5) as hooked:
            noisy = model(x)
        after = model(x)
    assert hooked == 8  # densenet-tiny: 4 blocks of 2 dense layers
    assert torch.equal(before, after) and not torch.allclose(before, noisy)


def test_tta_scores_are_the_disagreement_of_shifted_views(setup: dict[str, Any], tmp_path: Path) -> None:
    measure = UncertaintyOptions(measure="tta", passes=5, shift=0.1)
    lines = predict(setup, tmp_path / "tta.manifest", measure, chunk=3)
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS))
    model.load_state_dict(torch.load(setup["model"], weights_only=True))
    model.eval()
    # Recompute independently: shift the image with numpy (edge replicated), run each view, take BALD.
    for line, record in zip(lines, setup["records"], strict=True):
        image = pixels(setup, record)[0, 0].numpy()
        views = []
        for dy, dx in [(0, 0), (0, 3), (0, -3), (3, 0), (-3, 0)]:
            padded = np.pad(image, ((3, 3), (3, 3)), mode="edge")
            views.append(padded[3 - dy:3 - dy + 32, 3 - dx:3 - dx + 32])
        with torch.no_grad():
            probs = torch.sigmoid(model(torch.from_numpy(np.stack(views)).float()[:, None])).numpy()
        expected = float(mutual_information(probs[:, None, :])[0])
        assert line["model-uncertainty"] == pytest.approx(expected, abs=2e-5)
        got = np.array(list(line["model-predictions"].values()))
        assert np.abs(got - probs.mean(axis=0)).max() < 1e-5


def test_resume_refuses_parts_of_another_measure(setup: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomlab_training import uncertainty as module

    out = tmp_path / "resume.manifest"
    calls = {"n": 0}
    real = module.score

    def fail_second_chunk(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("dicomlab_training.predict.score", fail_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict(setup, out, UncertaintyOptions("tta", passes=3), chunk=4)
    monkeypatch.setattr("dicomlab_training.predict.score", real)
    with pytest.raises(BadRequest, match="another model"):
        predict(setup, out, UncertaintyOptions("mc-dropout", passes=3), chunk=4)
    resumed = predict(setup, out, UncertaintyOptions("tta", passes=3), chunk=4)
    fresh = predict(setup, tmp_path / "fresh.manifest", UncertaintyOptions("tta", passes=3), chunk=4)
    assert resumed == fresh


def test_cli_options(setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlab_cli.main import main

    out = tmp_path / "cli.manifest"
    base = ["train", "predict", "--model", str(setup["model"]), "--manifest", str(setup["manifest"]), "--out", str(out),
            "--dicom-dir", str(setup["folder"]), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main([*base, "--uncertainty", "tta", "--passes", "1"]) == 2
    assert "--passes must be at least 2" in capsys.readouterr().err
    assert main([*base, "--uncertainty", "mc-dropout", "--passes", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["uncertainty"] == "mc-dropout-mutual-information" and result["passes"] == 3
    assert result["predicted"] == 8
