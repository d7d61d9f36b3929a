"""The training config: overrides, JSON files, SageMaker environment, recorded form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomlab_core.errors import ConfigError
from dicomlab_training.config import TrainConfig, checkpoint_location, load_train_config, parse_assignments


def test_layers_defaults_json_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 7, "pixels": {"size": 96}, "augment": {"rotate_degrees": 4}}))
    config = load_train_config(json_path=path, overrides=parse_assignments(["epochs=2", "augment.enabled=false",
                                                                            "labels=Cardiomegaly,Edema"]),
                               environ={})
    assert config.epochs == 2 and config.pixels.size == 96
    assert config.augment.rotate_degrees == 4 and config.augment.enabled is False
    assert config.labels == ("Cardiomegaly", "Edema")


@pytest.mark.parametrize("item", ["epochz=3", "pixels.sise=3", "epochs=three", "orthanc.url=http://x",
                                  "augment.enabled=maybe", "amp=fp8", "pixels.size=4"])
def test_mistakes_are_refused(item: str) -> None:
    with pytest.raises(ConfigError):
        load_train_config(overrides=parse_assignments([item]), environ={})


def test_secrets_come_from_env_and_are_not_recorded() -> None:
    env = {"DICOMLAB_TRAIN__ORTHANC__URL": "http://pacs:8042", "DICOMLAB_TRAIN__ORTHANC__PASSWORD": "s3cret"}
    config = load_train_config(environ=env)
    assert config.orthanc.url == "http://pacs:8042" and config.orthanc.password.reveal() == "s3cret"
    recorded = json.dumps(config.recorded())
    assert "s3cret" not in recorded and "http://pacs:8042" in recorded


def test_sagemaker_environment(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "output.manifest").write_text("")
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(tmp_path / "model"),
           "SM_HPS": json.dumps({"epochs": 5, "batch-size": 8})}
    config = load_train_config(environ=env)
    assert config.dicom_dir == str(channel) and config.manifest == str(channel / "output.manifest")
    assert config.out == str(tmp_path / "model") and config.epochs == 5 and config.batch_size == 8
    assert checkpoint_location(config, env) == str(tmp_path / "model") + "/checkpoints"  # no /opt/ml here


def test_digest_ignores_paths_but_not_hyperparameters() -> None:
    base = TrainConfig()
    assert load_train_config(overrides={"out": "/elsewhere", "num_workers": 9}, environ={}).digest() == base.digest()
    assert load_train_config(overrides={"lr": 0.1}, environ={}).digest() != base.digest()


def test_cli_prints_the_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlab_cli.main import main

    assert main(["train", "run", "--print-config", "--size", "96", "--epochs", "2", "--set", "augment.scale=0.1",
                 "--orthanc-url", "http://pacs:8042"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pixels"]["size"] == 96 and printed["epochs"] == 2 and printed["augment"]["scale"] == 0.1
    assert printed["orthanc"]["url"] == "http://pacs:8042"
