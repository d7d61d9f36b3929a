"""Uncertainty measures for ``dicomlab train predict`` (``--uncertainty entropy|mc-dropout|tta``).

Every measure gives each image one number in 0..1 (bits, averaged over labels) — the key
``model-uncertainty`` that the labeling queue's ``uncertainty-first`` strategy sorts by — and the
probabilities written as ``model-predictions``.

- ``entropy`` (the default): one deterministic forward pass; the mean binary entropy of the sigmoid
  outputs. It measures how close to 0.5 the model's own beliefs are (aleatoric + epistemic mixed).
- ``mc-dropout``: ``passes`` forward passes with dropout switched on at inference (Gal & Ghahramani,
  2016). The DenseNet here is trained without dropout, so dropout with probability ``dropout`` is
  applied where MONAI's DenseNet would put it (on the new features of every dense layer) through
  forward hooks; batch norm stays in eval mode. The score is the mutual information between the
  prediction and the dropout mask (BALD: entropy of the mean minus mean entropy), which is high only
  where the passes *disagree*; the probabilities are the mean over passes.
- ``tta``: ``passes`` test-time views of each image (the original, then small translations by up to
  ``shift`` of the side, edges replicated — no left/right flips: chest anatomy is not symmetric and
  the model never saw flipped films). The score is the same mutual information over views (their
  disagreement); the probabilities are the mean over views.

Which one is the default, and why, follows from the active-learning comparison in the README.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

from dicomlab_core.errors import BadRequest
from dicomlab_training.cache import as_float

MEASURES = ("entropy", "mc-dropout", "tta")
MEASURE_NAMES = {"entropy": "mean-binary-entropy", "mc-dropout": "mc-dropout-mutual-information",
                 "tta": "tta-mutual-information"}
"""The name recorded in the predict result (``uncertainty``) for each ``--uncertainty`` choice."""


@dataclass(frozen=True)
class UncertaintyOptions:
    measure: str = "entropy"
    passes: int = 8
    """Forward passes (MC-dropout) or views (TTA); ignored for entropy."""
    dropout: float = 0.2
    """Dropout probability applied at inference for MC-dropout."""
    shift: float = 0.04
    """Largest TTA translation as a share of the image side."""
    seed: int = 0
    """Seeds the dropout masks, so a rerun of the same input gives the same numbers."""

    def check(self) -> None:
        if self.measure not in MEASURES:
            raise BadRequest(f"--uncertainty {self.measure!r}: one of {', '.join(MEASURES)}")
        if self.measure != "entropy" and self.passes < 2:
            raise BadRequest(f"--passes must be at least 2 for --uncertainty {self.measure}")
        if not 0.0 < self.dropout < 1.0:
            raise BadRequest("--dropout must be between 0 and 1")
        if not 0.0 <= self.shift < 0.5:
            raise BadRequest("TTA shift must be between 0 and 0.5")

    @property
    def name(self) -> str:
        return MEASURE_NAMES[self.measure]

    @property
    def key(self) -> str:
        """Identifies the measure and its settings (resumed parts must have been made the same way)."""
        if self.measure == "entropy":
            return "entropy"
        extra = f"p{self.dropout:g}" if self.measure == "mc-dropout" else f"s{self.shift:g}"
        return f"{self.measure}:T{self.passes}:{extra}:seed{self.seed}"


# ------------------------------------------------------------------------------------------ scores


def binary_entropy(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Entropy in bits of each Bernoulli probability (element-wise)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    result: npt.NDArray[np.float64] = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return result


def mean_entropy(probs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Mean binary entropy over the last axis (labels), in 0..1."""
    result: npt.NDArray[np.float64] = np.clip(binary_entropy(probs).mean(axis=-1), 0.0, 1.0)
    return result


def mutual_information(samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """BALD for ``samples`` shaped passes × images × labels: H(mean) − mean H, averaged over labels, 0..1.

    Zero when every pass gives the same probabilities, whatever they are; one only when passes
    split between certain 0 and certain 1 for every label.
    """
    s = np.asarray(samples, dtype=np.float64)
    disagreement = binary_entropy(s.mean(axis=0)) - binary_entropy(s).mean(axis=0)
    result: npt.NDArray[np.float64] = np.clip(disagreement.mean(axis=-1), 0.0, 1.0)
    return result


# ------------------------------------------------------------------------------------------ passes


@contextmanager
def inference_dropout(model: nn.Module, p: float, generator: torch.Generator | None = None) -> Iterator[int]:
    """Dropout on the new features of every dense layer while the block runs; yields how many layers.

    MONAI's ``_DenseLayer`` computes ``layers(x)`` and concatenates it to ``x``; its own dropout (when
    built with ``dropout_prob``) is the last module of ``layers``. A forward hook on ``layers`` puts
    dropout at that same place for a net trained without it. The model must contain dense layers.
    """
    handles = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if generator is None:
            return functional.dropout(output, p, training=True)
        keep = torch.empty(output.shape, device=output.device).bernoulli_(1 - p, generator=generator)
        return output * keep.to(output.dtype) / (1 - p)

    for module in model.modules():
        layers = getattr(module, "layers", None)
        if type(module).__name__ == "_DenseLayer" and isinstance(layers, nn.Module):
            handles.append(layers.register_forward_hook(hook))
    if not handles:
        raise BadRequest("--uncertainty mc-dropout: the model has no dense layers to apply dropout to")
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def tta_offsets(passes: int, size: int, shift: float) -> list[tuple[int, int]]:
    """(dy, dx) pixel offsets of ``passes`` distinct TTA views: (0, 0) first, then rings of translations.

    The first ring moves by ``round(size * shift)`` pixels (at least 1) in 8 directions; more passes
    take rings at half, 1.5 times, twice … that distance (rings that round to one already used are
    skipped, so small images get distinct views too).
    """
    step = max(1, round(size * shift))
    ring = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
    offsets = [(0, 0)]
    scales = [1.0, 0.5, 1.5]
    farthest = 1.5
    while len(offsets) < passes:
        if not scales:
            farthest += 0.5
            scales.append(farthest)
        distance = max(1, round(step * scales.pop(0)))
        for dy, dx in ring:
            candidate = (dy * distance, dx * distance)
            if len(offsets) < passes and candidate not in offsets:
                offsets.append(candidate)
    return offsets


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (B × C × H × W) moved by (dy, dx) pixels, the uncovered border filled by edge replication."""
    if dy == 0 and dx == 0:
        return x
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    padded = functional.pad(x, pad, mode="replicate")
    h, w = x.shape[-2:]
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def _forward(model: nn.Module, images: npt.NDArray[Any], device: torch.device, batch_size: int,
             view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> npt.NDArray[np.float32]:
    outputs: list[npt.NDArray[np.float32]] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(as_float(np.asarray(images[start:start + batch_size]))).unsqueeze(1)
        x = x.to(device, non_blocking=True)
        if view is not None:
            x = view(x)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        outputs.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


@torch.inference_mode()
def score(model: nn.Module, images: npt.NDArray[Any], device: torch.device, batch_size: int,
          options: UncertaintyOptions) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(probabilities N × labels, uncertainty N) for ``images`` (N × S × S as cached) under ``options``."""
    options.check()
    if len(images) == 0:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    model.eval()
    if options.measure == "entropy":
        probs = _forward(model, images, device, batch_size)
        return probs, mean_entropy(probs)
    samples: list[npt.NDArray[np.float32]] = []
    if options.measure == "mc-dropout":
        generator = torch.Generator(device=device).manual_seed(options.seed)
        with inference_dropout(model, options.dropout, generator):
            for _ in range(options.passes):
                samples.append(_forward(model, images, device, batch_size))
    else:
        for dy, dx in tta_offsets(options.passes, int(images.shape[-1]), options.shift):
            samples.append(_forward(model, images, device, batch_size, functools.partial(translate, dy=dy, dx=dx)))
    stacked = np.stack(samples)
    mean: npt.NDArray[np.float32] = stacked.mean(axis=0).astype(np.float32)
    return mean, mutual_information(stacked)
