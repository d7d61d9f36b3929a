"""From a config to batches: manifest → fetcher → decode cache → patient split → samplers and loaders.

Training batches are planned per *global* batch: an epoch's permutation (seeded by seed and epoch)
is cut into global batches, and global batch ``k`` is dealt to ``world × micro_batches`` shards by
position (shard ``s`` takes positions ``s, s+S, ...``). Rank ``r`` processes shards
``r·micro … r·micro+micro-1``. This is what a ``DistributedSampler`` does, extended so that

- a run can resume at any step inside an epoch (the sampler starts at ``start_step``), and
- one process with ``micro_batches = 2`` sees exactly the samples (and batch-norm groups) that two
  DDP ranks see, which is how DDP equivalence is tested on CPU.

Evaluation shards with MONAI's ``DistributedSampler(even_divisible=False)``: no sample is padded or
duplicated, and predictions are gathered with their sample indices.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dicomlab_core.orthanc import OrthancClient
from dicomlab_training.cache import CacheView, DecodeCache
from dicomlab_training.config import TrainConfig
from dicomlab_training.fetch import Fetcher, FolderFetcher, OrthancFetcher
from dicomlab_training.manifest import LabelTable, load_table
from dicomlab_training.split import Split, patient_split

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(images as stored (B × 1 × S × S), targets (B × L), mask (B × L), sample indices (B))."""


@dataclass
class PreparedData:
    table: LabelTable
    cache: CacheView
    split: Split
    pos_weight: npt.NDArray[np.float32]
    skipped: dict[str, int] = field(default_factory=dict)


def make_fetcher(config: TrainConfig) -> Fetcher:
    if config.dicom_dir:
        return FolderFetcher(config.dicom_dir)
    if not config.orthanc.password:
        logger.warning("no Orthanc password configured (DICOMLAB_TRAIN__ORTHANC__PASSWORD)")
    return OrthancFetcher(OrthancClient(config.orthanc))


def pos_weights(table: LabelTable, rows: npt.NDArray[np.int64], upper: float) -> npt.NDArray[np.float32]:
    """negatives / positives per label over ``rows`` (known labels only), clipped to [1/upper, upper]."""
    t, m = table.targets[rows], table.mask[rows]
    positives = ((t > 0.5) & (m == 1)).sum(axis=0).astype(np.float64)  # soft targets count by their side of 0.5
    negatives = ((t <= 0.5) & (m == 1)).sum(axis=0).astype(np.float64)
    weight = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    weight = np.where(negatives > 0, weight, 1.0)
    return np.clip(weight, 1.0 / upper, upper).astype(np.float32)


def decode_cache(config: TrainConfig) -> DecodeCache:
    """The decode cache ``config`` trains from."""
    return DecodeCache(config.cache_dir, config.pixels.size, config.pixels.cache_dtype, config.cache_url)


def decode_shard(config: TrainConfig, shard: int, shards: int) -> int:
    """Decode this process's share of the images the cache lacks (one of ``shards`` local ranks).

    Fetch concurrency is split between the local ranks, so a node keeps about ``fetch_concurrency``
    requests in flight while the decoding runs in ``shards`` processes. Returns how many it decoded.
    """
    table = load_table(config.manifest, config.labels)
    return decode_cache(config).build_shard(table.samples, make_fetcher(config), shard, shards,
                                            concurrency=max(1, config.fetch_concurrency // max(1, shards)))


def prepare(config: TrainConfig, *, build: bool = True) -> PreparedData:
    """Read the manifest, make sure every image is in the cache (when ``build``), split by patient."""
    table = load_table(config.manifest, config.labels, soft=config.soft_labels)
    cache = decode_cache(config)
    if build:
        view = cache.build(table.samples, make_fetcher(config), concurrency=config.fetch_concurrency)
    else:
        view = cache.open(table.samples)
    usable = view.usable
    split = patient_split(view.patients, usable, seed=config.seed, val_fraction=config.val_fraction,
                          test_fraction=config.test_fraction)
    if len(split.train) == 0:
        raise ValueError("no usable training images (check the skip reasons in the log)")
    skipped = dict(view.skipped)
    if table.duplicates:
        skipped["duplicate_manifest_line"] = table.duplicates
    return PreparedData(table=table, cache=view, split=split,
                        pos_weight=pos_weights(table, split.train, config.pos_weight_max), skipped=skipped)


class CachedBatches(Dataset[Batch]):
    """Returns a whole batch for a list of sample indices (one gather from the memory-mapped cache)."""

    def __init__(self, data: PreparedData) -> None:
        self.path = data.cache.directory / "images.npy"
        self.rows = data.cache.rows
        self.targets = data.table.targets
        self.mask = data.table.mask
        self._images: npt.NDArray[Any] | None = None  # opened lazily in each worker process

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: Sequence[int]) -> Batch:  # type: ignore[override]
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")  # sorted reads from the memory map, then back in place
        images = np.empty((len(rows), *self._images.shape[1:]), dtype=self._images.dtype)
        images[order] = self._images[rows[order]]
        return (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(self.targets[idx]),
                torch.from_numpy(self.mask[idx]), torch.from_numpy(idx))


def global_batch_size(config: TrainConfig, n_train: int, world: int) -> int:
    shards = world * config.micro_batches
    size = min(config.batch_size, n_train)
    size -= size % shards
    if size < shards:
        raise ValueError(f"{n_train} training images cannot fill {shards} shards (ranks × micro-batches)")
    if config.batch_size % shards:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by ranks × micro_batches = {shards}")
    return size


class StepSampler(Sampler[list[int]]):
    """Per-rank training batches for one epoch, starting at a given step (see the module docstring)."""

    def __init__(self, indices: npt.NDArray[np.int64], global_batch: int, *, world: int, rank: int,
                 micro_batches: int, seed: int) -> None:
        self.indices = indices
        self.global_batch = global_batch
        self.world = world
        self.rank = rank
        self.micro = micro_batches
        self.seed = seed
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.indices) // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def plan(self, epoch: int) -> npt.NDArray[np.int64]:
        """The epoch's global batches (steps × global batch), identical on every rank."""
        generator = torch.Generator()
        generator.manual_seed(self.seed * 7919 + epoch)
        perm = torch.randperm(len(self.indices), generator=generator).numpy()
        used = self.steps_per_epoch * self.global_batch
        plan: npt.NDArray[np.int64] = self.indices[perm[:used]].reshape(self.steps_per_epoch, self.global_batch)
        return plan

    def positions(self) -> npt.NDArray[np.int64]:
        """Positions in a global batch that this rank processes, micro-batch after micro-batch."""
        shards = self.world * self.micro
        return np.concatenate([np.arange(s, self.global_batch, shards)
                               for s in range(self.rank * self.micro, (self.rank + 1) * self.micro)])

    def shard(self, global_batch: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """This rank's sample indices of a global batch."""
        return global_batch[self.positions()]

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan(self.epoch)
        for step in range(self.start_step, len(plan)):
            yield self.shard(plan[step]).tolist()

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step)


class EvalSampler(Sampler[list[int]]):
    """This rank's evaluation batches: MONAI's DistributedSampler(even_divisible=False), no padding."""

    def __init__(self, indices: npt.NDArray[np.int64], batch_size: int, *, world: int, rank: int) -> None:
        if world > 1:
            from monai.data.samplers import DistributedSampler

            positions = list(DistributedSampler(range(len(indices)), num_replicas=world, rank=rank,  # type: ignore[arg-type]
                                                shuffle=False, even_divisible=False))
            mine = indices[np.asarray(positions, dtype=np.int64)] if positions else indices[:0]
        else:
            mine = indices
        self.batches = [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGTERM and leaves the decision to the main process.

    The kubelet and torchrun signal the whole process group. PyTorch's own worker handler dies on a
    SIGTERM that does not come from its parent, and the main process then fails with "DataLoader worker
    ... killed by signal: Terminated" before it can checkpoint. Ignored here, the main process finishes
    its step, writes the checkpoint and shuts its workers down itself (workers exit when it does).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def loader(dataset: CachedBatches, sampler: Sampler[list[int]], *, workers: int, pin: bool) -> DataLoader[Batch]:
    """A DataLoader over whole-batch samples (batch_size=None), tuned for workers and pinned memory."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=ignore_sigterm)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers, pin_memory=pin, **kwargs)

