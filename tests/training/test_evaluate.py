"""Metrics against brute-force definitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dicomlab_training.evaluate import (
    auroc,
    calibration,
    evaluate_predictions,
    plot_calibration,
    plot_history,
    plot_roc,
    roc_curve,
)


def pairwise_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over every pair."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_auroc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        targets = rng.integers(0, 2, size=200)
        scores = np.round(rng.normal(size=200) + targets * rng.uniform(0, 2), 1)  # rounding makes ties
        assert abs(auroc(scores, targets) - pairwise_auroc(scores, targets)) < 1e-12  # type: ignore[operator]
    assert auroc([0.1, 0.2, 0.3], [0, 0, 0]) is None
    assert auroc([0.9, 0.1], [1, 0]) == 1.0 and auroc([0.1, 0.9], [1, 0]) == 0.0


def test_roc_curve_ends_and_area() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, size=300)
    scores = rng.normal(size=300) + targets
    fpr, tpr = roc_curve(scores, targets)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert abs(np.trapezoid(tpr, fpr) - auroc(scores, targets)) < 1e-9  # type: ignore[operator]


def test_undefined_labels_are_reported_not_averaged() -> None:
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.3, 0.6], [0.8, 0.4, 0.2], [0.3, 0.1, 0.9]])
    targets = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=float)  # third label: row 2 masked
    report = evaluate_predictions(probs, targets, mask, ["a", "b", "c"], threshold=0.5)
    assert report["per_label"]["a"]["auroc"] == 1.0
    assert report["per_label"]["b"]["auroc"] is None and report["undefined_labels"] == ["b"]
    assert report["per_label"]["c"]["auroc"] == 1.0  # the masked wrong prediction is ignored
    assert report["macro_auroc"] == 1.0
    assert report["per_label"]["a"]["sensitivity"] == 1.0 and report["per_label"]["a"]["specificity"] == 1.0
    assert report["per_label"]["b"]["sensitivity"] is None and report["per_label"]["b"]["specificity"] == 1.0
    m = mask > 0
    assert abs(report["micro_auroc"] - pairwise_auroc(probs[m], targets[m])) < 1e-12


def test_calibration_error() -> None:
    perfect = calibration(np.full(1000, 0.25), np.r_[np.ones(250), np.zeros(750)])
    assert perfect["ece"] < 1e-9 and perfect["bins"][0]["count"] == 1000
    overconfident = calibration(np.full(100, 0.95), np.r_[np.ones(50), np.zeros(50)])
    assert abs(overconfident["ece"] - 0.45) < 1e-9


def test_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 2, size=(50, 2)).astype(float)
    probs = np.clip(targets * 0.6 + rng.uniform(0, 0.4, size=(50, 2)), 0, 1)
    mask = np.ones_like(targets)
    report = evaluate_predictions(probs, targets, mask, ["x", "y"])
    history: list[dict[str, Any]] = [{"epoch": 0, "train_loss": 1.0, "val_loss": 0.9, "val_macro_auroc": 0.6, "val_micro_auroc": None},
               {"epoch": 1, "train_loss": 0.8, "val_loss": 0.7, "val_macro_auroc": 0.7, "val_micro_auroc": 0.7}]
    for path in (plot_roc(probs, targets, mask, ["x", "y"], tmp_path / "roc.png"),
                 plot_history(history, tmp_path / "curves.png"),
                 plot_calibration(report, tmp_path / "cal.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
