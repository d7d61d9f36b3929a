"""``dicomlab train predict``: output format, skip reasons, resume, bundles, and uncertainty-first from a real run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_synth import SynthSet

from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_training import predict as predict_module
from dicomlab_training.config import ModelConfig
from dicomlab_training.model import build_model
from dicomlab_training.pixels import decode
from dicomlab_training.predict import PredictOptions, run_predict, uncertainty

LABELS = tuple(CHEXPERT_LABELS)


def make_run(folder: Path, seed: int = 0) -> Path:
    """A run folder as ``train run`` leaves it (models/best.pt + report.json), with a random tiny model."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS))
    (folder / "models").mkdir(parents=True)
    torch.save(model.state_dict(), folder / "models" / "best.pt")
    report = {"run": folder.name, "labels": list(LABELS),
              "config": {"pixels": {"size": 32, "cache_dtype": "uint8"}, "model": {"arch": "densenet-tiny"}}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder / "models" / "best.pt"


def input_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"source": r["sop_uid"], "sop-instance-uid": r["sop_uid"], "study-uid": r["study_uid"],
             "series-uid": r["series_uid"], "note": f"keep-{i}"} for i, r in enumerate(records)]


@pytest.fixture
def data(small_set: SynthSet, tmp_path: Path) -> dict[str, Any]:
    """A copy of the small set plus one broken file, and an input manifest with good and bad lines."""
    folder = tmp_path / "dicom"
    shutil.copytree(small_set.directory, folder)
    (folder / "9.9.9.9.dcm").write_bytes(b"this is not a DICOM file" * 10)
    good = input_lines(small_set.records[:12])
    text = [json.dumps(x) for x in good[:5]]
    text.append("{not json")  # line 6
    text += [json.dumps(x) for x in good[5:9]]
    text.append(json.dumps({"labels": "Edema"}))  # line 11: no source
    text.append(json.dumps({"source": "1.2.3.404", "sop-instance-uid": "1.2.3.404"}))  # line 12: no such file
    text.append(json.dumps({"source": "9.9.9.9", "sop-instance-uid": "9.9.9.9"}))  # line 13: not DICOM
    text += [json.dumps(x) for x in good[9:]]
    manifest = tmp_path / "pool.manifest"
    manifest.write_text("\n".join(text) + "\n\n")
    return {"folder": folder, "manifest": manifest, "good": good, "model": make_run(tmp_path / "run-a"),
            "records": small_set.records[:12]}


def config_for(data: dict[str, Any], tmp_path: Path) -> Any:
    from dicomlab_training import load_train_config

    return load_train_config(overrides={"dicom_dir": str(data["folder"]), "cache_dir": str(tmp_path / "cache"),
                                        "device": "cpu", "fetch_concurrency": 2}, environ={})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_output_format_skips_and_values(data: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "predictions" / "pool.manifest"
    result = run_predict(config_for(data, tmp_path),
                         PredictOptions(model=str(data["model"]), manifest=str(data["manifest"]), out=str(out),
                                        batch_size=4, chunk=5))
    lines = read_jsonl(out)
    assert result.lines == 16 and result.predicted == 12 == len(lines)
    digest = hashlib.sha256(data["model"].read_bytes()).hexdigest()[:12]
    for line, expected in zip(lines, data["good"], strict=True):
        assert {k: line[k] for k in expected} == expected  # input keys unchanged, in input order
        probs = line["model-predictions"]
        assert list(probs) == list(LABELS) and all(0.0 <= p <= 1.0 for p in probs.values())
        assert line["model-uncertainty"] == pytest.approx(float(uncertainty(np.array(list(probs.values())))),
                                                          abs=1e-5)
        assert line["model-version"] == f"run-a@sha256:{digest}"
    skipped = read_jsonl(Path(str(out) + ".skipped.jsonl"))
    assert [(s["line"], s["reason"]) for s in skipped] == [(6, "bad_manifest_line"), (11, "bad_manifest_line"),
                                                           (12, "not_found"), (13, "not_dicom")]
    assert result.skipped == {"bad_manifest_line": 2, "not_found": 1, "not_dicom": 1}
    assert not Path(str(out) + ".parts").exists()
    # The probabilities are the model's on the pixel pipeline's image (quantized like the cache).
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS)).eval()
    record = data["records"][3]
    image = decode((data["folder"] / record["path"]).read_bytes(), 32).pixels
    x = torch.from_numpy(np.rint(image * 255.0) / 255.0).float()[None, None]
    with torch.no_grad():
        expected_p = torch.sigmoid(model(x))[0].numpy()
    got = np.array(list(lines[3]["model-predictions"].values()))
    assert np.abs(got - expected_p).max() < 1e-5


def test_resume_after_an_interruption_gives_the_same_output(data: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(data, tmp_path)
    reference = tmp_path / "ref.manifest"
    run_predict(config, PredictOptions(model=str(data["model"]), manifest=str(data["manifest"]), out=str(reference),
                                       chunk=4))
    original = predict_module._predict_chunk
    calls: list[int] = []

    def failing(chunk: Any, *args: Any) -> Any:
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies in the third chunk
        return original(chunk, *args)

    monkeypatch.setattr(predict_module, "_predict_chunk", failing)
    out = tmp_path / "resumed.manifest"
    options = PredictOptions(model=str(data["model"]), manifest=str(data["manifest"]), out=str(out), chunk=4)
    with pytest.raises(KeyboardInterrupt):
        run_predict(config, options)
    assert not out.exists() and len(list(Path(str(out) + ".parts").iterdir())) == 2
    calls.clear()
    result = run_predict(config, options)
    assert result.resumed == 8 and sum(calls) == 16 - 8  # only the lines not done yet
    assert out.read_text() == reference.read_text()
    assert Path(str(out) + ".skipped.jsonl").read_text() == Path(str(reference) + ".skipped.jsonl").read_text()


def test_parts_of_another_model_are_refused(data: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(data, tmp_path)
    out = tmp_path / "mixed.manifest"
    original = predict_module._predict_chunk

    def once(chunk: Any, *args: Any) -> Any:
        monkeypatch.setattr(predict_module, "_predict_chunk", _raise)
        return original(chunk, *args)

    monkeypatch.setattr(predict_module, "_predict_chunk", once)
    with pytest.raises(KeyboardInterrupt):
        run_predict(config, PredictOptions(model=str(data["model"]), manifest=str(data["manifest"]), out=str(out),
                                           chunk=4))
    other = make_run(tmp_path / "run-b", seed=1)
    with pytest.raises(BadRequest, match="another model"):
        run_predict(config, PredictOptions(model=str(other), manifest=str(data["manifest"]), out=str(out)))
    edited = tmp_path / "edited.manifest"
    text = data["manifest"].read_text().splitlines()
    text[1] = text[1].replace("keep-1", "changed")
    edited.write_text("\n".join(text) + "\n")
    with pytest.raises(BadRequest, match="another input"):
        run_predict(config, PredictOptions(model=str(data["model"]), manifest=str(edited), out=str(out)))


def _raise(*args: Any) -> Any:
    raise KeyboardInterrupt


def test_bundle_and_limit_and_cli_errors(data: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlab_cli.main import main
    from dicomlab_core.objectstore import open_store
    from dicomlab_training import load_train_config
    from dicomlab_training.export import export_bundle

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="densenet-tiny"), len(LABELS))
    export_config = load_train_config(overrides={"pixels.size": 32, "model.arch": "densenet-tiny",
                                                 "run_name": "run-a"}, environ={})
    bundle = export_bundle(model, export_config, LABELS, open_store(str(tmp_path / "export")), {"run": "run-a"})
    common = ["--manifest", str(data["manifest"]), "--dicom-dir", str(data["folder"]), "--cache-dir",
              str(tmp_path / "cache"), "--device", "cpu"]
    assert main(["train", "predict", "--model", str(data["model"]), "--out", str(tmp_path / "a.manifest"),
                 "--limit", "7", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lines"] == 7 and summary["predicted"] == 6 and summary["uncertainty"] == "mean-binary-entropy"
    assert main(["train", "predict", "--model", bundle, "--out", str(tmp_path / "b.manifest"), "--limit", "7",
                 "--batch-size", "3", *common]) == 0
    capsys.readouterr()
    from_file = read_jsonl(tmp_path / "a.manifest")
    from_bundle = read_jsonl(tmp_path / "b.manifest")
    for a, b in zip(from_file, from_bundle, strict=True):
        assert a["model-version"].split("@")[1] != "" and a["model-uncertainty"] == pytest.approx(
            b["model-uncertainty"], abs=1e-5)
        assert np.allclose(list(a["model-predictions"].values()), list(b["model-predictions"].values()), atol=1e-5)
    assert main(["train", "predict", "--model", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "c"),
                 *common]) == 2
    assert "no model file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    assert main(["train", "predict", "--model", str(garbage), "--labels", "Edema", "--out", str(tmp_path / "c"),
                 *common]) == 2
    assert "not a PyTorch state dict" in capsys.readouterr().err
    assert main(["train", "predict", "--model", str(data["model"]), "--out", str(tmp_path / "c"),
                 "--manifest", str(tmp_path / "missing.manifest"), "--dicom-dir", str(data["folder"])]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_uncertainty_measure_bounds() -> None:
    assert uncertainty(np.array([[0.5, 0.5], [0.0, 1.0]])).tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    assert 0 < float(uncertainty(np.array([0.9, 0.1]))) < float(uncertainty(np.array([0.6, 0.4]))) < 1


def test_uncertainty_first_orders_a_job_from_a_real_predict_run(data: dict[str, Any], tmp_path: Path) -> None:
    """A labeling job created from the predictions manifest hands out the most uncertain image first."""
    from sqlalchemy import select

    from dicomlab_labeling.workflow.db import Database
    from dicomlab_labeling.workflow.jobs import create_job
    from dicomlab_labeling.workflow.migrate import upgrade
    from dicomlab_labeling.workflow.models import Job, User
    from dicomlab_labeling.workflow.queue import Queue

    store_root = tmp_path / "store"
    out = store_root / "predictions" / "pool.manifest"
    run_predict(config_for(data, tmp_path), PredictOptions(model=str(data["model"]), manifest=str(data["manifest"]),
                                                           out=str(out)))
    lines = read_jsonl(out)
    by_uncertainty = [x["sop-instance-uid"] for x in sorted(lines, key=lambda x: -x["model-uncertainty"])]
    assert len(set(x["model-uncertainty"] for x in lines)) == len(lines)  # a strict order exists
    from dicomlab_core.objectstore import open_store

    db = Database(f"sqlite:///{tmp_path / 'labeling.db'}")
    upgrade(db)
    with db.session() as session:
        job = create_job(session, name="al-round-1", manifest_uri="predictions/pool.manifest",
                         store=open_store(str(store_root)), orthanc=None, default_labels=LABELS,
                         readers_per_image=1, strategy="uncertainty-first")
        session.add(User(username="reader1"))
    queue = Queue(postgres=False)
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        user = session.scalars(select(User)).one()
        held = queue.next_assignments(session, job, user, lookahead=len(lines) - 1)
        order = [a.task.sop_instance_uid for a in held]
    assert order == by_uncertainty
    db.dispose()
