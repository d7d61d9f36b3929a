"""Initial weights with wrapper prefixes, atomic checkpoints in S3 with RNG states, metrics to a real Pushgateway."""

from __future__ import annotations

import io
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from dicomlab_cli.processes import free_port
from dicomlab_training.checkpoint import Checkpointer, TrainState
from dicomlab_training.config import ModelConfig
from dicomlab_training.model import build_model, clean_state_dict, load_initial_weights
from dicomlab_training.pushgateway import MetricsPusher

PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")


def test_initial_weights_from_ddp_compile_and_rgb_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model(ModelConfig(arch="densenet-tiny"), 5)
    bare = {k.removeprefix("net."): v for k, v in source.state_dict().items()}
    conv = "features.conv0.weight"
    rgb = bare[conv].repeat(1, 3, 1, 1) / 3  # an ImageNet-style 3-channel first conv
    wrapped = {f"module._orig_mod.{k}": (rgb if k == conv else v) for k, v in bare.items()}
    wrapped["module._orig_mod.class_layers.out.weight"] = torch.zeros(9, 8)  # another head: skipped
    path = tmp_path / "init.pt"
    torch.save(wrapped, path)
    torch.manual_seed(2)
    target = build_model(ModelConfig(arch="densenet-tiny"), 5)
    outcome = load_initial_weights(target, str(path))
    assert "net.class_layers.out.weight" in outcome["skipped"] and "net.class_layers.out.weight" in outcome["missing"]
    state = target.state_dict()
    torch.testing.assert_close(state["net." + conv], source.state_dict()["net." + conv])  # RGB summed to grey
    torch.testing.assert_close(state["net.features.denseblock1.denselayer1.layers.conv1.weight"],
                               source.state_dict()["net.features.denseblock1.denselayer1.layers.conv1.weight"])
    assert list(clean_state_dict({"model": {"module.a": 1}})) == ["net.a"]


def test_checkpoint_roundtrip_in_s3_with_rng_states(s3_bucket: str) -> None:
    model = build_model(ModelConfig(arch="densenet-tiny"), 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.rand(2, 1, 32, 32)).sum().backward()
    optimizer.step()
    scheduler.step()
    checkpointer = Checkpointer(f"{s3_bucket}/runs/1/checkpoints")
    assert checkpointer.load() is None
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    state = TrainState(epoch=2, step_in_epoch=3, global_step=17, best_metric=0.8, best_tiebreak=-0.3, best_epoch=1,
                       history=[{"epoch": 0, "train_loss": 1.0}], epoch_loss_sum=2.5, epoch_loss_steps=3)
    uri = checkpointer.save(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, state=state,
                            config_digest="abc")
    assert uri == f"{s3_bucket}/runs/1/checkpoints/last.pt"
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    payload = checkpointer.load()  # torch.load(weights_only=True) inside
    assert payload is not None and payload["config_digest"] == "abc"
    fresh = build_model(ModelConfig(arch="densenet-tiny"), 3)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.01)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0 / (step + 1))
    restored = Checkpointer.restore(payload, model=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler,
                                    scaler=None)
    assert restored == state
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected  # RNG streams continue
    for key, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    assert fresh_scheduler.state_dict()["last_epoch"] == 1
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    torch.load(io.BytesIO(checkpointer.store.get_bytes("last.pt")), weights_only=True)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if not PUSHGATEWAY.exists():
        pytest.skip("prometheus-pushgateway is not installed")
    port = free_port()
    proc = subprocess.Popen([str(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_metrics_reach_a_real_pushgateway(pushgateway: str) -> None:
    pusher = MetricsPusher(pushgateway, "run-7")
    pusher.push_epoch({"epoch": 1, "steps": 40, "train_loss": 0.5, "val_loss": 0.6, "images_per_second": 123.0,
                       "val_macro_auroc": 0.81, "val_micro_auroc": 0.83, "val_per_label_auroc": {"Edema": 0.7}})
    text = requests.get(f"{pushgateway}/metrics", timeout=5).text
    assert 'dicomlab_training_epoch{instance="",job="dicomlab_training",run="run-7"} 2' in text
    assert 'dicomlab_training_auroc{instance="",job="dicomlab_training",label="macro",run="run-7",split="val"} 0.81' \
        in text
    assert 'dicomlab_training_images_per_second{instance="",job="dicomlab_training",run="run-7"} 123' in text
    MetricsPusher("http://127.0.0.1:9", "x").push_epoch(  # unreachable: logged, not raised
        {"epoch": 0, "steps": 1, "train_loss": 1.0, "images_per_second": 1.0})
