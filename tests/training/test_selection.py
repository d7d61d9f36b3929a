"""Which epoch becomes models/best.pt: AUROC first, validation loss breaks ties (a saturated AUROC)."""

from __future__ import annotations

from typing import Any

import pytest

from dicomlab_core.errors import ConfigError
from dicomlab_training import load_train_config
from dicomlab_training.loop import selection_key


def best_epoch(history: list[dict[str, Any]], select_metric: str) -> int:
    """The loop's rule: an epoch replaces the best only when its key is strictly greater."""
    best, best_key = -1, (float("-inf"), float("-inf"))
    for record in history:
        key = selection_key(record, select_metric)
        if key > best_key:
            best, best_key = record["epoch"], key
    return best


def epochs(*pairs: tuple[float | None, float]) -> list[dict[str, Any]]:
    return [{"epoch": i, "train_loss": 1.0, "val_macro_auroc": auroc, "val_loss": loss}
            for i, (auroc, loss) in enumerate(pairs)]


def test_saturated_auroc_goes_to_the_lowest_validation_loss() -> None:
    history = epochs((1.0, 0.60), (1.0, 0.21), (1.0, 0.35), (0.99, 0.10))
    assert best_epoch(history, "val_macro_auroc") == 1


def test_a_higher_auroc_still_wins_over_a_lower_loss() -> None:
    history = epochs((0.80, 0.30), (0.85, 0.40), (0.85, 0.45))
    assert best_epoch(history, "val_macro_auroc") == 1


def test_equal_auroc_and_loss_keep_the_earlier_epoch() -> None:
    assert best_epoch(epochs((0.9, 0.3), (0.9, 0.3)), "val_macro_auroc") == 0


def test_val_loss_selection_ignores_auroc_except_for_ties() -> None:
    history = epochs((0.95, 0.30), (0.80, 0.20), (0.90, 0.20))
    assert best_epoch(history, "val_loss") == 2


def test_undefined_auroc_falls_back_to_the_loss() -> None:
    history = epochs((None, 0.5), (None, 0.4), (None, 0.45))
    assert best_epoch(history, "val_macro_auroc") == 1


def test_without_a_validation_split_the_training_loss_decides() -> None:
    history = [{"epoch": 0, "train_loss": 0.5}, {"epoch": 1, "train_loss": 0.3}, {"epoch": 2, "train_loss": 0.4}]
    assert best_epoch(history, "val_macro_auroc") == 1


def test_select_metric_is_validated() -> None:
    assert load_train_config(overrides={"select_metric": "val_loss"}, environ={}).select_metric == "val_loss"
    with pytest.raises(ConfigError, match="select_metric"):
        load_train_config(overrides={"select_metric": "accuracy"}, environ={})
