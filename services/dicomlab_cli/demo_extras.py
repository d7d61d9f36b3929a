"""The demo's two comparisons: hard vs soft labels on held-out truth, and (``--loop``) active learning vs random.

**Hard vs soft labels.** The demo's job is labelled by three simulated readers, one unreliable
(:data:`dicomlab_cli.demo.READERS`). The export carries, per finding, the consolidated value and its
Dawid–Skene posterior (``confidence``). The demo trains once on the hard values (the main training
run) and once more with ``soft_labels=true`` — same seed, same patient split, same settings — and
evaluates both models on the test-split patients against the *true* findings of the synthetic set
(not against the readers' consensus, which is what is being compared): per-label AUROC and the macro
AUROC with its bootstrap 95% interval, written to ``<run dir>/demo/labels-comparison.json`` and the
demo summary.

**The loop** (``dicomlab demo --loop``): :func:`dicomlab_cli.loop_seeds.run_seeds` on the demo's own
images (fetched from Orthanc) and truth, small enough for a CPU: the tiny DenseNet at 64 px for
15 epochs (at 48 px / 8 epochs the models barely learned, see the README), random vs
uncertainty-first over a few seeds. Its report goes to
``<run dir>/demo/loop/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomlab_core.errors import BadRequest


def heldout_records(run_out: str, truth: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The truth records of the run's test-split patients (read from the run's ``split.json``).

    The split names patients by the pixel pipeline's hashed key (sha256 of ``patient:<PatientID>``),
    so the same hash of each truth record's patient finds them.
    """
    from dicomlab_core.objectstore import open_store

    split = json.loads(open_store(run_out).get_bytes("split.json"))
    assignment: dict[str, str] = split.get("assignment") or {}
    test = {key for key, name in assignment.items() if name == "test"}
    chosen = [r for r in truth
              if hashlib.sha256(f"patient:{r['patient_id']}".encode()).hexdigest()[:16] in test]
    if not chosen:
        raise BadRequest(f"no truth record is in the test split of {run_out}")
    return chosen


def evaluate_on_truth(model_uri: str, config: Any, heldout: Sequence[dict[str, Any]], labels: Sequence[str],
                      work: Path) -> dict[str, Any]:
    """Macro and per-label AUROC (with the macro's 95% interval) of ``model_uri`` on ``heldout`` vs the truth."""
    from dicomlab_cli.active_loop import _macro_on_heldout

    work.mkdir(parents=True, exist_ok=True)
    return _macro_on_heldout(model_uri, config, heldout, labels, work)


def compare_hard_soft(train_config: Any, hard: dict[str, Any], truth: Sequence[dict[str, Any]],
                      work: Path) -> dict[str, Any]:
    """Train the soft-label twin of the demo's run and compare both on the held-out truth."""
    from dicomlab_training import run

    labels = list(hard["per_label_auroc"])
    soft_out = str(train_config.out).rstrip("/") + "-soft"
    soft_config = dataclasses.replace(train_config, out=soft_out, soft_labels=True)
    soft_result = run(soft_config)
    heldout = heldout_records(hard["out"], truth)
    folder = work / "labels-comparison"
    result: dict[str, Any] = {"heldout_images": len(heldout), "labels": labels,
                              "against": "the synthetic set's true findings (not the readers' consensus)"}
    for name, model in (("hard", hard["best_model"]), ("soft", soft_result.best_model)):
        result[name] = {"model": model, **evaluate_on_truth(model, train_config, heldout, labels, folder)}
    hard_value, soft_value = result["hard"]["macro_auroc"], result["soft"]["macro_auroc"]
    result["soft_minus_hard"] = None if hard_value is None or soft_value is None else round(soft_value - hard_value, 4)
    (work / "labels-comparison.json").write_text(json.dumps(result, indent=2))
    return result


def format_comparison(result: dict[str, Any]) -> list[str]:
    """Lines for the demo summary: both macro AUROCs with intervals, and the difference."""
    def cell(part: dict[str, Any]) -> str:
        value, ci = part.get("macro_auroc"), part.get("macro_auroc_ci95")
        if value is None:
            return "undefined"
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    diff = result.get("soft_minus_hard")
    return [f"hard vs soft labels, held-out macro AUROC against the true findings "
            f"({result['heldout_images']} test-split images):",
            f"  hard (consolidated values):        {cell(result['hard'])}",
            f"  soft (Dawid–Skene posteriors):     {cell(result['soft'])}",
            f"  soft − hard:                       {'n/a' if diff is None else f'{diff:+.3f}'}"]


@dataclasses.dataclass(frozen=True)
class DemoLoopSettings:
    """The demo's loop: small enough for a CPU (the tiny DenseNet, all labelled images used for training)."""

    rounds: int = 4
    budget: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 64
    epochs: int = 15
    strategies: tuple[str, ...] = ("uncertainty-first", "random")


def fit_budget(settings: DemoLoopSettings, images: int, heldout_fraction: float = 0.3) -> DemoLoopSettings:
    """Shrink the budget so the initial set plus every round fits the pool (a small demo set still runs)."""
    pool = int(images * (1 - heldout_fraction)) - 2  # patients, not images, are held out: keep a margin
    budget = max(1, min(settings.budget, pool // (settings.rounds + 1)))
    return dataclasses.replace(settings, budget=budget)


def run_demo_loop(train_config: Any, truth: Sequence[dict[str, Any]], work: Path,
                  settings: DemoLoopSettings) -> dict[str, Any]:
    """The active-learning comparison on the demo's images (from Orthanc) and truth; returns its summary."""
    from dicomlab_cli.active_loop import LoopOptions
    from dicomlab_cli.loop_cli import VISIBLE_LABELS
    from dicomlab_cli.loop_seeds import run_seeds, seeds_table
    from dicomlab_training.config import ModelConfig

    out = work / "loop"
    config = dataclasses.replace(
        train_config, out=str(out / "unused"), pixels=dataclasses.replace(train_config.pixels, size=settings.size),
        model=ModelConfig(arch="densenet-tiny"), epochs=settings.epochs, batch_size=8, lr=0.01, val_fraction=0.0,
        augment=dataclasses.replace(train_config.augment, enabled=False), pushgateway_url="", export=False)
    labels = tuple(VISIBLE_LABELS.split(","))
    options = LoopOptions(out=out, rounds=settings.rounds, budget=settings.budget, labels=labels,
                          strategies=settings.strategies)

    def show(row: dict[str, Any]) -> None:
        value = row["macro_auroc"]
        print(f"    seed {row['seed']} {row['strategy']:>17} round {row['round']}  {row['labelled']:>3} labelled  "
              f"held-out macro AUROC {'n/a' if value is None else f'{value:.3f}'}", flush=True)

    summary = run_seeds(config, list(truth), options, settings.seeds, on_round=show)
    for line in seeds_table(summary).splitlines():
        print(f"    {line}")
    return {"report": str(out / "loop-seeds-report.json"), "table": str(out / "loop-seeds-report.md"),
            "plot": str(out / "loop-seeds-auroc.png"), "seconds": summary["seconds"]}
