"""dicomlab training: MONAI DenseNet121 multi-label training from labelled DICOMs.

The demo and other callers use::

    from dicomlab_training import TrainConfig, run, load_train_config

    result = run(load_train_config(overrides={"manifest": "...", "dicom_dir": "...", "out": "runs/x",
                                              "pixels.size": 128, "epochs": 3}))
    result.best_model, result.report, result.plots, result.per_label_auroc
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicomlab_training.config import TrainConfig, apply_overrides, load_train_config

if TYPE_CHECKING:
    from dicomlab_training.runner import RunResult

__all__ = ["RunResult", "TrainConfig", "apply_overrides", "load_train_config", "run"]


def run(config: TrainConfig) -> RunResult:
    """Train, evaluate and package one model (see :mod:`dicomlab_training.runner`)."""
    from dicomlab_training.runner import run as _run

    return _run(config)


def __getattr__(name: str) -> Any:
    if name == "RunResult":
        from dicomlab_training.runner import RunResult

        return RunResult
    raise AttributeError(name)
