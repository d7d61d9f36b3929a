"""Benchmark: the training input pipeline against the reference sample's, on the same 2048² 12-bit files.

Run: ``.venv/bin/python benchmarks/bench_training_input.py [--files 24] [--size 224] [--threads 1]``.

Both pipelines run in this process, one after the other, on the same files (synthetic chest X-rays
from ``dicomlab_core.synth``: 2048 × 2048, 12 bits stored, a mix of MONOCHROME1/2 and VOI windows,
uncompressed), with the same torch thread count:

- **reference** — the sample's per-image MONAI chain, every epoch: ``LoadImage`` (PydicomReader) →
  ``ScaleIntensity`` → ``RandRotate(range_x=15, prob=0.5)`` (radians, as the sample wrote it) →
  ``RandFlip(prob=0.5)`` → ``RandZoom(0.9–1.1, prob=0.5)`` → ``Resize(size × size)``. It decodes and
  warps full-size images each epoch, so every epoch costs the same.
- **dicomlab, first epoch** — fetch + decode once (rescale, VOI, MONOCHROME1 inversion via a lookup
  table, area resize) into the memory-mapped cache (``DecodeCache.build``) with ``--decode-threads``
  threads, then one epoch of batches.
- **dicomlab, cached epochs** — what every later epoch does: gather batches from the memory map and
  augment them as tensors (rotation, zoom, shift, brightness/contrast) — on the CPU here; on a GPU
  the augmentation runs on the device.
- **end-to-end CPU training** — DenseNet121 (and the tiny test DenseNet) optimizer steps per second
  on cached batches at ``--train-size``, to show where the time goes on a CPU.

With ``--write``, results go to ``benchmarks/results/training_input.json`` (without it they are only printed). The machine is shared; the ratios are
measured in one run, so they are comparable even when absolute figures are not.
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

import numpy as np
import torch

from dicomlab_core.synth import SynthConfig, generate, to_bytes
from dicomlab_training import augment
from dicomlab_training.cache import DecodeCache
from dicomlab_training.config import AugmentConfig, ModelConfig
from dicomlab_training.fetch import FolderFetcher
from dicomlab_training.manifest import Sample
from dicomlab_training.model import build_model

RESULTS = Path(__file__).parent / "results" / "training_input.json"


def make_files(directory: Path, count: int, size: int) -> list[Sample]:
    directory.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(patients=count, rows=size, columns=size, seed=2048, compressed_fraction=0.0,
                         studies_per_patient=(1, 1), images_per_study=(1, 1), voi_fraction=0.5,
                         monochrome1_fraction=0.5)
    samples = []
    for image in generate(config):
        (directory / f"{image.sop_uid}.dcm").write_bytes(to_bytes(image.dataset))
        samples.append(Sample(key=image.sop_uid, source=image.sop_uid, sop_uid=image.sop_uid,
                              study_uid=image.study_uid, series_uid=image.series_uid))
        if len(samples) == count:
            break
    return samples


def reference_epoch(paths: list[Path], size: int) -> float:
    """Seconds for one epoch of the sample's per-image MONAI pipeline."""
    from monai.data.image_reader import PydicomReader
    from monai.transforms.compose import Compose
    from monai.transforms.intensity.array import ScaleIntensity
    from monai.transforms.io.array import LoadImage
    from monai.transforms.spatial.array import RandFlip, RandRotate, RandZoom, Resize
    from monai.transforms.utility.array import EnsureChannelFirst

    transform = Compose([
        LoadImage(reader=PydicomReader(), image_only=True), EnsureChannelFirst(), ScaleIntensity(),
        RandRotate(range_x=15, prob=0.5, keep_size=True), RandFlip(spatial_axis=0, prob=0.5),
        RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5), Resize((size, size)),
    ])
    transform.set_random_state(seed=0)
    started = time.perf_counter()
    for path in paths:
        out = transform(str(path))
        assert tuple(out.shape[-2:]) == (size, size)
    return time.perf_counter() - started


def cached_epoch(images: Any, rows: np.ndarray, batch: int, repeats: int) -> tuple[float, int]:
    """Seconds and images for ``repeats`` passes of batch gathering + tensor augmentation."""
    config = AugmentConfig()
    done = 0
    started = time.perf_counter()
    for epoch in range(repeats):
        order = np.random.default_rng(epoch).permutation(len(rows))
        for step, start in enumerate(range(0, len(order), batch)):
            idx = np.sort(rows[order[start:start + batch]])
            x = torch.from_numpy(np.ascontiguousarray(images[idx])).unsqueeze(1).float() / 255.0
            params = augment.random_params(len(idx), config, augment.batch_generator(0, epoch, step))
            out = augment.apply(x, params)
            done += out.shape[0]
    return time.perf_counter() - started, done


def training_speed(arch: str, size: int, batch: int, steps: int) -> float:
    model = build_model(ModelConfig(arch=arch), 14)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size)
    y = (torch.rand(batch, 14) > 0.7).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(2):  # warm-up
        loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    started = time.perf_counter()
    for _ in range(steps):
        loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--source-size", type=int, default=2048)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both pipelines")
    parser.add_argument("--decode-threads", type=int, default=1, help="parallel decodes when building the cache")
    parser.add_argument("--cached-epochs", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated files in this folder")
    parser.add_argument("--write", action="store_true", help="write results/training_input.json (without it: print only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "dicom"
        generated = time.perf_counter()
        samples = make_files(folder, args.files, args.source_size)
        generated = time.perf_counter() - generated
        paths = [folder / f"{s.sop_uid}.dcm" for s in samples]

        reference = reference_epoch(paths, args.size)

        cache = DecodeCache(Path(tmp) / "cache", args.size)
        first = time.perf_counter()
        view = cache.build(samples, FolderFetcher(str(folder)), concurrency=args.decode_threads)
        decode_seconds = time.perf_counter() - first
        one_epoch, _ = cached_epoch(view.images, view.rows, 32, 1)
        first_epoch = decode_seconds + one_epoch
        assert view.skipped == {}, view.skipped

        cached_seconds, cached_images = cached_epoch(view.images, view.rows, 32, args.cached_epochs)

        training = {f"{arch}@{args.train_size}": round(training_speed(arch, args.train_size, 16, args.train_steps), 2)
                    for arch in ("densenet121", "densenet-tiny")}

    n = len(samples)
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__},
        "files": n, "source": f"{args.source_size}x{args.source_size} 12-bit synthetic DX/CR, uncompressed",
        "output_size": args.size, "torch_threads": args.threads, "decode_threads": args.decode_threads,
        "generation_seconds": round(generated, 2),
        "reference_images_per_second": round(n / reference, 2),
        "first_epoch_images_per_second": round(n / first_epoch, 2),
        "cached_epoch_images_per_second": round(cached_images / cached_seconds, 2),
        "first_epoch_speedup": round(reference / first_epoch, 2),
        "cached_epoch_speedup": round((cached_images / cached_seconds) / (n / reference), 1),
        "targets": {"first_epoch_speedup": 3, "cached_epoch_speedup": 100},
        "cpu_training_images_per_second": training,
        "notes": "reference = MONAI LoadImage+ScaleIntensity+RandRotate+RandFlip+RandZoom+Resize per image per epoch; "
                 "cached = memory-mapped uint8 cache + batched tensor augmentation (CPU here, GPU in production)",
    }
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
