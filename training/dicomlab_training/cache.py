"""Decode each DICOM once: a memory-mapped array of preprocessed images plus a JSON index.

Layout under ``<cache_dir>/<pipeline key>/`` (the key hashes the pixel pipeline version, the size and
the element type, so a change of preprocessing never reuses stale pixels):

- ``images.npy`` — ``rows × size × size`` uint8 (or float16), opened with ``mmap_mode="r"``; the OS
  page cache keeps it in memory across epochs and DataLoader workers share it for free;
- ``index.json`` — sample key (SOP Instance UID) → row and hashed patient key, plus skipped keys
  with their reason.

A later run with more images decodes only the new ones. Both files are replaced atomically, and the
cache can be mirrored to the object store (``cache_url``) so other nodes and later runs reuse it.

Under torchrun every local rank decodes its own share (:meth:`DecodeCache.build_shard`, into
``shards/<rank>/``); after a barrier, local rank 0's :meth:`DecodeCache.build` merges the shards into
the cache, so no rank sits idle at a barrier while one process decodes everything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomlab_core.errors import NotFound
from dicomlab_core.objectstore import open_store
from dicomlab_training.fetch import Fetcher
from dicomlab_training.manifest import Sample
from dicomlab_training.pixels import DecodedImage, SkipImage, SkipReason, decode, pipeline_key

logger = logging.getLogger(__name__)

RETRIED_REASONS = frozenset({SkipReason.FETCH_FAILED.value, SkipReason.NOT_FOUND.value})
"""Skips that may be transient: retried by the next run. Other reasons are remembered."""


@dataclass
class CacheView:
    """The cached images aligned with a list of samples."""

    images: npt.NDArray[Any]
    """rows × size × size (memory-mapped)."""
    rows: npt.NDArray[np.int64]
    """Per sample: its row in ``images``, or -1 when it was skipped."""
    patients: list[str]
    """Per sample: hashed patient key ("" when skipped)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skip reason → count, over the given samples."""
    decoded_now: int = 0
    seconds: float = 0.0
    directory: Path = Path()

    @property
    def usable(self) -> npt.NDArray[np.int64]:
        """Indices (into the sample list) of the samples that have an image."""
        return np.flatnonzero(self.rows >= 0).astype(np.int64)


def _to_cache(pixels: npt.NDArray[np.float32], dtype: str) -> npt.NDArray[Any]:
    if dtype == "uint8":
        quantized: npt.NDArray[Any] = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
        return quantized
    half: npt.NDArray[Any] = pixels.astype(np.float16)
    return half


def as_float(batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Cached rows → float32 in 0..1."""
    if batch.dtype == np.uint8:
        return batch.astype(np.float32) * np.float32(1.0 / 255.0)
    return batch.astype(np.float32)


class DecodeCache:
    """The cache folder for one preprocessing key."""

    def __init__(self, cache_dir: str | Path, size: int, dtype: str = "uint8", cache_url: str = "") -> None:
        self.size = size
        self.dtype = dtype
        self.key = pipeline_key(size, dtype)
        self.directory = Path(cache_dir) / self.key
        self.cache_url = cache_url.rstrip("/")

    @property
    def images_path(self) -> Path:
        return self.directory / "images.npy"

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    def _load_index(self, pull: bool = True) -> dict[str, Any]:
        if pull and not self.index_path.exists() and self.cache_url:
            self._pull()
        if self.index_path.exists() and self.images_path.exists():
            data: dict[str, Any] = json.loads(self.index_path.read_text())
            if data.get("key") == self.key:
                return data
        return {"key": self.key, "size": self.size, "dtype": self.dtype, "rows": 0, "entries": {}, "skipped": {}}

    def _pull(self) -> None:
        store = open_store(self.cache_url)
        try:
            store.download(f"{self.key}/images.npy", self.images_path)
            store.download(f"{self.key}/index.json", self.index_path)
            logger.info("pulled the decode cache from the object store", extra={"cache": self.cache_url})
        except NotFound:
            self.index_path.unlink(missing_ok=True)

    def _push(self) -> None:
        store = open_store(self.cache_url)
        store.put_file(f"{self.key}/images.npy", self.images_path)
        store.put_file(f"{self.key}/index.json", self.index_path, "application/json")

    def open(self, samples: Sequence[Sample]) -> CacheView:
        """A view of already-cached images (no decoding); missing samples get row -1."""
        index = self._load_index()
        return self._view(index, samples, 0, 0.0)

    def sync(self) -> None:
        """Pull the cache from ``cache_url`` when there is none locally (one process per node, first)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load_index()

    @staticmethod
    def _todo(index: dict[str, Any], samples: Sequence[Sample]) -> list[Sample]:
        """Samples to decode: not cached and not skipped for good; one per key, in sample order."""
        entries, skipped = index["entries"], index["skipped"]
        todo = [s for s in samples if s.key not in entries
                and (s.key not in skipped or skipped[s.key] in RETRIED_REASONS)]
        return list({s.key: s for s in todo}.values())

    def _shard(self, shard: int) -> DecodeCache:
        part = DecodeCache(self.directory, self.size, self.dtype)
        part.directory = self.directory / "shards" / str(shard)
        return part

    def build_shard(self, samples: Sequence[Sample], fetcher: Fetcher, shard: int, shards: int,
                    concurrency: int = 8) -> int:
        """Decode every ``shards``-th missing sample from ``shard`` on into ``shards/<shard>/``; returns how many.

        Call :meth:`sync` first (once per node); :meth:`build` afterwards merges the shards.
        """
        todo = self._todo(self._load_index(pull=False), samples)[shard::shards]
        return self._shard(shard).build(todo, fetcher, concurrency).decoded_now if todo else 0

    def _merge_shards(self, index: dict[str, Any]) -> int:
        """Append the rows of ``shards/*/`` to the cache (atomically), then remove them; returns rows added."""
        folder = self.directory / "shards"
        parts = sorted((p for p in folder.glob("*") if (p / "index.json").exists()), key=lambda p: p.name) \
            if folder.is_dir() else []
        if not parts:
            return 0
        loaded = [(json.loads((p / "index.json").read_text()), np.load(p / "images.npy", mmap_mode="r")) for p in parts]
        entries: dict[str, Any] = index["entries"]
        skipped: dict[str, str] = index["skipped"]
        old_rows = int(index["rows"])
        capacity = old_rows + sum(int(part["rows"]) for part, _ in loaded)
        np_dtype = np.uint8 if self.dtype == "uint8" else np.float16
        tmp_images = self.directory / f".images.{os.getpid()}.npy.tmp"
        out = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np_dtype, shape=(capacity, self.size, self.size))
        if old_rows:
            old = np.load(self.images_path, mmap_mode="r")
            out[:old_rows] = old[:old_rows]
            del old
        row = old_rows
        for part, images in loaded:
            for key, entry in part["entries"].items():
                if key in entries:
                    continue
                out[row] = images[int(entry["row"])]
                entries[key] = {"row": row, "patient": entry["patient"]}
                skipped.pop(key, None)
                row += 1
            for key, reason in part["skipped"].items():
                if key not in entries:
                    skipped[key] = reason
        out.flush()
        del out, loaded
        index["rows"] = row
        self._replace(tmp_images, index)
        shutil.rmtree(folder)
        return row - old_rows

    def _replace(self, tmp_images: Path, index: dict[str, Any]) -> None:
        os.replace(tmp_images, self.images_path)
        tmp_index = self.directory / f".index.{os.getpid()}.json.tmp"
        tmp_index.write_text(json.dumps(index))
        os.replace(tmp_index, self.index_path)

    def skip_reasons(self, keys: Sequence[str]) -> dict[str, str]:
        """Why each of ``keys`` has no cached image (only the keys that were skipped)."""
        skipped: dict[str, str] = self._load_index()["skipped"]
        return {key: skipped[key] for key in keys if key in skipped}

    def build(self, samples: Sequence[Sample], fetcher: Fetcher, concurrency: int = 8) -> CacheView:
        """Merge decoded shards, decode the samples still missing (``concurrency`` at a time), return the view."""
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        index = self._load_index()
        merged = self._merge_shards(index)
        entries: dict[str, Any] = index["entries"]
        skipped: dict[str, str] = index["skipped"]
        todo = self._todo(index, samples)
        if not todo:
            if merged and self.cache_url:
                self._push()
            return self._view(index, samples, merged, time.perf_counter() - started)
        old_rows = int(index["rows"])
        capacity = old_rows + len(todo)
        np_dtype = np.uint8 if self.dtype == "uint8" else np.float16
        tmp_images = self.directory / f".images.{os.getpid()}.npy.tmp"
        out = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np_dtype, shape=(capacity, self.size, self.size))
        if old_rows:
            old = np.load(self.images_path, mmap_mode="r")
            out[:old_rows] = old[:old_rows]
            del old
        row = old_rows
        decoded = 0
        workers = max(1, concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            # A sliding window of 2 × workers futures: memory stays flat however many images there are.
            pending: dict[Future[DecodedImage | SkipImage], Sample] = {}
            queue = iter(todo)
            while True:
                for sample in queue:
                    pending[pool.submit(self._one, fetcher, sample)] = sample
                    if len(pending) >= 2 * workers:
                        break
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    sample = pending.pop(future)
                    result = future.result()
                    if isinstance(result, SkipImage):
                        skipped[sample.key] = result.reason.value
                        logger.info("skipped an instance",
                                    extra={"reason": result.reason.value, "detail": result.detail})
                        continue
                    out[row] = _to_cache(result.pixels, self.dtype)
                    entries[sample.key] = {"row": row, "patient": result.patient_key}
                    skipped.pop(sample.key, None)
                    row += 1
                    decoded += 1
        out.flush()
        del out
        index["rows"] = row
        self._replace(tmp_images, index)
        if self.cache_url:
            self._push()
        seconds = time.perf_counter() - started
        logger.info("decode cache updated", extra={"decoded": decoded, "merged": merged,
                                                   "skipped": len(todo) - decoded, "seconds": round(seconds, 2)})
        return self._view(index, samples, decoded + merged, seconds)

    def _one(self, fetcher: Fetcher, sample: Sample) -> DecodedImage | SkipImage:
        try:
            return decode(fetcher.fetch(sample), self.size, expected_sop_uid=sample.sop_uid)
        except SkipImage as exc:
            return exc
        except Exception as exc:  # a malformed file must never stop the run
            return SkipImage(SkipReason.DECODE_ERROR, type(exc).__name__)

    def _view(self, index: dict[str, Any], samples: Sequence[Sample], decoded: int, seconds: float) -> CacheView:
        entries = index["entries"]
        skipped_index = index["skipped"]
        rows = np.full(len(samples), -1, dtype=np.int64)
        patients = [""] * len(samples)
        reasons: Counter[str] = Counter()
        for i, sample in enumerate(samples):
            entry = entries.get(sample.key)
            if entry is None:
                reasons[skipped_index.get(sample.key, "not_cached")] += 1
                continue
            rows[i] = int(entry["row"])
            patients[i] = str(entry["patient"])
        if self.images_path.exists():
            images: npt.NDArray[Any] = np.load(self.images_path, mmap_mode="r")
        else:
            images = np.zeros((0, self.size, self.size), dtype=np.uint8)
        return CacheView(images=images, rows=rows, patients=patients, skipped=dict(reasons), decoded_now=decoded,
                         seconds=seconds, directory=self.directory)
