"""``dicomlab train predict``: the argument parser and command of :mod:`dicomlab_training.predict`.

Kept apart from :mod:`dicomlab_training.cli` so that module only gains a one-line hook.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def predict_command(args: argparse.Namespace) -> int:
    from dicomlab_core.errors import BadRequest
    from dicomlab_training.cli import config_from_args
    from dicomlab_training.predict import PredictOptions, run_predict
    from dicomlab_training.uncertainty import UncertaintyOptions

    if not args.manifest or not args.out:
        raise BadRequest("--manifest and --out are required")
    if args.limit is not None and args.limit < 0:
        raise BadRequest("--limit must be 0 or more")
    config = config_from_args(args)
    measure = UncertaintyOptions(measure=args.uncertainty, passes=args.passes, dropout=args.dropout,
                                 seed=config.seed)
    measure.check()
    options = PredictOptions(model=args.model, manifest=args.manifest, out=args.out, limit=args.limit or 0,
                             batch_size=args.batch_size or config.eval_batch_size, chunk=args.chunk,
                             uncertainty=measure)
    result = run_predict(config, options)
    print(json.dumps(result.to_json(), indent=2))
    return 0


def register_predict(actions: Any, add_run_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``predict`` to the ``train`` sub-commands (shares the data-source options of ``train run``)."""
    parser: argparse.ArgumentParser = actions.add_parser(
        "predict", help="batch inference over an input manifest: probabilities, uncertainty, model version")
    add_run_arguments(parser)
    parser.add_argument("--model", required=True,
                        help="model state dict (<run>/models/best.pt), run folder, or exported bundle folder")
    parser.add_argument("--limit", type=int, help="predict only the first N manifest lines")
    parser.add_argument("--chunk", type=int, default=512, help="lines per resumable part (default 512)")
    parser.add_argument("--uncertainty", choices=("entropy", "mc-dropout", "tta"), default="entropy",
                        help="model-uncertainty measure: mean binary entropy of one pass (default), MC-dropout "
                             "or test-time-augmentation disagreement (mutual information over --passes)")
    parser.add_argument("--passes", type=int, default=8,
                        help="forward passes (mc-dropout) or views (tta); default 8")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout probability for mc-dropout (default 0.2)")
    parser.set_defaults(func=predict_command)
