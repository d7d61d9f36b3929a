"""``dicomlab loop --seeds 0,1,2``: the active-learning comparison repeated over seeds, summarized honestly.

One seed of :func:`dicomlab_cli.active_loop.run_loop` is dominated by training noise (round-to-round
swings as large as the gap between strategies). Each seed here changes the held-out split, the
initial labelled set, the simulated readers' noise and the training initialization; the data set
stays the same. Per strategy and round the summary gives the mean, standard deviation, minimum and
maximum of the held-out macro AUROC over seeds, and the *paired* difference to ``random`` (same
seed, same initial set, same held-out images), with the number of seeds where the strategy was ahead.

Outputs under ``out``: ``seed-<n>/`` (each seed's full loop report), ``loop-seeds-report.json``,
``loop-seeds-report.md`` (the tables) and ``loop-seeds-auroc.png`` (mean ± sd band, seeds as thin lines).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dicomlab_cli.active_loop import LoopOptions, run_loop
from dicomlab_core.errors import BadRequest
from dicomlab_training.config import TrainConfig

BASELINE = "random"


def run_seeds(base: TrainConfig, records: Sequence[dict[str, Any]], options: LoopOptions, seeds: Sequence[int],
              on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the loop once per seed (training seed = loop seed) and write the summary over seeds."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise BadRequest("--seeds: give distinct seeds, e.g. 0,1,2")
    reports = []
    for seed in seeds:
        seed_options = dataclasses.replace(options, out=options.out / f"seed-{seed}", seed=seed)
        seed_base = dataclasses.replace(base, seed=seed)

        def tagged(row: dict[str, Any], seed: int = seed) -> None:
            if on_round is not None:
                on_round({**row, "seed": seed})

        reports.append(run_loop(seed_base, records, seed_options, on_round=tagged))
    summary = summarize(reports)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "loop-seeds-report.json").write_text(json.dumps(summary, indent=2))
    (options.out / "loop-seeds-report.md").write_text(seeds_table(summary))
    plot_seeds(summary, options.out / "loop-seeds-auroc.png")
    return summary


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": len(values), "mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4)}


def summarize(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy and round: macro AUROC over seeds, and the paired difference to random."""
    first = reports[0]
    strategies = list(first["results"])
    rounds = len(first["results"][strategies[0]])
    per_strategy: dict[str, list[dict[str, Any]]] = {}
    for strategy in strategies:
        rows = []
        for i in range(rounds):
            values = [r["results"][strategy][i]["macro_auroc"] for r in reports]
            kept = [float(v) for v in values if v is not None]
            row: dict[str, Any] = {"round": i, "labelled": first["results"][strategy][i]["labelled"],
                                   "macro_auroc": _stats(kept), "seeds": values}
            positives = [sum(r["results"][strategy][i].get("positives", {}).values()) for r in reports]
            row["positives_mean"] = round(statistics.fmean(positives), 1)
            if strategy != BASELINE and BASELINE in strategies:
                pairs = [(r["results"][strategy][i]["macro_auroc"], r["results"][BASELINE][i]["macro_auroc"])
                         for r in reports]
                diffs = [float(a) - float(b) for a, b in pairs if a is not None and b is not None]
                row["minus_random"] = _stats(diffs)
                row["ahead_of_random"] = sum(1 for d in diffs if d > 0)
            rows.append(row)
        per_strategy[strategy] = rows
    keep = ("rounds", "budget", "initial", "labels", "pool_images", "heldout_images", "readers", "uncertainty",
            "passes")
    return {**{k: first.get(k) for k in keep}, "seeds": [r["seed"] for r in reports],
            "seconds": round(sum(r["seconds"] for r in reports), 1), "results": per_strategy}


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f} ± {stats['sd']:.3f} ({stats['min']:.3f}–{stats['max']:.3f})"


def seeds_table(summary: dict[str, Any]) -> str:
    """Two Markdown tables: macro AUROC mean ± sd (min–max) per round, and the paired difference to random."""
    strategies = list(summary["results"])
    n = len(summary["seeds"])
    lines = [f"Held-out macro AUROC over {n} seeds: mean ± sd (min–max)", "",
             "| Round | Labelled images | " + " | ".join(strategies) + " |", "|---|---|" + "---|" * len(strategies)]
    for i, first in enumerate(summary["results"][strategies[0]]):
        cells = [_cell(summary["results"][s][i]["macro_auroc"]) for s in strategies]
        lines.append(f"| {first['round']} | {first['labelled']} | " + " | ".join(cells) + " |")
    others = [s for s in strategies if "minus_random" in summary["results"][s][0]]
    if others:
        lines += ["", f"Paired difference to {BASELINE} (same seed): mean ± sd, and seeds ahead of {BASELINE}", "",
                  "| Round | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
        for i, first in enumerate(summary["results"][others[0]]):
            cells = []
            for s in others:
                row = summary["results"][s][i]
                d = row["minus_random"]
                cells.append("n/a" if d["mean"] is None else
                             f"{d['mean']:+.3f} ± {d['sd']:.3f} ({row['ahead_of_random']}/{d['n']} ahead)")
            lines.append(f"| {first['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_seeds(summary: dict[str, Any], path: Path) -> Path:
    from dicomlab_training.evaluate import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for index, (strategy, rows) in enumerate(summary["results"].items()):
        color = f"C{index}"
        x = np.array([r["labelled"] for r in rows], dtype=float)
        mean = np.array([np.nan if r["macro_auroc"]["mean"] is None else r["macro_auroc"]["mean"] for r in rows])
        sd = np.array([np.nan if r["macro_auroc"]["sd"] is None else r["macro_auroc"]["sd"] for r in rows])
        ax.plot(x, mean, marker="o", color=color, label=f"{strategy} (mean ± sd)")
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15)
        for s in range(len(summary["seeds"])):
            seed_values = [np.nan if r["seeds"][s] is None else r["seeds"][s] for r in rows]
            ax.plot(x, seed_values, color=color, alpha=0.3, linewidth=0.8)
    ax.set(xlabel="labelled images", ylabel="held-out macro AUROC", ylim=(0.4, 1.0),
           title=f"Active learning vs random, {len(summary['seeds'])} seeds (budget {summary['budget']}/round)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
