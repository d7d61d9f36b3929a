"""One training run from a config: data → train (resumable) → test evaluation → report, plots, exports.

Output layout under ``config.out`` (a folder or an object-store URL)::

    config.json  split.json  report.json  model-card.md
    plots/roc.png  plots/training_curves.png  plots/calibration.png  plots/auroc_ci.png
    models/best.pt  models/last.pt            (state dicts of the Classifier)
    checkpoints/last.pt                       (full resumable state; /opt/ml/checkpoints on SageMaker)
    bundle/                                   (MONAI-bundle-style folder with TorchScript and ONNX)

Only rank 0 writes. Every rank takes part in training and in the (sharded, de-duplicated) evaluation.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from dicomlab_core.objectstore import ObjectStore, open_store
from dicomlab_training.checkpoint import Checkpointer, TrainState
from dicomlab_training.config import TrainConfig, checkpoint_location
from dicomlab_training.data import CachedBatches, PreparedData, decode_cache, decode_shard, prepare
from dicomlab_training.evaluate import (
    add_confidence_intervals,
    plot_auroc_intervals,
    plot_calibration,
    plot_history,
    plot_roc,
)
from dicomlab_training.loop import (
    DistInfo,
    Interrupted,
    PreemptionFlag,
    TrainCallbacks,
    amp_dtype,
    init_distributed,
    predict,
    score,
    select_device,
    sync_buffers,
    train,
)
from dicomlab_training.model import Classifier, build_model
from dicomlab_training.pushgateway import MetricsPusher

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced (URIs in the output store) and its headline numbers."""

    out: str
    best_model: str
    last_model: str
    report: str
    plots: dict[str, str]
    per_label_auroc: dict[str, float | None]
    """Test-split AUROC per label (None = undefined: one class only)."""
    macro_auroc: float | None
    micro_auroc: float | None
    skipped: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)
    bundle: str | None = None
    report_data: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _prepare_all_ranks(config: TrainConfig, dist: DistInfo, device: torch.device) -> PreparedData:
    """Every node's cache: local rank 0 pulls it (``cache_url``), every local rank decodes its own shard of
    the missing images, local rank 0 merges the shards, then all open it. The barriers are bounded by
    ``dist_timeout_seconds``."""
    if not dist.enabled:
        return prepare(config)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if dist.local_rank == 0:
        decode_cache(config).sync()
    torch_dist.barrier()
    decoded = decode_shard(config, dist.local_rank, local_world)
    logger.info("decoded this rank's shard", extra={"decoded": decoded, "rank": dist.rank})
    torch_dist.barrier()
    data = prepare(config) if dist.local_rank == 0 else None
    torch_dist.barrier()
    return data if data is not None else prepare(config, build=False)


def run(config: TrainConfig) -> RunResult:
    """Train, evaluate and package one model as described by ``config``; see the module docstring."""
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    device_type = "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    with PreemptionFlag() as preemption:  # from the start: a SIGTERM during data preparation is not lost
        dist = init_distributed(device_type, config.dist_timeout_seconds)
        preempted = False
        try:
            return _run(config, dist, select_device(config, dist), preemption)
        except Interrupted:
            preempted = True
            raise
        finally:
            # A preempted rank does not tear the process group down: ranks closing gloo at different moments
            # can abort a peer ("terminate called without an active exception", exit -6), which turns a
            # preemption into a crash; `train run` ends the process at once instead (see cli.run_command).
            if dist.enabled and torch_dist.is_initialized() and not preempted:
                torch_dist.destroy_process_group()


def _run(config: TrainConfig, dist: DistInfo, device: torch.device, preemption: PreemptionFlag) -> RunResult:
    started = time.time()
    seed_everything(config.seed)
    store = open_store(config.out)
    data = _prepare_all_ranks(config, dist, device)
    if dist.is_main:
        store.put_bytes("config.json", json.dumps(config.recorded(), indent=2).encode(), "application/json")
        store.put_bytes("split.json", json.dumps(data.split.record(), indent=1).encode(), "application/json")
    seed_everything(config.seed)
    model = build_model(config.model, len(data.table.labels))
    run_name = config.run_name or config.out.rstrip("/").rsplit("/", 1)[-1]
    pusher = MetricsPusher(config.pushgateway_url, run_name) if dist.is_main else None

    def save_best(m: torch.nn.Module, state: TrainState) -> None:
        store.put_bytes("models/best.pt", _state_bytes(m))

    def on_epoch(record: dict[str, Any]) -> None:
        print(f"epoch {record['epoch'] + 1}/{config.epochs}  loss {record['train_loss']:.4f}  "
              f"val loss {record.get('val_loss', float('nan')):.4f}  "
              f"val macro AUROC {_fmt(record.get('val_macro_auroc'))}  "
              f"{record['images_per_second']:.1f} img/s", flush=True)
        if pusher is not None:
            pusher.push_epoch(record)

    checkpointer = Checkpointer(checkpoint_location(config))
    try:
        state = train(config, data, model, dist, device, checkpointer,
                      TrainCallbacks(on_epoch=on_epoch, save_best=save_best), preemption=preemption)
    except Interrupted:
        logger.warning("training interrupted by SIGTERM; the checkpoint allows a resume")
        raise
    if dist.is_main:
        store.put_bytes("models/last.pt", _state_bytes(model))
    if dist.enabled:
        torch_dist.barrier()
    if store.exists("models/best.pt"):
        best_state = torch.load(io.BytesIO(store.get_bytes("models/best.pt")), map_location="cpu", weights_only=True)
        model.load_state_dict(best_state)
    model.to(device)
    sync_buffers(model, dist)
    dtype = amp_dtype(config, device)
    dataset = CachedBatches(data)
    test_rows = data.split.test if len(data.split.test) else data.split.val
    test: dict[str, Any] = {}
    if len(test_rows):
        idx, logits = predict(model, dataset, test_rows, config, dist, device, dtype)
        test = score(data, idx, logits, data.pos_weight, config.threshold)
    result = RunResult(out=store.url, best_model=store.uri("models/best.pt"), last_model=store.uri("models/last.pt"),
                       report=store.uri("report.json"), plots={},
                       per_label_auroc={k: v["auroc"] for k, v in test.get("per_label", {}).items()},
                       macro_auroc=test.get("macro_auroc"), micro_auroc=test.get("micro_auroc"),
                       skipped=data.skipped, history=state.history)
    if dist.is_main:
        _write_outputs(config, data, model, state, test, test_rows, store, result, started, run_name, dist.world)
        if pusher is not None and test:
            pusher.push_test(test)
    return result


def _write_outputs(config: TrainConfig, data: PreparedData, model: Classifier, state: TrainState,
                   test: dict[str, Any], test_rows: Any, store: ObjectStore, result: RunResult, started: float,
                   run_name: str, world_size: int) -> None:
    split_name = "test" if len(data.split.test) else "val"
    report = {
        "run": run_name,
        "config": config.recorded(),
        "labels": list(data.table.labels),
        "data": {"manifest_samples": len(data.table.samples), "usable_images": len(data.cache.usable),
                 "skipped": data.skipped, "decoded_this_run": data.cache.decoded_now,
                 "decode_seconds": round(data.cache.seconds, 3),
                 "split": {k: v for k, v in data.split.record().items() if k != "assignment"},
                 "label_counts": {"train": data.table.counts(data.split.train),
                                  split_name: data.table.counts(test_rows)},
                 "pos_weight": dict(zip(data.table.labels, [float(w) for w in data.pos_weight], strict=True))},
        "world_size": world_size,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "evaluation_split": split_name,
        "test": test,
        "seconds": round(time.time() - started, 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plots = {"training_curves": plot_history(state.history, folder / "training_curves.png")} \
            if state.history else {}
        if test:
            idx = np.sort(np.asarray(test_rows))
            logits = _predict_local(model, data, idx, config)
            probs = 1 / (1 + np.exp(-logits))
            plots["roc"] = plot_roc(probs, data.table.targets[idx], data.table.mask[idx], data.table.labels,
                                    folder / "roc.png", title=f"ROC ({split_name} split)")
            plots["calibration"] = plot_calibration(test, folder / "calibration.png")
            add_confidence_intervals(test, probs, data.table.targets[idx], data.table.mask[idx], data.table.labels)
            plots["auroc_ci"] = plot_auroc_intervals(test, folder / "auroc_ci.png")
        for name, path in plots.items():
            store.put_file(f"plots/{path.name}", path, "image/png")
            result.plots[name] = store.uri(f"plots/{path.name}")
    report["plots"] = result.plots
    from dicomlab_training.export import export_bundle, model_card

    if config.export:
        result.bundle = export_bundle(model.cpu(), config, data.table.labels, store, report)
        report["bundle"] = result.bundle
    store.put_bytes("model-card.md", model_card(config, data.table.labels, report).encode(), "text/markdown")
    store.put_bytes("report.json", json.dumps(report, indent=2, default=_jsonable).encode(), "application/json")
    result.report_data = report


def _predict_local(model: Classifier, data: PreparedData, idx: Any, config: TrainConfig) -> Any:
    """Logits on this process only (rank 0 plotting after the distributed evaluation)."""
    device = next(model.parameters()).device
    local = DistInfo()
    _, logits = predict(model, CachedBatches(data), idx, config, local, device, amp_dtype(config, device))
    return logits


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
