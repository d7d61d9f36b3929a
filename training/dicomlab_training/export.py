"""Packaging: TorchScript and ONNX exports checked against the eager model, a MONAI-bundle-style folder,
and a model card.

Bundle layout (``<out>/bundle/``), following MONAI Bundle conventions::

    configs/metadata.json    label names, input/output description, preprocessing, versions, metrics
    configs/inference.json   how to build the network and what the input must look like
    models/model.pt          state dict of the Classifier (normalization + DenseNet121)
    models/model.ts          TorchScript (traced)
    models/model.onnx        ONNX (dynamic batch axis)
    docs/README.md           the model card

Both exports are run on the same random batch as the eager model and must agree within
``EXPORT_ATOL`` (absolute, on logits); the measured differences are recorded in metadata.json.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicomlab_core.objectstore import ObjectStore
from dicomlab_training.config import TrainConfig
from dicomlab_training.model import INPUT_MEAN, INPUT_STD, Classifier
from dicomlab_training.pixels import PIPELINE_VERSION

logger = logging.getLogger(__name__)

EXPORT_ATOL = 1e-3
"""Largest accepted absolute difference between exported and eager logits."""


class ExportMismatch(RuntimeError):
    """An exported model does not reproduce the eager model's outputs."""


def export_torchscript(model: Classifier, example: torch.Tensor, path: Path) -> float:
    """Trace ``model`` to ``path``; returns the max |difference| to eager on ``example``."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
        traced.save(str(path))
        loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
        diff = float((loaded(example) - model(example)).abs().max())
    if not diff <= EXPORT_ATOL:
        raise ExportMismatch(f"TorchScript export differs from eager by {diff:g}")
    return diff


def export_onnx(model: Classifier, example: torch.Tensor, path: Path) -> float:
    """Export ``model`` to ONNX with a dynamic batch axis; returns the max |difference| in onnxruntime."""
    import onnxruntime

    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter is faster than dynamo (benchmarks/results/README.md)
            torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                              opset_version=17)
        except Exception:  # pragma: no cover - fall back when the legacy exporter is gone
            torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
        eager = model(example).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["logits"], {"image": example.numpy()})
    diff = float(np.abs(onnx_out - eager).max())
    if not diff <= EXPORT_ATOL:
        raise ExportMismatch(f"ONNX export differs from eager by {diff:g}")
    return diff


def metadata(config: TrainConfig, labels: Sequence[str], report: dict[str, Any],
             diffs: dict[str, float]) -> dict[str, Any]:
    test = report.get("test") or {}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"trained by dicomlab ({report.get('run', '')})"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "name": "dicomlab chest X-ray multi-label classifier",
        "task": "multi-label classification of 2D radiographs",
        "description": "MONAI DenseNet121, one sigmoid output per finding.",
        "authors": "dicomlab",
        "copyright": "see the training data's terms",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": list(labels),
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "DX/CR",
                                 "num_channels": 1, "spatial_shape": [config.pixels.size, config.pixels.size],
                                 "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                                 "channel_def": {"0": "grey, bright = dense"}}},
            "outputs": {"pred": {"type": "probabilities", "format": "logits", "dtype": "float32",
                                 "value_range": ["-inf", "inf"], "num_channels": len(labels),
                                 "channel_def": {str(i): label for i, label in enumerate(labels)},
                                 "activation": "sigmoid (independent per label)"}},
        },
        "preprocessing": {
            "pipeline": PIPELINE_VERSION,
            "steps": ["Modality LUT / Rescale Slope+Intercept", "VOI LUT or first Window Center/Width",
                      "invert MONOCHROME1", "scale to 0..1", f"resize longest side to {config.pixels.size} "
                      "(area averaging) preserving aspect, centre-pad with 0"],
            "normalization_inside_model": {"mean": INPUT_MEAN, "std": INPUT_STD},
        },
        "threshold": config.threshold,
        "metrics": {"split": report.get("evaluation_split"), "macro_auroc": test.get("macro_auroc"),
                    "micro_auroc": test.get("micro_auroc"),
                    "per_label_auroc": {k: v["auroc"] for k, v in test.get("per_label", {}).items()}},
        "export_max_abs_diff": diffs,
        "training_config": config.recorded(),
    }


def export_bundle(model: Classifier, config: TrainConfig, labels: Sequence[str], store: ObjectStore,
                  report: dict[str, Any], prefix: str = "bundle") -> str:
    """Write the bundle folder under ``prefix`` in ``store``; returns its URI."""
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand((2, 1, config.pixels.size, config.pixels.size), generator=generator)
    diffs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        diffs["torchscript"] = export_torchscript(model, example, folder / "model.ts")
        diffs["onnx"] = export_onnx(model, example, folder / "model.onnx")
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        store.put_bytes(f"{prefix}/models/model.pt", buffer.getvalue())
        store.put_file(f"{prefix}/models/model.ts", folder / "model.ts")
        store.put_file(f"{prefix}/models/model.onnx", folder / "model.onnx")
    meta = metadata(config, labels, report, diffs)
    store.put_bytes(f"{prefix}/configs/metadata.json", json.dumps(meta, indent=2).encode(), "application/json")
    inference = {"network_def": {"_target_": "monai.networks.nets.DenseNet121" if config.model.arch == "densenet121"
                                 else "monai.networks.nets.DenseNet", "spatial_dims": 2, "in_channels": 1,
                                 "out_channels": len(labels)},
                 "state_dict_prefix": "net.", "input": meta["network_data_format"]["inputs"]["image"],
                 "preprocessing": meta["preprocessing"], "postprocessing": "sigmoid"}
    store.put_bytes(f"{prefix}/configs/inference.json", json.dumps(inference, indent=2).encode(), "application/json")
    store.put_bytes(f"{prefix}/docs/README.md", model_card(config, labels, report).encode(), "text/markdown")
    logger.info("bundle exported", extra={"torchscript_diff": diffs["torchscript"], "onnx_diff": diffs["onnx"]})
    return store.uri(prefix)


def model_card(config: TrainConfig, labels: Sequence[str], report: dict[str, Any]) -> str:
    """A model card in Markdown: data counts, per-label metrics, intended use and limits."""
    test = report.get("test") or {}
    data = report.get("data", {})
    split = data.get("split", {})
    lines = [
        f"# Model card: {report.get('run', 'dicomlab model')}", "",
        "## Model", "",
        f"MONAI DenseNet121 ({config.model.arch}), 2D, 1 input channel, {len(labels)} independent sigmoid outputs, "
        f"input {config.pixels.size}×{config.pixels.size} (pixel pipeline `{PIPELINE_VERSION}`). "
        f"Trained {len(report.get('history', []))} epochs, best epoch {report.get('best_epoch', -1) + 1}, "
        f"seed {config.seed}.", "",
        "## Data", "",
        f"- Manifest: `{config.manifest}` — {data.get('manifest_samples', 0)} instances, "
        f"{data.get('usable_images', 0)} usable.",
        f"- Skipped: {json.dumps(data.get('skipped', {}))}.",
        f"- Patient-level split (seed {config.seed}): patients {json.dumps(split.get('patients', {}))}, "
        f"images {json.dumps(split.get('images', {}))}.", "",
        f"## Metrics ({report.get('evaluation_split', 'test')} split)", "",
        f"Macro AUROC {_fmt(test.get('macro_auroc'))} (95% CI {_ci(test.get('macro_auroc_ci95'))}), "
        f"micro AUROC {_fmt(test.get('micro_auroc'))}, "
        f"ECE {_fmt((test.get('calibration') or {}).get('ece'))}, threshold {config.threshold}.", "",
        "| Label | AUROC | 95% CI (bootstrap) | ECE | Positives | Negatives | Sensitivity | Specificity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        item = test.get("per_label", {}).get(label, {})
        auroc = item.get("auroc")
        ci = item.get("auroc_ci95")
        lines.append(f"| {label} | {_fmt(auroc) if auroc is not None else 'undefined (one class)'} | "
                     f"{f'{ci[0]:.3f}–{ci[1]:.3f}' if ci else 'n/a'} | {_fmt(item.get('ece'))} | "
                     f"{item.get('positives', 0)} | {item.get('negatives', 0)} | {_fmt(item.get('sensitivity'))} | "
                     f"{_fmt(item.get('specificity'))} |")
    lines += [
        "", "Labels with only one class in the evaluation split have no AUROC and are not in the macro average.", "",
        "## Intended use", "",
        "Research and workflow support: ranking and pre-labelling chest radiographs for human review in dicomlab. "
        "Not a medical device; not for diagnosis or treatment decisions.", "",
        "## Limits", "",
        "- Trained only on the images and labels of the manifest above; performance elsewhere (other sites, "
        "scanners, populations, paediatric images, lateral views) is unknown.",
        "- Labels come from readers and consolidation; their errors are learned too. Uncertain labels were masked.",
        "- A macro AUROC above ~0.90 on real auto-labelled chest X-rays usually means leakage; check the split.",
        "- Probabilities are calibrated only as reported above (ECE); re-check thresholds per site.", "",
    ]
    return "\n".join(lines)


def _ci(value: list[float] | None) -> str:
    return "n/a" if not value else f"{value[0]:.3f}–{value[1]:.3f}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
