"""Benchmark: ``dicomlab train predict`` images/s — cold (fetch + decode + inference) and warm (cached pixels).

Run: ``.venv/bin/python benchmarks/bench_predict.py [--files 64] [--source-size 1024] [--size 224]
[--arch densenet121] [--threads 2] [--batch-size 32] [--device cpu] [--uncertainty entropy|mc-dropout|tta]
[--passes 8] [--write]``.

Synthetic chest X-rays (``dicomlab_core.synth``: 12-bit, a mix of MONOCHROME1/2 and VOI windows,
uncompressed) are written to a temporary folder with an input manifest; a randomly initialized model
of the chosen architecture is saved as a run folder (``models/best.pt`` + ``report.json``), exactly
what ``train run`` leaves. Then the real ``run_predict`` runs twice:

- **cold** — empty decode cache: every image is read, decoded (modality/VOI LUT, MONOCHROME1, area
  resize) into the cache, then predicted;
- **warm** — same cache, new output: only the memory-mapped gather and the forward passes remain
  (what a later prediction round over the same unlabeled pool costs).

Random weights cost the same as trained ones. Results are printed; with ``--write`` they also go to
``benchmarks/results/predict.json``. The machine is shared: figures are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.synth import SynthConfig, generate, to_bytes
from dicomlab_training import load_train_config
from dicomlab_training.config import ModelConfig
from dicomlab_training.model import build_model
from dicomlab_training.predict import PredictOptions, run_predict
from dicomlab_training.uncertainty import MEASURES, UncertaintyOptions

RESULTS = Path(__file__).parent / "results" / "predict.json"


def make_inputs(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(patients=count, rows=size, columns=size, seed=4242, compressed_fraction=0.0,
                         studies_per_patient=(1, 1), images_per_study=(1, 1), voi_fraction=0.5,
                         monochrome1_fraction=0.5)
    lines = []
    for image in generate(config):
        (folder / f"{image.sop_uid}.dcm").write_bytes(to_bytes(image.dataset))
        lines.append(json.dumps({"source": image.sop_uid, "sop-instance-uid": image.sop_uid,
                                 "study-uid": image.study_uid, "series-uid": image.series_uid}))
        if len(lines) == count:
            break
    manifest = folder.parent / "pool.manifest"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def make_run(folder: Path, arch: str, size: int) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch), len(CHEXPERT_LABELS))
    (folder / "models").mkdir(parents=True)
    torch.save(model.state_dict(), folder / "models" / "best.pt")
    (folder / "report.json").write_text(json.dumps({
        "run": "bench", "labels": list(CHEXPERT_LABELS),
        "config": {"pixels": {"size": size, "cache_dtype": "uint8"}, "model": {"arch": arch}}}))
    return folder / "models" / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=1024)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="densenet121", choices=["densenet121", "densenet-tiny"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--uncertainty", default="entropy", choices=MEASURES)
    parser.add_argument("--passes", type=int, default=8, help="passes/views for mc-dropout and tta")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(Path.cwd())}"
                        if RESULTS.is_relative_to(Path.cwd()) else "also write the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    measure = UncertaintyOptions(measure=args.uncertainty, passes=args.passes)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        manifest = make_inputs(root / "dicom", args.files, args.source_size)
        generated = time.perf_counter() - started
        model = make_run(root / "run", args.arch, args.size)
        config = load_train_config(overrides={"dicom_dir": str(root / "dicom"), "cache_dir": str(root / "cache"),
                                              "device": args.device, "fetch_concurrency": args.decode_threads},
                                   environ={})
        timings: dict[str, Any] = {}
        for phase in ("cold", "warm"):
            options = PredictOptions(model=str(model), manifest=str(manifest), out=str(root / f"{phase}.manifest"),
                                     batch_size=args.batch_size, chunk=max(args.files, 1), uncertainty=measure)
            t0 = time.perf_counter()
            result = run_predict(config, options)
            seconds = time.perf_counter() - t0
            assert result.predicted == args.files, result.to_json()
            timings[phase] = {"seconds": round(seconds, 3), "images_per_second": round(args.files / seconds, 2)}
    out = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                    "load_average_1m_at_start": round(load_before, 2),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"},
        "files": args.files, "source": f"{args.source_size}x{args.source_size} 12-bit synthetic DX/CR, uncompressed",
        "model": f"{args.arch}@{args.size}, 14 labels", "torch_threads": args.threads,
        "uncertainty": measure.name, "passes": 1 if args.uncertainty == "entropy" else args.passes,
        "decode_threads": args.decode_threads, "batch_size": args.batch_size,
        "generation_seconds": round(generated, 2),
        "cold_images_per_second": timings["cold"]["images_per_second"],
        "warm_images_per_second": timings["warm"]["images_per_second"],
        "timings": timings,
        "notes": "cold = fetch + decode into the decode-once cache + inference; warm = cached pixels + inference; "
                 "whole run_predict calls (manifest read, model load, output assembly included)",
    }
    print(json.dumps(out, indent=2))
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
