"""One training configuration: every hyperparameter in one dataclass, recorded with the run.

A run is described by :class:`TrainConfig`, built from defaults, then an optional JSON file
(``--config run.json``), then ``key=value`` overrides (``--set epochs=3 --set augment.rotate_degrees=5``),
then SageMaker's ``SM_HPS`` when present. The effective config (with secrets masked) is written to
``<out>/config.json`` so a result can always be traced back to the exact settings that produced it.

Orthanc credentials come from ``DICOMLAB_TRAIN__ORTHANC__*`` (the shared core's convention), never
from the JSON file, so a config can be shared without leaking a password.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomlab_core.config import load_config, masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.orthanc import OrthancSettings

ENV_PREFIX = "DICOMLAB_TRAIN"
SAGEMAKER_CHECKPOINTS = Path("/opt/ml/checkpoints")
PREEMPTED_EXIT_CODE = 143
"""Exit code of a run stopped by SIGTERM after writing its checkpoint (128 + 15, what a shell reports for a
process ended by SIGTERM). Job and JobSet failure policies treat it as a preemption, not a failure."""
SELECT_METRICS = ("val_macro_auroc", "val_loss")
"""Choices of ``TrainConfig.select_metric`` (how the best epoch is chosen)."""


@dataclass(frozen=True)
class PixelConfig:
    """How a DICOM becomes the model's input (part of the cache key)."""

    size: int = 224
    """Square training resolution in pixels; images are resized preserving aspect, then padded."""
    cache_dtype: str = "uint8"
    """Cache element type: uint8 (1 byte/pixel) or float16."""


@dataclass(frozen=True)
class AugmentConfig:
    """Batched on-device augmentation (never a left/right flip: chest anatomy is not symmetric)."""

    enabled: bool = True
    """Apply augmentation to training batches."""
    rotate_degrees: float = 7.0
    """Maximum absolute rotation in degrees (converted to radians internally)."""
    scale: float = 0.08
    """Maximum relative zoom in or out (0.08 = 0.92-1.08)."""
    translate: float = 0.05
    """Maximum shift as a fraction of the image side."""
    brightness: float = 0.08
    """Maximum additive brightness change (intensity units, image range 0-1)."""
    contrast: float = 0.15
    """Maximum relative contrast change (0.15 = 0.85-1.15)."""


@dataclass(frozen=True)
class ModelConfig:
    """The network."""

    arch: str = "densenet121"
    """densenet121 (MONAI DenseNet121, 2D, 1 channel) or densenet-tiny (a small DenseNet for tests)."""
    init_weights: str = ""
    """Optional local file (or object-store URI) with initial weights; never downloaded from a hub."""
    compile: bool = False
    """torch.compile the model (CUDA only)."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Units and defaults are in each field's docstring."""

    manifest: str = ""
    """Output manifest URI (file path, file:// or s3://)."""
    out: str = "runs/latest"
    """Run output: a folder or object-store URL; checkpoints, models, report and plots go here."""
    dicom_dir: str = ""
    """Read DICOMs from this folder/object-store URL instead of Orthanc (files matched by SOP UID)."""
    cache_dir: str = ".cache/dicomlab-training"
    """Local folder for the decoded-image cache (memory-mapped array + index)."""
    cache_url: str = ""
    """Optional object-store URL to share the decoded cache between runs and nodes."""
    labels: tuple[str, ...] = ()
    """Label set; empty means the labels listed in the manifest."""
    pixels: PixelConfig = field(default_factory=PixelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 10
    """Number of passes over the training split."""
    batch_size: int = 32
    """Global batch size (summed over all ranks and micro-batches)."""
    micro_batches: int = 1
    """Split each per-rank batch into this many micro-batches with gradient accumulation."""
    eval_batch_size: int = 64
    """Per-rank batch size for evaluation."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 20
    """Linear warm-up steps before the cosine decay."""
    grad_clip: float = 5.0
    """Clip the gradient norm to this value (0 disables)."""
    pos_weight_max: float = 20.0
    """Upper bound of the per-label BCE pos_weight (negatives/positives)."""
    seed: int = 1234
    """Seed for the split, the batch order, augmentation and initial weights."""
    val_fraction: float = 0.15
    """Fraction of patients in the validation split."""
    test_fraction: float = 0.15
    """Fraction of patients in the test split."""
    soft_labels: bool = False
    """Train on soft targets: P(present) from the labeling export's consolidation confidence (the
    Dawid–Skene posterior) instead of 0/1; uncertain labels stay masked."""
    threshold: float = 0.5
    """Probability threshold for sensitivity/specificity."""
    select_metric: str = "val_macro_auroc"
    """How models/best.pt is chosen: val_macro_auroc (highest validation macro AUROC; equal AUROC, e.g. a
    saturated 1.0, goes to the lower validation loss) or val_loss (lowest validation loss)."""
    amp: str = "auto"
    """Mixed precision: auto (bf16 on CUDA when supported, else fp16; off on CPU), bf16, fp16, off."""
    channels_last: bool = True
    """Use channels_last memory format on CUDA."""
    num_workers: int = 2
    """DataLoader worker processes (0 = load in the main process)."""
    fetch_concurrency: int = 8
    """Parallel downloads/decodes while building the cache."""
    dist_timeout_seconds: int = 1800
    """Timeout of the process group's collectives and barriers under torchrun, seconds (covers building the
    decode cache while other ranks wait)."""
    checkpoint_every_steps: int = 200
    """Write a checkpoint every N optimizer steps (and at every epoch end and on SIGTERM)."""
    resume: bool = True
    """Resume from the last checkpoint under ``out`` when one exists."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    threads: int = 0
    """torch CPU threads (0 = leave PyTorch's default)."""
    pushgateway_url: str = ""
    """Prometheus Pushgateway URL; empty disables metric pushes."""
    run_name: str = ""
    """Name for metrics and the model card; defaults to the last part of ``out``."""
    export: bool = True
    """Write the MONAI-bundle folder with TorchScript and ONNX exports at the end of the run."""
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0 = no limit; for smoke runs)."""
    step_delay: float = 0.0
    """Sleep this many seconds after each step (tests use it to interrupt a run at a known point)."""
    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    """Orthanc connection; set through DICOMLAB_TRAIN__ORTHANC__* only."""

    def validate(self) -> None:
        if self.pixels.size < 16:
            raise ValueError("pixels.size must be at least 16")
        if self.pixels.cache_dtype not in ("uint8", "float16"):
            raise ValueError("pixels.cache_dtype must be uint8 or float16")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError("amp must be auto, bf16, fp16 or off")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {', '.join(SELECT_METRICS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        if self.model.arch not in ("densenet121", "densenet-tiny"):
            raise ValueError("model.arch must be densenet121 or densenet-tiny")
        if self.dist_timeout_seconds < 1:
            raise ValueError("dist_timeout_seconds must be >= 1")
        if self.batch_size < 1 or self.micro_batches < 1 or self.epochs < 0:
            raise ValueError("batch_size and micro_batches must be >= 1, epochs >= 0")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1 \
                or self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data, secrets masked."""
        data = masked(self)
        data["labels"] = list(self.labels)
        return data

    def recorded(self) -> dict[str, Any]:
        """What is written next to the results: the config without connection secrets."""
        return self.to_dict()

    def digest(self) -> str:
        """A short hash of the hyperparameters that change the result (not paths or credentials)."""
        data = self.to_dict()
        for volatile in ("out", "cache_dir", "cache_url", "pushgateway_url", "run_name", "orthanc", "resume", "export",
                         "num_workers", "fetch_concurrency", "step_delay", "checkpoint_every_steps", "threads",
                         "dist_timeout_seconds"):
            data.pop(volatile, None)
        if not self.soft_labels:
            data.pop("soft_labels", None)  # runs from before the setting existed keep their digest
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _coerce(hint: Any, value: Any) -> Any:
    """Convert a JSON value or an override string to the field's type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"not a boolean: {value!r}")
            return lowered in ("1", "true", "yes", "on")
        return bool(value)
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    if hint is float:
        return float(value)
    if hint is str:
        return str(value)
    raise ValueError(f"cannot set a value of type {hint!r}")


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` with dotted-key overrides applied (``{"augment.rotate_degrees": "5", "epochs": 3}``).

    Unknown keys raise :class:`ConfigError` so a typo never silently trains with a default.
    """
    nested: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, Mapping):
            nested.setdefault(head, {}).update(value)
        else:
            top[head] = value
    result: TrainConfig = _replace(config, top, nested, prefix="")
    return result


def _replace(obj: Any, top: dict[str, Any], nested: dict[str, dict[str, Any]], prefix: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in top.items():
        if key not in names or key == "orthanc":
            raise ConfigError(f"unknown training setting {prefix + key!r}")
        try:
            changes[key] = _coerce(hints[key], value)
        except ValueError as exc:
            raise ConfigError(f"training setting {prefix + key}: {exc}") from None
    for key, sub in nested.items():
        if key not in names or key == "orthanc" or not dataclasses.is_dataclass(hints[key]):
            raise ConfigError(f"unknown training setting group {prefix + key!r}")
        inner_top = {k: v for k, v in sub.items() if "." not in k}
        inner_nested: dict[str, dict[str, Any]] = {}
        for k, v in sub.items():
            if "." in k:
                head, _, rest = k.partition(".")
                inner_nested.setdefault(head, {})[rest] = v
        changes[key] = _replace(getattr(obj, key), inner_top, inner_nested, prefix=f"{prefix}{key}.")
    return dataclasses.replace(obj, **changes)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["epochs=3", "augment.enabled=false"]`` → a dict; a malformed item raises ConfigError."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        result[key.strip()] = value.strip()
    return result


def load_train_config(*, json_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> TrainConfig:
    """Defaults → JSON file → overrides → SageMaker hyperparameters; Orthanc settings from the environment."""
    env = os.environ if environ is None else environ
    orthanc = load_config(OrthancSettings, f"{ENV_PREFIX}__ORTHANC", env)
    config = TrainConfig(orthanc=orthanc)
    if json_path:
        try:
            data = json.loads(Path(json_path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read training config {json_path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"training config {json_path} must hold a JSON object")
        data.pop("orthanc", None)
        config = apply_overrides(config, data)
    config = apply_sagemaker(config, env)
    if overrides:
        config = apply_overrides(config, overrides)
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(f"training config: {exc}") from None
    return config


def apply_sagemaker(config: TrainConfig, env: Mapping[str, str]) -> TrainConfig:
    """Honour SageMaker's training environment when present.

    ``SM_HPS`` (JSON hyperparameters) are applied as overrides; ``SM_CHANNEL_TRAIN`` supplies the DICOM
    folder (and ``output.manifest`` inside it when no manifest is set); ``SM_MODEL_DIR`` becomes the
    output folder unless one was given; ``/opt/ml/checkpoints`` is used for checkpoints by the loop.
    """
    changes: dict[str, Any] = {}
    hps = env.get("SM_HPS")
    if hps:
        try:
            parsed = json.loads(hps)
        except ValueError:
            raise ConfigError("SM_HPS is not valid JSON") from None
        if isinstance(parsed, dict):
            config = apply_overrides(config, {k.replace("-", "_"): v for k, v in parsed.items()})
    channel = env.get("SM_CHANNEL_TRAIN")
    if channel:
        if not config.dicom_dir:
            changes["dicom_dir"] = channel
        if not config.manifest:
            for name in ("output.manifest", "manifest.jsonl"):
                if (Path(channel) / name).exists():
                    changes["manifest"] = str(Path(channel) / name)
                    break
    model_dir = env.get("SM_MODEL_DIR")
    if model_dir and config.out == TrainConfig.out:
        changes["out"] = model_dir
    return dataclasses.replace(config, **changes) if changes else config


def checkpoint_location(config: TrainConfig, env: Mapping[str, str] | None = None) -> str:
    """Where checkpoints go: SageMaker's synced folder when it exists, else ``<out>/checkpoints``."""
    environ = os.environ if env is None else env
    if "SM_MODEL_DIR" in environ and SAGEMAKER_CHECKPOINTS.is_dir():
        return str(SAGEMAKER_CHECKPOINTS)
    return config.out.rstrip("/") + "/checkpoints"
