"""``dicomlab loop``: active learning that has to prove itself against random selection on the same budget.

For each strategy (``uncertainty-first`` and ``random`` by default; ``uncertainty-first/mc-dropout`` and
``uncertainty-first/tta`` rank by another predict uncertainty measure), starting from the same
randomly chosen initial labelled set, each round:

1. **train** (:func:`dicomlab_training.runner.run`) on the consolidated labels so far;
2. **evaluate** the model on a fixed held-out set (patients never offered for labelling) against the
   true findings: macro AUROC with its bootstrap 95% interval;
3. **predict** (:func:`dicomlab_training.predict.run_predict`) on the unlabelled pool, which writes
   ``model-uncertainty`` into a predictions manifest;
4. **open the next labelling job** from that manifest with the strategy (the labeling service's real
   job creation and queue, on a SQLite database under ``out``) and take ``budget`` images from it;
5. **label** them with simulated readers (the answer model of :mod:`dicomlab_labeling.workflow.simulate`: each
   finding reported correctly with the reader's accuracy, one unreliable reader) and **consolidate**
   the answers with the service's consolidation (Dawid–Skene once the batch is large enough).

Both strategies see the same simulated answers for the same image (the reader noise is seeded by
image), so the comparison is between the images chosen, not between lucky draws of reader noise.
Round 0 (the initial set) is trained once and shared. Outputs under ``out``: ``loop-report.json``,
``loop-report.md`` (the table) and ``loop-auroc.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth import dump_line, output_manifest_line
from dicomlab_training.config import TrainConfig
from dicomlab_training.evaluate import add_confidence_intervals, evaluate_predictions

logger = logging.getLogger(__name__)

STRATEGIES = ("uncertainty-first", "random")
"""The queue strategies; ``uncertainty-first/<measure>`` picks the predict uncertainty measure (entropy,
mc-dropout or tta; plain ``uncertainty-first`` is entropy)."""
DEFAULT_READERS: tuple[tuple[str, float], ...] = (("reader-a", 0.95), ("reader-b", 0.9), ("reader-unreliable", 0.6))


@dataclass(frozen=True)
class LoopOptions:
    out: Path
    rounds: int
    budget: int
    labels: tuple[str, ...]
    initial: int = 0
    """Images in the initial labelled set (0 = ``budget``)."""
    heldout_fraction: float = 0.3
    """Share of patients kept out of the pool for evaluation."""
    seed: int = 0
    readers: tuple[tuple[str, float], ...] = DEFAULT_READERS
    strategies: tuple[str, ...] = STRATEGIES
    passes: int = 8
    """Forward passes / views for the mc-dropout and tta measures."""


def parse_strategy(name: str) -> tuple[str, str]:
    """``uncertainty-first/tta`` → (``uncertainty-first``, ``tta``); ``random`` → (``random``, ``entropy``)."""
    from dicomlab_training.uncertainty import MEASURES

    queue, _, measure = name.partition("/")
    if queue not in STRATEGIES or (measure and (queue != "uncertainty-first" or measure not in MEASURES)):
        raise BadRequest(f"strategy {name!r}: one of {', '.join(STRATEGIES)}, or uncertainty-first/<measure> "
                         f"with a measure of {', '.join(MEASURES)}")
    return queue, measure or "entropy"


def split_pool(records: Sequence[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]],
                                                                                        list[dict[str, Any]]]:
    """(pool, held-out) by patient: a keyed hash orders patients, the first ``fraction`` are held out."""
    patients = sorted({str(r["patient_id"]) for r in records},
                      key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    held = set(patients[:max(1, round(len(patients) * fraction))])
    pool = [r for r in records if str(r["patient_id"]) not in held]
    heldout = [r for r in records if str(r["patient_id"]) in held]
    if not pool or not heldout:
        raise BadRequest("too few patients to keep a held-out set apart from the pool")
    return pool, heldout


def input_line(record: dict[str, Any]) -> dict[str, Any]:
    return {"source": record["sop_uid"], "sop-instance-uid": record["sop_uid"], "study-uid": record["study_uid"],
            "series-uid": record["series_uid"]}


def simulated_answers(record: dict[str, Any], labels: Sequence[str], readers: Sequence[tuple[str, float]],
                      seed: int) -> list[tuple[str, Any]]:
    """Every simulated reader's answer for one image; the noise is seeded by (seed, image, reader)."""
    from dicomlab_labeling.workflow.simulate import noisy_answer

    answers = []
    for name, accuracy in readers:
        rng = random.Random(f"{seed}:{record['sop_uid']}:{name}")
        answers.append((name, {"findings": noisy_answer(record["findings"], labels, accuracy, rng)}))
    return answers


def labelled_manifest(records: Sequence[dict[str, Any]], labels: Sequence[str],
                      readers: Sequence[tuple[str, float]], seed: int, path: Path) -> Path:
    """Consolidate the simulated readers' answers for ``records`` into an output manifest at ``path``."""
    from dicomlab_labeling.config import ConsolidationSettings
    from dicomlab_labeling.consensus.consolidation import collect, consolidate

    items = [collect(r["sop_uid"], simulated_answers(r, labels, readers, seed), labels) for r in records]
    result = consolidate(items, labels, ConsolidationSettings())
    lines = [dump_line(output_manifest_line(input_line(r), "readers", label, job_name="loop"))
             for r, label in zip(records, result.labels, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class Selector:
    """Opens labelling jobs in the labeling service's database and takes ``budget`` images from each."""

    def __init__(self, folder: Path) -> None:
        from dicomlab_labeling.workflow.db import Database
        from dicomlab_labeling.workflow.migrate import upgrade

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = Database(f"sqlite:///{folder / 'labeling.db'}")
        upgrade(self.db)

    def select(self, job_name: str, predictions: Path, strategy: str, budget: int,
               labels: Sequence[str]) -> list[str]:
        """Create the job from ``predictions`` with ``strategy``; the SOP UIDs of the first ``budget`` images."""
        from sqlalchemy import select

        from dicomlab_core.objectstore import open_store
        from dicomlab_labeling.workflow.jobs import create_job
        from dicomlab_labeling.workflow.models import User
        from dicomlab_labeling.workflow.queue import Queue

        store = open_store(str(predictions.parent))
        with self.db.session() as session:
            job = create_job(session, name=job_name, manifest_uri=predictions.name, store=store, orthanc=None,
                             default_labels=tuple(labels), labels=list(labels), readers_per_image=1,
                             strategy=strategy)
            user = session.scalar(select(User).where(User.username == "loop-selector"))
            if user is None:
                user = User(username="loop-selector")
                session.add(user)
                session.flush()
            held = Queue(postgres=False).next_assignments(session, job, user, lookahead=budget - 1)
            return [a.task.sop_instance_uid for a in held]

    def close(self) -> None:
        self.db.dispose()


def _macro_on_heldout(model_uri: str, config: TrainConfig, heldout: Sequence[dict[str, Any]],
                      labels: Sequence[str], work: Path) -> dict[str, Any]:
    from dicomlab_training.predict import PredictOptions, run_predict

    manifest = work / "heldout.manifest"
    if not manifest.exists():
        manifest.write_text("\n".join(json.dumps(input_line(r)) for r in heldout) + "\n")
    out = work / f"heldout-{hashlib.sha256(model_uri.encode()).hexdigest()[:10]}.manifest"
    run_predict(config, PredictOptions(model=model_uri, manifest=str(manifest), out=str(out)))
    by_uid = {}
    for raw in out.read_text().splitlines():
        line = json.loads(raw)
        by_uid[line["sop-instance-uid"]] = line["model-predictions"]
    kept = [r for r in heldout if r["sop_uid"] in by_uid]
    probs = np.array([[by_uid[r["sop_uid"]][label] for label in labels] for r in kept], dtype=np.float64)
    targets = np.array([[float(r["findings"].get(label, 0)) for label in labels] for r in kept], dtype=np.float64)
    mask = np.ones_like(targets)
    metrics = add_confidence_intervals(evaluate_predictions(probs, targets, mask, labels), probs, targets, mask,
                                       labels)
    return {"macro_auroc": metrics["macro_auroc"], "macro_auroc_ci95": metrics["macro_auroc_ci95"],
            "per_label_auroc": {k: v["auroc"] for k, v in metrics["per_label"].items()}, "images": len(kept)}


def run_loop(base: TrainConfig, records: Sequence[dict[str, Any]], options: LoopOptions,
             on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every strategy for ``options.rounds`` rounds; returns (and writes) the report."""
    from dicomlab_training.predict import PredictOptions, run_predict
    from dicomlab_training.runner import run

    if options.rounds < 1 or options.budget < 1:
        raise BadRequest("--rounds and --budget must be at least 1")
    from dicomlab_training.uncertainty import UncertaintyOptions

    for strategy in options.strategies:
        parse_strategy(strategy)
    started = time.time()
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    labels = list(options.labels)
    pool, heldout = split_pool(records, options.heldout_fraction, options.seed)
    initial_size = options.initial or options.budget
    if initial_size + options.rounds * options.budget > len(pool):
        raise BadRequest(f"the pool has {len(pool)} images: too few for {initial_size} initial + "
                         f"{options.rounds} rounds × {options.budget}")
    initial = random.Random(options.seed).sample([r["sop_uid"] for r in pool], initial_size)
    by_uid = {r["sop_uid"]: r for r in pool}
    selector = Selector(out / "labeling")
    trained: dict[str, dict[str, Any]] = {}  # labelled-set hash → round result (round 0 is shared)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in options.strategies}
    try:
        for strategy in options.strategies:
            labelled = list(initial)
            for round_number in range(options.rounds + 1):
                key = hashlib.sha256("\n".join(sorted(labelled)).encode()).hexdigest()[:12]
                queue_strategy, measure = parse_strategy(strategy)
                folder = out / strategy.replace("/", "-") / f"round-{round_number}"
                if key not in trained:
                    manifest = labelled_manifest([by_uid[u] for u in labelled], labels, options.readers,
                                                 options.seed, folder / "labels.manifest")
                    config = dataclasses.replace(base, manifest=str(manifest), out=str(folder / "run"),
                                                 labels=tuple(labels), test_fraction=0.0, export=False,
                                                 resume=False, seed=base.seed + round_number)
                    result = run(config)
                    model_uri = result.best_model
                    evaluation = _macro_on_heldout(model_uri, base, heldout, labels, out)
                    trained[key] = {"model": model_uri, **evaluation}
                row = {"strategy": strategy, "round": round_number, "labelled": len(labelled),
                       "positives": positives([by_uid[u] for u in labelled], labels), **trained[key]}
                results[strategy].append(row)
                logger.info("loop round", extra={k: v for k, v in row.items() if not isinstance(v, dict)})
                if on_round is not None:
                    on_round(row)
                if round_number == options.rounds:
                    break
                unlabelled = [r for r in pool if r["sop_uid"] not in set(labelled)]
                pool_manifest = folder / "pool.manifest"
                pool_manifest.parent.mkdir(parents=True, exist_ok=True)
                pool_manifest.write_text("\n".join(json.dumps(input_line(r)) for r in unlabelled) + "\n")
                predictions = folder / "pool-predictions.manifest"
                scoring = UncertaintyOptions(measure=measure, passes=options.passes,
                                             seed=options.seed * 1000 + round_number)
                run_predict(base, PredictOptions(model=trained[key]["model"], manifest=str(pool_manifest),
                                                 out=str(predictions), uncertainty=scoring))
                chosen = selector.select(f"loop-{strategy.replace('/', '-')}-round-{round_number + 1}", predictions,
                                         queue_strategy, options.budget, labels)
                labelled += [u for u in chosen if u not in labelled]
    finally:
        selector.close()
    report = {"rounds": options.rounds, "budget": options.budget, "initial": initial_size, "labels": labels,
              "pool_images": len(pool), "heldout_images": len(heldout), "readers": dict(options.readers),
              "seed": options.seed, "results": results, "seconds": round(time.time() - started, 1),
              "uncertainty": {s: parse_strategy(s)[1] for s in options.strategies
                              if parse_strategy(s)[0] == "uncertainty-first"},
              "passes": options.passes}
    (out / "loop-report.json").write_text(json.dumps(report, indent=2))
    (out / "loop-report.md").write_text(table(report))
    plot_loop(report, out / "loop-auroc.png")
    return report


def positives(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, int]:
    """True positives per label among ``records`` (what a strategy's picks contain, whatever the readers said)."""
    return {label: sum(1 for r in records if r["findings"].get(label)) for label in labels}


def table(report: dict[str, Any]) -> str:
    """The held-out macro AUROC per round and strategy as a Markdown table."""
    strategies = list(report["results"])
    lines = ["| Round | Labelled images | " + " | ".join(f"{s} macro AUROC [95% CI]" for s in strategies) + " |",
             "|---|---|" + "---|" * len(strategies)]
    for i, first in enumerate(report["results"][strategies[0]]):
        cells = []
        for s in strategies:
            row = report["results"][s][i]
            ci = row.get("macro_auroc_ci95")
            value = row.get("macro_auroc")
            cells.append("n/a" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {first['round']} | {first['labelled']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_loop(report: dict[str, Any], path: Path) -> Path:
    from dicomlab_training.evaluate import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in report["results"].items():
        x = [r["labelled"] for r in rows]
        y = [np.nan if r["macro_auroc"] is None else r["macro_auroc"] for r in rows]
        low = [y_ - (r["macro_auroc_ci95"] or [y_, y_])[0] for r, y_ in zip(rows, y, strict=True)]
        high = [(r["macro_auroc_ci95"] or [y_, y_])[1] - y_ for r, y_ in zip(rows, y, strict=True)]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=strategy)
    ax.set(xlabel="labelled images", ylabel="held-out macro AUROC", ylim=(0.0, 1.0),
           title=f"Active learning vs random (budget {report['budget']} per round)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
