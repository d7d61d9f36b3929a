"""Atomic, resumable checkpoints in the object store.

A checkpoint holds everything needed to continue exactly where a run stopped: model, optimizer,
scheduler and grad-scaler states, the epoch and the step within it, the best metric so far, the
history of per-epoch metrics, and the torch / CUDA / numpy / Python RNG states. It is written with
``torch.save`` into the store's atomic writer (temp file + fsync + rename locally; a completed upload
on S3), so a kill at any moment leaves the previous checkpoint intact.

Since PyTorch 2.6 ``torch.load`` defaults to ``weights_only=True``. Everything here is stored as
tensors and plain Python values (the numpy RNG state is converted), so checkpoints load with
``weights_only=True`` and no allow-listing of numpy types.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dicomlab_core.errors import NotFound
from dicomlab_core.objectstore import ObjectStore, open_store

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LAST = "last.pt"


@dataclass
class TrainState:
    """The loop's position and bookkeeping (what is not inside a torch object)."""

    epoch: int = 0
    """The epoch in progress (0-based)."""
    step_in_epoch: int = 0
    """Optimizer steps already done in ``epoch``."""
    global_step: int = 0
    best_metric: float = float("-inf")
    """The selection metric of the best epoch so far (higher is better; see ``loop.selection_key``)."""
    best_tiebreak: float = float("-inf")
    """Its tie-break value (minus the validation loss when the metric is AUROC)."""
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    """Sum of step losses so far in ``epoch`` (so a resumed epoch reports the same mean loss)."""
    epoch_loss_steps: int = 0


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class Checkpointer:
    """Writes and reads ``last.pt`` under one object-store URL (a folder or ``s3://`` prefix)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store: ObjectStore = open_store(url)

    def save(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
             state: TrainState, config_digest: str) -> str:
        payload = {
            "format": FORMAT_VERSION,
            "config_digest": config_digest,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "global_step": state.global_step,
            "best_metric": state.best_metric,
            "best_tiebreak": state.best_tiebreak,
            "best_epoch": state.best_epoch,
            "history": state.history,
            "epoch_loss_sum": state.epoch_loss_sum,
            "epoch_loss_steps": state.epoch_loss_steps,
            "rng": rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with self.store.open_write(LAST) as handle:
            handle.write(buffer.getvalue())
        logger.info("checkpoint written", extra={"step": state.global_step, "epoch": state.epoch,
                                                 "uri": self.store.uri(LAST)})
        return self.store.uri(LAST)

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none."""
        try:
            data = self.store.get_bytes(LAST)
        except NotFound:
            return None
        payload: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"checkpoint {self.store.uri(LAST)} has unknown format {payload.get('format')}")
        return payload

    @staticmethod
    def restore(payload: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, scaler: Any) -> TrainState:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler is not None and payload.get("scaler") is not None:
            scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"])
        return TrainState(epoch=int(payload["epoch"]), step_in_epoch=int(payload["step_in_epoch"]),
                          global_step=int(payload["global_step"]), best_metric=float(payload["best_metric"]),
                          best_tiebreak=float(payload.get("best_tiebreak", float("-inf"))),
                          best_epoch=int(payload["best_epoch"]), history=list(payload["history"]),
                          epoch_loss_sum=float(payload["epoch_loss_sum"]),
                          epoch_loss_steps=int(payload["epoch_loss_steps"]))
