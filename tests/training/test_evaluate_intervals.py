"""Bootstrap AUROC intervals and per-label calibration, against known answers (#16 §6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dicomlab_training.evaluate import (
    _weighted_auroc,
    add_confidence_intervals,
    auroc,
    bootstrap_auroc,
    evaluate_predictions,
    plot_auroc_intervals,
)


def test_weighted_auroc_equals_auroc_of_the_repeated_sample() -> None:
    """The vectorized resample AUROC (counts as weights, ties grouped) is the AUROC of the expanded resample."""
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=120), 1)  # many ties
    targets = rng.integers(0, 2, size=120).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(scores[order])) + 1].astype(np.int64)
    counts = rng.multinomial(120, np.full(120, 1 / 120), size=25).astype(float)
    fast = _weighted_auroc(targets[order], starts, counts[:, order])
    for row, value in zip(counts, fast, strict=True):
        reps = row.astype(int)
        assert abs(value - auroc(np.repeat(scores, reps), np.repeat(targets, reps))) < 1e-12  # type: ignore[operator]


def test_perfect_separation_gives_one_with_interval_one_one() -> None:
    targets = np.r_[np.ones(30), np.zeros(70)][:, None]
    probs = np.r_[np.linspace(0.6, 0.9, 30), np.linspace(0.1, 0.5, 70)][:, None]
    report = add_confidence_intervals(evaluate_predictions(probs, targets, np.ones_like(targets), ["a"]),
                                      probs, targets, np.ones_like(targets), ["a"])
    assert report["per_label"]["a"]["auroc"] == 1.0
    assert report["per_label"]["a"]["auroc_ci95"] == [1.0, 1.0] and report["macro_auroc_ci95"] == [1.0, 1.0]


def test_interval_covers_the_true_auroc_and_shrinks_with_more_images() -> None:
    """Binormal scores with separation d: the true AUROC is Φ(d/√2)."""
    d = 1.0
    truth = 0.5 * (1 + math.erf(d / 2))  # Φ(d/√2) = ½(1 + erf(d/2))
    widths = []
    for n, seed in ((200, 1), (3000, 2)):
        rng = np.random.default_rng(seed)
        t = rng.integers(0, 2, size=n)
        s = rng.normal(size=n) + d * t
        ci = bootstrap_auroc(s[:, None], t[:, None], np.ones((n, 1)))["per_label"][0]
        assert ci is not None and ci[0] < truth < ci[1]
        widths.append(ci[1] - ci[0])
    assert widths[1] < widths[0] / 2  # ~1/√n: 15× the images → about 4× narrower


def test_uninformative_scores_cover_one_half_and_one_class_has_no_interval() -> None:
    rng = np.random.default_rng(5)
    n = 400
    targets = np.c_[rng.integers(0, 2, size=n), np.zeros(n)]
    probs = rng.uniform(size=(n, 2))
    mask = np.ones_like(probs)
    boot = bootstrap_auroc(probs, targets, mask, resamples=300)
    low, high = boot["per_label"][0]
    assert low < 0.5 < high
    assert boot["per_label"][1] is None and boot["valid_resamples"][1] == 0
    assert boot["macro"] == boot["per_label"][0]  # the undefined label is not averaged in


def test_masked_entries_are_left_out_of_the_resamples() -> None:
    rng = np.random.default_rng(6)
    n = 300
    targets = rng.integers(0, 2, size=(n, 1)).astype(float)
    probs = np.where(targets > 0, 0.8, 0.2)
    mask = np.ones_like(targets)
    wrong = rng.choice(n, size=60, replace=False)
    probs[wrong] = 1 - probs[wrong]
    mask[wrong] = 0  # the wrong predictions are unknown labels: they must not lower the AUROC
    assert bootstrap_auroc(probs, targets, mask, resamples=200)["per_label"][0] == [1.0, 1.0]


def test_per_label_ece_small_when_calibrated_large_when_not() -> None:
    rng = np.random.default_rng(7)
    n = 20000
    p = rng.uniform(size=n)
    calibrated_t = (rng.uniform(size=n) < p).astype(float)
    overconfident = np.where(p > 0.5, 0.5 + (p - 0.5) * 0.2 + 0.4, 0.5 - (0.5 - p) * 0.2 - 0.4)  # pushed to 0.1/0.9+
    probs = np.c_[p, overconfident]
    targets = np.c_[calibrated_t, calibrated_t]
    report = evaluate_predictions(probs, targets, np.ones_like(probs), ["calibrated", "overconfident"])
    assert report["per_label"]["calibrated"]["ece"] < 0.02
    assert report["per_label"]["overconfident"]["ece"] > 0.2
    # Same ranking, so the same AUROC: calibration is a separate question from discrimination.
    assert abs(report["per_label"]["calibrated"]["auroc"] - report["per_label"]["overconfident"]["auroc"]) < 1e-12


def test_interval_plot_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    targets = rng.integers(0, 2, size=(80, 3)).astype(float)
    probs = np.clip(targets * 0.5 + rng.uniform(0, 0.5, size=(80, 3)), 0, 1)
    mask = np.ones_like(targets)
    report = add_confidence_intervals(evaluate_predictions(probs, targets, mask, ["x", "y", "z"]), probs, targets,
                                      mask, ["x", "y", "z"], resamples=100)
    path = plot_auroc_intervals(report, tmp_path / "auroc_ci.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
