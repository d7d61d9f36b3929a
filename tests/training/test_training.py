"""Real training runs on synthetic data (CPU): learning, kill/resume equivalence, DDP equivalence, exports."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_synth import SynthSet, write_manifest

from dicomlab_core.objectstore import open_store
from dicomlab_training import load_train_config, run
from dicomlab_training.runner import RunResult

VISIBLE = ("Cardiomegaly", "Pleural Effusion", "Support Devices")
"""Findings the synthetic generator draws clearly (heart size, blunted angles, lines and tubes)."""

RESUME_ATOL = 1e-6
"""Kill/resume: largest accepted |difference| of any weight (observed: 0, the runs are bitwise equal)."""
DDP_ATOL = 1e-5
"""DDP vs one process: largest accepted |difference| of any parameter (float summation order differs)."""


def small_overrides(data: SynthSet, out: Path, cache: Path, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "manifest": str(data.manifest), "dicom_dir": str(data.directory), "out": str(out), "cache_dir": str(cache),
        "pixels.size": 32, "model.arch": "densenet-tiny", "epochs": 2, "batch_size": 4, "eval_batch_size": 16,
        "lr": 0.003, "warmup_steps": 2, "num_workers": 0, "threads": 1, "checkpoint_every_steps": 3,
        "export": False, "seed": 7, "val_fraction": 0.2, "test_fraction": 0.2,
    }
    settings.update(extra)
    return settings


def cli_args(settings: dict[str, Any]) -> list[str]:
    args = [sys.executable, "-m", "dicomlab_training", "run"]
    for key, value in settings.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return args


def weights(uri: str) -> dict[str, torch.Tensor]:
    store_url, _, key = uri.rpartition("/models/")
    state: dict[str, torch.Tensor] = torch.load(io.BytesIO(open_store(store_url).get_bytes(f"models/{key}")),
                                                weights_only=True)
    return state


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], params_only: bool = False) -> float:
    assert a.keys() == b.keys()
    keys = [k for k in a if not params_only or ("running" not in k and "num_batches" not in k)]
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys if a[k].numel())


def checkpoint_step(path: Path) -> int:
    try:
        payload = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return -1
    return int(payload["global_step"])


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DICOMLAB_LOG_LEVEL": "WARNING"}


def test_learns_visible_findings_and_a_shuffled_control_does_not(learning_set: SynthSet, tmp_path: Path) -> None:
    base = {"manifest": str(learning_set.manifest), "dicom_dir": str(learning_set.directory),
            "cache_dir": str(tmp_path / "cache"), "pixels.size": 64, "model.arch": "densenet-tiny", "epochs": 6,
            "batch_size": 8, "lr": 0.01, "warmup_steps": 5, "num_workers": 0, "threads": 1, "export": False,
            "val_fraction": 0.2, "test_fraction": 0.25, "seed": 3, "labels": ",".join(VISIBLE),
            # a regularizer slows a 10-epoch run on 200 images; augmentation has its own tests
            "augment.enabled": False}
    result = run(load_train_config(overrides={**base, "out": str(tmp_path / "real")}, environ={}))
    learned = [result.per_label_auroc[label] for label in VISIBLE]
    assert all(v is not None for v in learned), result.per_label_auroc
    print("learned AUROC", dict(zip(VISIBLE, learned, strict=True)), "macro", result.macro_auroc)
    auroc = dict(zip(VISIBLE, learned, strict=True))
    # Heart size and lines/tubes are obvious at 64 px; a blunted costophrenic angle is a few pixels there.
    assert float(np.mean(learned)) >= 0.75  # type: ignore[arg-type]
    assert auroc["Cardiomegaly"] >= 0.7 and auroc["Support Devices"] >= 0.7 and auroc["Pleural Effusion"] > 0.5  # type: ignore[operator]

    shuffled = write_manifest(learning_set.records, tmp_path / "shuffled.manifest", shuffle_seed=1)
    control = run(load_train_config(overrides={**base, "manifest": str(shuffled), "out": str(tmp_path / "control")},
                                    environ={}))
    chance = [control.per_label_auroc[label] for label in VISIBLE]
    print("shuffled-label AUROC", dict(zip(VISIBLE, chance, strict=True)))
    assert float(np.mean(chance)) < float(np.mean(learned)) - 0.15  # type: ignore[arg-type]

    # the run's outputs
    out = tmp_path / "real"
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["usable_images"] == len(learning_set.records) and report["data"]["skipped"] == {}
    assert report["test"]["samples"] == report["data"]["split"]["images"]["test"]
    assert len(report["history"]) == 6 and report["history"][-1]["train_loss"] < report["history"][0]["train_loss"]
    split = json.loads((out / "split.json").read_text())
    assert split["unit"] == "patient" and split["patients"]["test"] >= 1
    for name in ("roc.png", "training_curves.png", "calibration.png"):
        assert (out / "plots" / name).stat().st_size > 5000
    assert "| Cardiomegaly |" in (out / "model-card.md").read_text()


def reference_run(small_set: SynthSet, tmp_path: Path) -> tuple[RunResult, dict[str, Any]]:
    settings = small_overrides(small_set, tmp_path / "reference", tmp_path / "cache")
    return run(load_train_config(overrides=settings, environ={})), settings


def test_kill_and_resume_match_an_uninterrupted_run(small_set: SynthSet, tmp_path: Path) -> None:
    reference, settings = reference_run(small_set, tmp_path)
    expected = weights(reference.last_model)
    steps = reference.history[-1]["steps"]
    assert steps >= 8

    # 1) SIGKILL once a periodic checkpoint past step 3 exists, then resume
    killed = {**settings, "out": str(tmp_path / "killed"), "step_delay": 0.4}
    proc = subprocess.Popen(cli_args(killed), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while checkpoint_step(ckpt) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    at_kill = checkpoint_step(ckpt)
    assert 3 <= at_kill < steps, f"the run was not killed mid-way (checkpoint at {at_kill} of {steps})"
    resumed = run(load_train_config(overrides={**killed, "step_delay": 0}, environ={}))
    difference = max_diff(weights(resumed.last_model), expected)
    print(f"SIGKILL at step {at_kill} of {steps}, resumed: max |weight difference| {difference:.2e}")
    assert difference <= RESUME_ATOL
    assert [h["train_loss"] for h in resumed.history] == pytest.approx(
        [h["train_loss"] for h in reference.history], abs=1e-6)

    # 2) SIGTERM: the run writes a checkpoint at the current step and exits with 143
    termed = {**settings, "out": str(tmp_path / "termed"), "step_delay": 0.4, "checkpoint_every_steps": 1000}
    proc = subprocess.Popen(cli_args(termed), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "termed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while checkpoint_step(ckpt) < 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first checkpoint is the end of epoch 1
    # The loop reads the flag after each step: the run stops after a step of epoch 2, whenever it arrives.
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    at_term = checkpoint_step(ckpt)
    assert at_term < steps and at_term % 1000 != 0 and at_term > 0
    resumed = run(load_train_config(overrides={**termed, "step_delay": 0}, environ={}))
    assert max_diff(weights(resumed.last_model), expected) <= RESUME_ATOL
    report = json.loads((tmp_path / "termed" / "report.json").read_text())
    assert report["test"]["macro_auroc"] == pytest.approx(reference.macro_auroc, abs=1e-6)


def test_two_process_ddp_matches_one_process(small_set: SynthSet, tmp_path: Path) -> None:
    single = run(load_train_config(overrides=small_overrides(
        small_set, tmp_path / "single", tmp_path / "cache", micro_batches=2, batch_size=8), environ={}))
    ddp_settings = small_overrides(small_set, tmp_path / "ddp", tmp_path / "cache", batch_size=8)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "dicomlab_training", *cli_args(ddp_settings)[3:]]
    done = subprocess.run(torchrun, env=env(), capture_output=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    single_report = single.report_data
    # same global batches, same augmentation, gradients averaged over ranks = one process with 2 micro-batches
    assert [h["train_loss"] for h in report["history"]] == pytest.approx(
        [h["train_loss"] for h in single.history], rel=1e-4)
    ddp_weights = weights(f"file://{tmp_path / 'ddp'}/models/last.pt")
    difference = max_diff(ddp_weights, weights(single.last_model), params_only=True)
    print(f"DDP vs single process: max |parameter difference| {difference:.2e}")
    assert difference <= DDP_ATOL
    # evaluation sharded over 2 ranks without duplicates: every test image scored exactly once
    assert report["test"]["samples"] == single_report["test"]["samples"] == report["data"]["split"]["images"]["test"]
    assert report["config"]["micro_batches"] == 1 and report["world_size"] == 2
    assert single_report["world_size"] == 1


def test_export_matches_eager(tmp_path: Path) -> None:
    from dicomlab_training.config import ModelConfig
    from dicomlab_training.export import export_bundle
    from dicomlab_training.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="densenet-tiny"), 3)
    config = load_train_config(overrides={"pixels.size": 48, "model.arch": "densenet-tiny"}, environ={})
    labels = ("Cardiomegaly", "Pleural Effusion", "Support Devices")
    uri = export_bundle(model, config, labels, open_store(str(tmp_path)), {"run": "t", "test": {}})
    bundle = Path(uri.removeprefix("file://"))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["labels"] == list(labels) and meta["export_max_abs_diff"]["onnx"] <= 1e-4
    x = torch.rand(5, 1, 48, 48)  # another batch size than the export example: the batch axis is dynamic
    with torch.no_grad():
        eager = model.eval()(x)
        scripted = torch.jit.load(str(bundle / "models" / "model.ts"))(x)  # type: ignore[no-untyped-call]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    assert float((scripted - eager).abs().max()) < 1e-4
    assert float(np.abs(onnx_out - eager.numpy()).max()) < 1e-4
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(k.startswith("net.") for k in state)
    assert "## Intended use" in (bundle / "docs" / "README.md").read_text()


def test_cli_evaluate_and_export_a_model_file(small_set: SynthSet, tmp_path: Path) -> None:
    from dicomlab_cli.main import main
    from dicomlab_training.config import ModelConfig
    from dicomlab_training.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="densenet-tiny"), 14)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "model.pt")  # DDP-style keys
    common = ["--manifest", str(small_set.manifest), "--dicom-dir", str(small_set.directory), "--size", "32",
              "--cache-dir", str(tmp_path / "cache"), "--set", "model.arch=densenet-tiny", "--workers", "2"]
    assert main(["train", "evaluate", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "eval"),
                 *common]) == 0
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["samples"] == len(small_set.records) and len(report["per_label"]) == 14
    assert main(["train", "export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "export"),
                 *common]) == 0
    meta = json.loads((tmp_path / "export" / "bundle" / "configs" / "metadata.json").read_text())
    assert len(meta["labels"]) == 14 and meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]


def test_dataloader_workers_feed_training(small_set: SynthSet, tmp_path: Path) -> None:
    settings = small_overrides(small_set, tmp_path / "workers", tmp_path / "cache", num_workers=2, epochs=1)
    result = run(load_train_config(overrides=settings, environ={}))
    assert result.history[0]["steps"] > 0 and result.macro_auroc is not None


def test_bf16_autocast_on_cpu(small_set: SynthSet, tmp_path: Path) -> None:
    from dicomlab_training.loop import amp_dtype

    settings = small_overrides(small_set, tmp_path / "bf16", tmp_path / "cache", amp="bf16", epochs=1)
    config = load_train_config(overrides=settings, environ={})
    assert amp_dtype(config, torch.device("cpu")) is torch.bfloat16
    result = run(config)
    assert np.isfinite(result.history[0]["train_loss"]) and result.macro_auroc is not None
