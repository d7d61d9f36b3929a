"""Metrics for multi-label predictions with masked (uncertain/missing) labels, plots, and the JSON report.

- Per-label AUROC from ranks (ties get their average rank: the Mann–Whitney statistic), over the
  samples where that label is known. A label with only one class present has no AUROC: it is
  reported as undefined and left out of the macro average (never counted as 0.5 or NaN).
- Macro AUROC (mean of the defined per-label values) and micro AUROC (all known label/sample pairs).
- Sensitivity and specificity at a threshold, per label.
- Calibration: expected calibration error over equal-width probability bins and the reliability table.
- PNGs (matplotlib, Agg backend): ROC curves, training curves, reliability diagram.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


def auroc(scores: npt.ArrayLike, targets: npt.ArrayLike) -> float | None:
    """Area under the ROC curve, or None when only one class is present."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets).ravel() > 0.5
    positives = int(t.sum())
    negatives = t.size - positives
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    ranks = average_rank[inverse]
    return float((ranks[t].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_curve(scores: npt.ArrayLike, targets: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = (np.asarray(targets).ravel() > 0.5).astype(np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(t)[last_of_group]
    fp = np.cumsum(1 - t)[last_of_group]
    p, n = max(t.sum(), 1.0), max((1 - t).sum(), 1.0)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p]


def calibration(probs: npt.ArrayLike, targets: npt.ArrayLike, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and the reliability table over equal-width bins."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(targets, dtype=np.float64).ravel()
    if p.size == 0:
        return {"ece": None, "bins": []}
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    conf = np.bincount(which, weights=p, minlength=bins)
    acc = np.bincount(which, weights=t, minlength=bins)
    table = []
    ece = 0.0
    for b in range(bins):
        if count[b] == 0:
            continue
        mean_p, frac = conf[b] / count[b], acc[b] / count[b]
        ece += count[b] / p.size * abs(mean_p - frac)
        table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(count[b]),
                      "mean_probability": round(float(mean_p), 6), "fraction_positive": round(float(frac), 6)})
    return {"ece": float(ece), "bins": table}


def evaluate_predictions(probs: npt.ArrayLike, targets: npt.ArrayLike, mask: npt.ArrayLike,
                         labels: Sequence[str], threshold: float = 0.5) -> dict[str, Any]:
    """Every metric for predictions ``probs`` (N × L) against ``targets`` where ``mask`` is 1."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    m = np.asarray(mask) > 0.5
    per_label: dict[str, dict[str, Any]] = {}
    defined: list[float] = []
    for i, label in enumerate(labels):
        known = m[:, i]
        pi, ti = p[known, i], t[known, i]
        positives, negatives = int((ti > 0.5).sum()), int((ti <= 0.5).sum())
        value = auroc(pi, ti)
        predicted = pi >= threshold
        sens = float((predicted & (ti > 0.5)).sum() / positives) if positives else None
        spec = float((~predicted & (ti <= 0.5)).sum() / negatives) if negatives else None
        per_label[label] = {"auroc": value, "positives": positives, "negatives": negatives,
                            "sensitivity": sens, "specificity": spec,
                            "status": "ok" if value is not None else "undefined: only one class present"}
        if value is not None:
            defined.append(value)
    micro = auroc(p[m], t[m]) if m.any() else None
    return {
        "samples": int(p.shape[0]),
        "threshold": threshold,
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "micro_auroc": micro,
        "defined_labels": [label for label in labels if per_label[label]["auroc"] is not None],
        "undefined_labels": [label for label in labels if per_label[label]["auroc"] is None],
        "per_label": per_label,
        "calibration": calibration(p[m], t[m]),
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(probs: npt.ArrayLike, targets: npt.ArrayLike, mask: npt.ArrayLike, labels: Sequence[str],
             path: Path, title: str = "ROC (test)") -> Path:
    plt = _pyplot()
    p, t, m = np.asarray(probs), np.asarray(targets), np.asarray(mask) > 0.5
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, label in enumerate(labels):
        value = auroc(p[m[:, i], i], t[m[:, i], i])
        if value is None:
            continue
        fpr, tpr = roc_curve(p[m[:, i], i], t[m[:, i], i])
        ax.plot(fpr, tpr, linewidth=1.2, label=f"{label} ({value:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h.get("train_loss") for h in history], marker="o", label="train loss")
    left.plot(epochs, [h.get("val_loss") for h in history], marker="o", label="validation loss")
    left.set(xlabel="epoch", ylabel="masked BCE", title="Loss")
    left.legend()
    right.plot(epochs, [_nan(h.get("val_macro_auroc")) for h in history], marker="o", label="macro AUROC")
    right.plot(epochs, [_nan(h.get("val_micro_auroc")) for h in history], marker="o", label="micro AUROC")
    right.set(xlabel="epoch", ylabel="AUROC", title="Validation AUROC", ylim=(0.0, 1.0))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_calibration(metrics: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    table = metrics["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    ax.plot([b["mean_probability"] for b in table], [b["fraction_positive"] for b in table], marker="o")
    ece = metrics["calibration"]["ece"]
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE {ece:.3f})" if ece is not None else "Reliability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
