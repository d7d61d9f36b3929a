"""Metrics for multi-label predictions with masked (uncertain/missing) labels, plots, and the JSON report.

- Per-label AUROC from ranks (ties get their average rank: the Mann–Whitney statistic), over the
  samples where that label is known. A label with only one class present has no AUROC: it is
  reported as undefined and left out of the macro average (never counted as 0.5 or NaN).
- Macro AUROC (mean of the defined per-label values) and micro AUROC (all known label/sample pairs).
- Sensitivity and specificity at a threshold, per label.
- Calibration: expected calibration error over equal-width probability bins and the reliability table,
  over all known label/sample pairs and per label.
- Uncertainty of the estimates: a percentile bootstrap over images (:func:`bootstrap_auroc`, 1000
  resamples, fixed seed) gives a 95% interval per label and for the macro AUROC. Resampling images
  (not label/image pairs) keeps the correlation between one image's findings.
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
                            "sensitivity": sens, "specificity": spec, "ece": calibration(pi, ti)["ece"],
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


BOOTSTRAP_RESAMPLES = 1000
"""Bootstrap resamples for the confidence intervals (percentile method)."""
BOOTSTRAP_SEED = 20240601
"""Fixed, so a report's intervals are reproducible."""


def _weighted_auroc(order_targets: npt.NDArray[np.bool_], group_starts: npt.NDArray[np.int64],
                    weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """AUROC for each row of ``weights`` (resample counts, B × n, in ascending-score order); NaN if one class."""
    pos = weights * order_targets[None, :]
    neg = weights - pos
    pos_g = np.add.reduceat(pos, group_starts, axis=1)  # per distinct score: ties share a group
    neg_g = np.add.reduceat(neg, group_starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (below + 0.5 * neg_g)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    out: npt.NDArray[np.float64] = np.divide(numerator, denominator, out=np.full(len(weights), np.nan),
                                             where=denominator > 0)
    return out


def bootstrap_auroc(probs: npt.ArrayLike, targets: npt.ArrayLike, mask: npt.ArrayLike, *,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95,
                    chunk: int = 200) -> dict[str, Any]:
    """Percentile-bootstrap intervals of each label's AUROC and of the macro AUROC.

    Each resample draws the N images with replacement (multinomial counts); each label uses the
    resampled images where it is known. A resample where a label has one class only does not count
    for that label (the number of valid resamples is reported); an interval needs at least half of
    the resamples to be valid, else it is None. The macro value of a resample is the mean over the
    labels whose point estimate is defined (and that are defined in that resample).
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64) > 0.5
    m = np.asarray(mask) > 0.5
    n, n_labels = p.shape
    rng = np.random.default_rng(seed)
    values = np.full((resamples, n_labels), np.nan)
    prepared = []
    for i in range(n_labels):
        known = np.flatnonzero(m[:, i])
        order = known[np.argsort(p[known, i], kind="mergesort")]
        sorted_scores = p[order, i]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1].astype(np.int64) if len(order) else None
        prepared.append((order, t[order, i], starts))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64) if n else np.zeros((size, 0))
        for i, (order, ordered_t, starts) in enumerate(prepared):
            if starts is not None and ordered_t.any() and not ordered_t.all():
                values[done:done + size, i] = _weighted_auroc(ordered_t, starts, counts[:, order])
        done += size
    tail = (1 - level) / 2 * 100

    def interval(column: npt.NDArray[np.float64]) -> list[float] | None:
        valid = column[~np.isnan(column)]
        if len(valid) < resamples / 2:
            return None
        low, high = np.percentile(valid, [tail, 100 - tail])
        return [round(float(low), 6), round(float(high), 6)]

    point_defined = [i for i, (_, ordered_t, _) in enumerate(prepared) if ordered_t.any() and not ordered_t.all()]
    macro = np.full(resamples, np.nan)
    if point_defined:
        block = values[:, point_defined]
        has = ~np.isnan(block).all(axis=1)
        macro[has] = np.nanmean(block[has], axis=1)
    return {"per_label": [interval(values[:, i]) for i in range(n_labels)],
            "valid_resamples": [int((~np.isnan(values[:, i])).sum()) for i in range(n_labels)],
            "macro": interval(macro), "resamples": resamples, "level": level, "seed": seed,
            "method": "percentile bootstrap over images"}


def add_confidence_intervals(metrics: dict[str, Any], probs: npt.ArrayLike, targets: npt.ArrayLike,
                             mask: npt.ArrayLike, labels: Sequence[str],
                             resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """``metrics`` (from :func:`evaluate_predictions`) with ``auroc_ci95`` per label and ``macro_auroc_ci95``."""
    boot = bootstrap_auroc(probs, targets, mask, resamples=resamples)
    for label, ci, valid in zip(labels, boot["per_label"], boot["valid_resamples"], strict=True):
        metrics["per_label"][label]["auroc_ci95"] = ci
        metrics["per_label"][label]["bootstrap_valid_resamples"] = valid
    metrics["macro_auroc_ci95"] = boot["macro"]
    metrics["bootstrap"] = {k: boot[k] for k in ("resamples", "level", "seed", "method")}
    return metrics


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


def plot_auroc_intervals(metrics: dict[str, Any], path: Path, title: str = "AUROC per label (test)") -> Path:
    """Per-label AUROC with its bootstrap 95% interval, and the per-label ECE, side by side."""
    plt = _pyplot()
    items = [(label, v) for label, v in metrics["per_label"].items() if v.get("auroc") is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.35 * len(items) + 1.5)), sharey=True)
    y = np.arange(len(items))
    values = np.array([v["auroc"] for _, v in items], dtype=np.float64)
    lows = np.array([(v.get("auroc_ci95") or [v["auroc"]] * 2)[0] for _, v in items], dtype=np.float64)
    highs = np.array([(v.get("auroc_ci95") or [v["auroc"]] * 2)[1] for _, v in items], dtype=np.float64)
    left.errorbar(values, y, xerr=[values - lows, highs - values], fmt="o", capsize=3)
    left.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    left.set_yticks(y, [label for label, _ in items], fontsize=8)
    macro, ci = metrics.get("macro_auroc"), metrics.get("macro_auroc_ci95")
    left.set(xlim=(0, 1), xlabel="AUROC (95% bootstrap interval)",
             title=f"{title}: macro {macro:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
             if macro is not None else title)
    right.barh(y, [_nan(v.get("ece")) for _, v in items])
    right.set(xlabel="expected calibration error (10 bins)", title="Calibration per label")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
