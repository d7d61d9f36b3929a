"""``dicomlab synth``: write a synthetic study set to a folder, or upload it to the local stack."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from dicomlab_core.config import env_name, load_config
from dicomlab_core.localenv import local_env
from dicomlab_core.orthanc import OrthancClient, OrthancSettings

from .dicom import to_bytes
from .extras import make_extra_objects
from .load import write_ground_truth, write_study_set
from .plan import SynthConfig

logger = logging.getLogger(__name__)

PREFIX = "DICOMLAB_SYNTH"
"""``--upload`` reads Orthanc (``DICOMLAB_SYNTH__ORTHANC__*``) and ``DICOMLAB_SYNTH__TRUTH_DIR`` from the
local stack (:mod:`dicomlab_core.localenv`)."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "synth", help="generate synthetic chest X-rays with known findings",
        description="Write synthetic DX/CR chest X-rays (with ground_truth.json/.csv) to --out, "
                    "or upload them to the running local stack with --upload.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder to write .dcm files and the ground truth to")
    target.add_argument("--upload", action="store_true", help="upload to the local stack's Orthanc")
    parser.add_argument("--patients", type=int, default=50, help="number of patients (default 50)")
    parser.add_argument("--size", type=int, default=1024, help="square image size in pixels (default 1024)")
    parser.add_argument("--rows", type=int, help="image rows (overrides --size)")
    parser.add_argument("--columns", type=int, help="image columns (overrides --size)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same bytes (default 0)")
    parser.add_argument("--monochrome1", type=float, default=0.3, help="fraction of MONOCHROME1 series")
    parser.add_argument("--voi", type=float, default=0.3, help="fraction of series with a clipping VOI")
    parser.add_argument("--compressed", type=float, default=0.2, help="fraction of compressed images")
    parser.add_argument("--extras", action="store_true",
                        help="also add non-qualifying objects (SR, presentation state, multi-frame, PDF, raw DX)")
    parser.add_argument("--workers", type=int, default=4, help="upload threads (default 4)")
    parser.add_argument("--truth", type=Path, help="with --upload: where to write the ground truth (a folder)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(patients=args.patients, seed=args.seed, rows=args.rows or args.size,
                       columns=args.columns or args.size, monochrome1_fraction=args.monochrome1,
                       voi_fraction=args.voi, compressed_fraction=args.compressed)


class Progress:
    """A single updating progress line on stderr: done/total, images per second."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        rate = done / max(time.monotonic() - self.start, 1e-6)
        end = "\n" if done == total else ""
        print(f"\r{self.verb} {done}/{total} images ({rate:.1f}/s)", end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"dicomlab synth: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        path = write_study_set(config, args.out, progress=Progress("wrote"))
        if args.extras:
            for reason, ds in make_extra_objects(seed=config.seed):
                (args.out / "extras").mkdir(exist_ok=True)
                (args.out / "extras" / f"{reason}.dcm").write_bytes(to_bytes(ds))
        print(f"ground truth: {path} (and {path.with_suffix('.csv')})")
        return 0
    from .load import upload_study_set

    env = local_env(args, "synth")
    settings = load_config(OrthancSettings, env_name(PREFIX, "orthanc"), env)
    client = OrthancClient(dataclasses.replace(settings, pool_size=max(4, args.workers)))
    try:
        records = upload_study_set(config, client, workers=args.workers, progress=Progress("uploaded"))
        if args.extras:
            for _, ds in make_extra_objects(seed=config.seed):
                client.upload_instance(to_bytes(ds))
    finally:
        client.close()
    truth_dir = args.truth or Path(env[env_name(PREFIX, "truth_dir")])
    truth_dir.mkdir(parents=True, exist_ok=True)
    path = write_ground_truth(config, records, truth_dir)
    studies = len({r["study_uid"] for r in records})
    print(f"uploaded {len(records)} images in {studies} studies to {settings.url}; ground truth: {path}")
    return 0
