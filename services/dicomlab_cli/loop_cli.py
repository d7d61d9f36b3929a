"""``dicomlab loop``: the active-learning comparison of :mod:`dicomlab_cli.active_loop` from the command line.

It lives in the CLI because it drives two packages, training and the labeling service's queue, and
only the top layer may import both.

Examples::

    dicomlab loop --rounds 4 --budget 20 --synthetic 240 --out runs/loop --size 48 --epochs 8 \\
        --set model.arch=densenet-tiny
    dicomlab loop --rounds 3 --budget 50 --dicom-dir ./study-set --truth ./study-set/ground_truth.json \\
        --labels "Cardiomegaly,Pleural Effusion" --out runs/loop
    dicomlab loop --rounds 4 --budget 20 --synthetic 300 --seeds 0,1,2 \
        --strategies random,uncertainty-first,uncertainty-first/mc-dropout,uncertainty-first/tta ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VISIBLE_LABELS = "Cardiomegaly,Pleural Effusion,Support Devices"
"""Findings the synthetic generator draws clearly enough to learn at small sizes (the default label set)."""


def loop_command(args: argparse.Namespace) -> int:
    import dataclasses

    from dicomlab_cli.active_loop import STRATEGIES, LoopOptions, parse_strategy, run_loop, table
    from dicomlab_cli.loop_seeds import run_seeds, seeds_table
    from dicomlab_core.errors import BadRequest
    from dicomlab_core.synth import SynthConfig, load_ground_truth, write_study_set
    from dicomlab_training.cli import config_from_args

    out = Path(args.out or "runs/loop")
    seed = args.seed if args.seed is not None else 0
    if args.synthetic:
        data = out / "data"
        truth = data / "ground_truth.json"
        if not truth.exists():
            write_study_set(SynthConfig(patients=args.synthetic, rows=args.synthetic_size, columns=args.synthetic_size,
                                        seed=seed, studies_per_patient=(1, 1), images_per_study=(1, 1)), data)
        args.dicom_dir = str(data)
    elif not (args.dicom_dir and args.truth):
        raise BadRequest("give --synthetic N, or --dicom-dir with --truth (the simulated readers need the truth)")
    else:
        truth = Path(args.truth)
    if not truth.exists():
        raise BadRequest(f"--truth {truth}: no such file")
    records = load_ground_truth(truth)
    config = config_from_args(args)
    config = dataclasses.replace(config, cache_dir=args.cache_dir or str(out / "cache"))
    labels = tuple(v.strip() for v in (args.labels or VISIBLE_LABELS).split(",") if v.strip())
    strategies = tuple(v.strip() for v in (args.strategies or ",".join(STRATEGIES)).split(",") if v.strip())
    for strategy in strategies:
        parse_strategy(strategy)
    if args.passes < 2:
        raise BadRequest("--passes must be at least 2")
    options = LoopOptions(out=out, rounds=args.rounds, budget=args.budget, labels=labels, initial=args.initial or 0,
                          heldout_fraction=args.heldout_fraction, seed=seed, strategies=strategies,
                          passes=args.passes)

    def show(row: dict[str, Any]) -> None:
        value = row["macro_auroc"]
        where = f"seed {row['seed']} " if "seed" in row else ""
        print(f"{where}{row['strategy']:>17} round {row['round']}  {row['labelled']:>4} labelled  held-out macro "
              f"AUROC {'n/a' if value is None else f'{value:.3f}'}", flush=True)

    if args.seeds:
        try:
            seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        except ValueError:
            raise BadRequest(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 0,1,2") from None
        summary = run_seeds(config, records, options, seeds, on_round=show)
        print(seeds_table(summary), end="")
        print(json.dumps({"report": str(out / "loop-seeds-report.json"), "table": str(out / "loop-seeds-report.md"),
                          "plot": str(out / "loop-seeds-auroc.png"), "seconds": summary["seconds"]}))
        return 0
    report = run_loop(config, records, options, on_round=show)
    print(table(report), end="")
    print(json.dumps({"report": str(out / "loop-report.json"), "plot": str(out / "loop-auroc.png"),
                      "seconds": report["seconds"]}))
    return 0


def register(subparsers: Any) -> None:
    """Add the top-level ``loop`` command (training options as in ``train run``)."""
    from dicomlab_training.cli import add_run_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "loop", help="active learning vs random on the same budget: train, predict, select, label, retrain")
    add_run_arguments(parser)
    parser.add_argument("--rounds", type=int, required=True, help="selection rounds after the initial set")
    parser.add_argument("--budget", type=int, required=True, help="images labelled per round")
    parser.add_argument("--initial", type=int, help="initial labelled images (default: the budget)")
    parser.add_argument("--truth", help="ground_truth.json of the study set (for the simulated readers)")
    parser.add_argument("--synthetic", type=int, help="generate a synthetic study set with this many patients")
    parser.add_argument("--synthetic-size", type=int, default=128, help="synthetic image size in pixels")
    parser.add_argument("--heldout-fraction", type=float, default=0.3, help="share of patients held out")
    parser.add_argument("--strategies", help="comma-separated: random, uncertainty-first (entropy), "
                        "uncertainty-first/mc-dropout, uncertainty-first/tta (default: uncertainty-first,random)")
    parser.add_argument("--passes", type=int, default=8, help="passes/views for mc-dropout and tta (default 8)")
    parser.add_argument("--seeds", help="repeat the comparison for these seeds (e.g. 0,1,2) and summarize over them")
    parser.set_defaults(func=loop_command)
