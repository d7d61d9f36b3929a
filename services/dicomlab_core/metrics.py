"""Prometheus helpers that work both in one process and under gunicorn's multiprocess mode.

Under gunicorn every worker is a process with its own counters; prometheus_client's multiprocess
mode writes them to files in ``PROMETHEUS_MULTIPROC_DIR`` and a per-request registry with a
``MultiProcessCollector`` sums them at scrape time. The gunicorn config (:mod:`dicomlab_core.gunicorn_conf`)
wipes that directory when the master starts and calls ``mark_process_dead`` when a worker exits.
Gauges must declare a ``multiprocess_mode``; :func:`gauge` makes that explicit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

GaugeMode = Literal["all", "liveall", "livesum", "max", "min", "sum", "mostrecent", "livemostrecent"]

LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram buckets for request latency, from 1 ms to 30 s."""


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def gauge(name: str, documentation: str, labelnames: tuple[str, ...] = (), *,
          mode: GaugeMode = "livesum") -> Gauge:
    """A gauge with an explicit multiprocess aggregation mode."""
    return Gauge(name, documentation, labelnames, multiprocess_mode=mode)


def render_latest() -> tuple[bytes, str]:
    """The exposition text for a scrape, aggregated across workers in multiprocess mode."""
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def reset_multiprocess_dir() -> None:
    """Empty the multiprocess directory (gunicorn master start): stale files would double-count.

    Only its contents are removed, never the directory itself: in Kubernetes it is an emptyDir mount point
    owned by root, which the service's non-root user may write into but not remove or recreate.
    """
    directory = multiprocess_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit``)."""
    if multiprocess_dir() is not None:
        prom_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
