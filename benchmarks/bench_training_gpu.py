"""Training-step benchmark: images/s of the REAL ``train run`` step (DenseNet121 at 224² by default).

Every variant runs :class:`dicomlab_training.loop.Stepper` — the exact step of ``train run``: on-device
augmentation, masked pos-weighted BCE, gradient clipping, AdamW (fused on CUDA), grad scaler and the
warm-up + cosine scheduler — on a model set up by the loop's own ``prepare_model`` / ``wrap_model``.
Variants, per batch size (per GPU, default 64 128 256 512):

- ``fp32_eager``: ``amp=off``, ``channels_last=false`` (plain baseline);
- ``bf16_channels_last``: the defaults of ``train run`` on CUDA (bf16 autocast, channels_last, fused AdamW);
- ``bf16_channels_last_compile``: the same with ``model.compile=true`` (``--compile``);
- ``..._input_pipeline``: the default variant fed by the real input path (``CachedBatches`` over a
  memory-mapped uint8 cache through ``data.loader`` with workers and pinned memory), with the fraction
  of time spent waiting for data and the GPU utilization sampled by NVML.

Batches start as uint8 on the host like the cache's, so every variant pays the copy and conversion.

Run on a GPU machine::

    python benchmarks/bench_training_gpu.py [--batch-sizes 64 128 256 512] [--compile]
    torchrun --standalone --nproc-per-node=2 benchmarks/bench_training_gpu.py --batch-sizes 256  # DDP scaling

With ``--write``, results (with device, driver, torch and CUDA versions) go to
``benchmarks/results/training_gpu.json``.
Without CUDA the CUDA variants are skipped with a message; ``--cpu-smoke`` runs the same step on the CPU
with a tiny network (a check that the benchmark works, not a figure) and writes nothing.
Targets in issue 17: ≥ 3,000 images/s at 224² on one H100 in the real loop; ≥ 90% scaling over 2 GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from dicomlab_training.config import ModelConfig, PixelConfig, TrainConfig
from dicomlab_training.data import CachedBatches, StepSampler, loader
from dicomlab_training.loop import (
    DistInfo,
    Stepper,
    amp_dtype,
    build_optimizer,
    init_distributed,
    prepare_model,
    select_device,
    wrap_model,
)
from dicomlab_training.model import build_model

RESULTS = Path(__file__).parent / "results" / "training_gpu.json"
LABELS = 14


def make_stepper(config: TrainConfig, dist: DistInfo, device: torch.device, batch: int) -> Stepper:
    """A Stepper for ``config`` exactly as ``loop.train`` builds one (global batch = batch × ranks)."""
    torch.manual_seed(0)
    model = build_model(config.model, LABELS)
    prepare_model(model, config, device)
    dtype = amp_dtype(config, device)
    optimizer, scheduler = build_optimizer(model, config, total_steps=10_000)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    pos_weight = torch.full((LABELS,), 2.0, device=device)
    return Stepper(config=config, runner=wrap_model(model, config, dist, device), model=model, optimizer=optimizer,
                   scheduler=scheduler, scaler=scaler, pos_weight=pos_weight, device=device, dtype=dtype, dist=dist,
                   global_batch=batch * dist.world, labels=LABELS)


def host_batches(batch: int, size: int, pin: bool) -> Any:
    """The same uint8 host batch again and again (no input pipeline): the step alone."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=generator)
    targets = (torch.rand(batch, LABELS, generator=generator) > 0.7).float()
    mask = torch.ones(batch, LABELS)
    if pin:
        images, targets, mask = images.pin_memory(), targets.pin_memory(), mask.pin_memory()
    while True:
        yield images, targets, mask


def pipeline_batches(folder: Path, batch: int, size: int, images: int, workers: int, dist: DistInfo,
                     pin: bool) -> Any:
    """Batches from a memory-mapped uint8 cache through the real CachedBatches + data.loader."""
    path = folder / "images.npy"
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(images, size, size))
    cache[:] = np.random.default_rng(0).integers(0, 256, size=cache.shape, dtype=np.uint8)
    cache.flush()
    del cache
    rng = np.random.default_rng(1)
    data = SimpleNamespace(cache=SimpleNamespace(directory=folder, rows=np.arange(images, dtype=np.int64)),
                           table=SimpleNamespace(targets=(rng.random((images, LABELS)) > 0.7).astype(np.float32),
                                                 mask=np.ones((images, LABELS), np.float32)))
    dataset = CachedBatches(data)  # type: ignore[arg-type]
    sampler = StepSampler(np.arange(images, dtype=np.int64), batch * dist.world, world=dist.world, rank=dist.rank,
                          micro_batches=1, seed=0)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for images_, targets, mask, _idx in loader(dataset, sampler, workers=workers, pin=pin):
            yield images_, targets, mask
        epoch += 1


def timed(stepper: Stepper, batches: Any, steps: int, warmup: int, positions: Any) -> dict[str, float]:
    """Images/s over ``steps`` after ``warmup`` steps (compilation, cudnn autotuning), and time waiting for data."""
    cuda = stepper.device.type == "cuda"
    waited, images, started = 0.0, 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            started, waited, images = time.perf_counter(), 0.0, 0
        fetch = time.perf_counter()
        x, y, m = next(batches)
        waited += time.perf_counter() - fetch
        stepper.step(x, y, m, positions, 0, step)
        images += x.shape[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"images_per_second": round(images * stepper.dist.world / seconds, 1),
            "step_seconds": round(seconds / steps, 5), "data_wait_fraction": round(waited / seconds, 4)}


class Utilization:
    """Samples GPU utilization (NVML through torch) in a background thread."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(int(torch.cuda.utilization()))
            except Exception:  # NVML missing: report nothing rather than fail the benchmark
                return
            time.sleep(0.1)

    def __enter__(self) -> Utilization:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        return {"mean_percent": round(float(np.mean(self.samples)), 1), "min_percent": float(min(self.samples))}


def device_details(device: torch.device) -> dict[str, Any]:
    details: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                               "host": platform.node(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        details.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                       capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
                       bf16=torch.cuda.is_bf16_supported())
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            details["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # NVML bindings are optional
            details["driver"] = None
    else:
        details["device"] = platform.processor() or "cpu"
    return details


def variants(base: TrainConfig, compile_too: bool) -> dict[str, TrainConfig]:
    out = {"fp32_eager": replace(base, amp="off", channels_last=False),
           "bf16_channels_last": replace(base, amp="auto" if base.device == "cuda" else "bf16")}
    if compile_too:
        out["bf16_channels_last_compile"] = replace(out["bf16_channels_last"],
                                                    model=replace(base.model, compile=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="per-GPU batch sizes (default 64 128 256 512)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (default 30)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first (default 8)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the pipeline variant")
    parser.add_argument("--cache-images", type=int, default=4096, help="images in the synthetic cache")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="without CUDA: run the same step on the CPU with a tiny network (not a figure)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON (CUDA runs with --write only)")
    parser.add_argument("--write", action="store_true", help="write the results to --out (without it: print only)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        print("bench_training_gpu: CUDA is not available here; GPU figures not measured "
              "(--cpu-smoke checks the benchmark on the CPU)")
        return
    base = TrainConfig(device="cuda" if cuda else "cpu", model=ModelConfig(arch="densenet121"),
                       pixels=PixelConfig(size=args.size))
    if not cuda:  # smoke: the same code path, small enough for a shared CPU
        base = replace(base, model=ModelConfig(arch="densenet-tiny"), pixels=PixelConfig(size=32))
        args.batch_sizes, args.steps, args.warmup, args.workers, args.cache_images = [4, 8], 2, 1, 1, 64
    dist = init_distributed(base.device)
    device = select_device(base, dist)
    size = base.pixels.size
    results: dict[str, Any] = {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "model": base.model.arch, "size": size, "world_size": dist.world,
                               "details": device_details(device), "batch_sizes": {}}
    for batch in args.batch_sizes:
        row: dict[str, Any] = {}
        positions = np.arange(dist.rank, batch * dist.world, dist.world, dtype=np.int64)  # StepSampler.positions()
        for name, config in variants(base, args.compile and cuda).items():
            try:
                stepper = make_stepper(config, dist, device, batch)
                row[name] = timed(stepper, host_batches(batch, size, cuda), args.steps, args.warmup, positions)
            except torch.cuda.OutOfMemoryError:
                row[name] = {"error": "out of memory"}
                torch.cuda.empty_cache()
                continue
            if name == "bf16_channels_last":
                with tempfile.TemporaryDirectory() as tmp, Utilization() as utilization:
                    feed = pipeline_batches(Path(tmp), batch, size, args.cache_images, args.workers, dist, cuda)
                    row[f"{name}_input_pipeline"] = timed(stepper, feed, args.steps, args.warmup, positions)
                row[f"{name}_input_pipeline"]["gpu_utilization"] = utilization.summary() if cuda else None
            del stepper
        results["batch_sizes"][str(batch)] = row
        if dist.is_main:
            print(json.dumps({batch: row}), flush=True)
    if dist.is_main and cuda and args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    elif dist.is_main:
        print("bench_training_gpu: CPU smoke run done; CUDA variants skipped, GPU figures not measured")
    if dist.enabled:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
