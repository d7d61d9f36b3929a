"""Evaluate or export an already trained model file (``dicomlab train evaluate | export``)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch

from dicomlab_core.objectstore import open_store
from dicomlab_training.config import TrainConfig
from dicomlab_training.data import CachedBatches, prepare
from dicomlab_training.export import export_bundle
from dicomlab_training.loop import DistInfo, amp_dtype, predict, score, select_device
from dicomlab_training.model import Classifier, _read, build_model, clean_state_dict


def load_model(config: TrainConfig, uri: str, num_labels: int) -> Classifier:
    model = build_model(config.model, num_labels)
    state = torch.load(io.BytesIO(_read(uri)), map_location="cpu", weights_only=True)
    model.load_state_dict(clean_state_dict(state))
    return model


def evaluate_model(config: TrainConfig, model_uri: str, split: str = "all") -> dict[str, Any]:
    """Metrics of ``model_uri`` on the manifest's images (all, or one split of the config's seed)."""
    data = prepare(config)
    rows = data.cache.usable if split == "all" else getattr(data.split, split)
    dist = DistInfo()
    device = select_device(config, dist)
    model = load_model(config, model_uri, len(data.table.labels)).to(device)
    pos_weight = np.ones(len(data.table.labels), dtype=np.float32)
    idx, logits = predict(model, CachedBatches(data), np.sort(rows), config, dist, device, amp_dtype(config, device))
    report = score(data, idx, logits, pos_weight, config.threshold)
    report["skipped"] = data.skipped
    report["split"] = split
    open_store(config.out).put_bytes("evaluation.json", json.dumps(report, indent=2).encode(), "application/json")
    return report


def export_model(config: TrainConfig, model_uri: str) -> str:
    """Write a bundle for ``model_uri`` under ``config.out``; labels come from the config or the manifest."""
    labels = config.labels
    if not labels:
        from dicomlab_training.manifest import load_table

        labels = load_table(config.manifest).labels
    model = load_model(config, model_uri, len(labels))
    return export_bundle(model, config, labels, open_store(config.out), {"run": config.run_name or "export"})
