"""Prometheus metrics of the self-hosted labeling queue (multiprocess-safe under gunicorn).

Counters and histograms are updated where things happen (leases, expiries, submissions, UI
timings). Queue depth, oldest waiting age and agreement per finding are gauges refreshed from the
database when ``/metrics`` is scraped (at most every ``REFRESH_SECONDS``), with the ``mostrecent``
multiprocess mode, so every worker reports the same database-wide value. The job's name is the
``labeling_job`` label: ``job`` is Prometheus' own target label (the scrape job) and would be renamed
``exported_job`` under the Prometheus Operator.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomlab_core.metrics import gauge
from dicomlab_labeling.workflow.models import Job, JobStatus, Task, utcnow

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
TIME_BUCKETS_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
FIRST_IMAGE_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60)

ASSIGNMENTS_HANDED_OUT = Counter("dicomlab_labeling_assignments_handed_out_total",
                                 "Images leased to readers.")
ASSIGNMENTS_EXPIRED = Counter("dicomlab_labeling_assignments_expired_total",
                              "Leases that ran out before a submission (the image went back to the queue).")
SUBMISSIONS = Counter("dicomlab_labeling_submissions_total", "Answers stored (every version).")
SKIPS = Counter("dicomlab_labeling_skips_total", "Images given back by readers, by kind.", ("kind",))
TIME_PER_IMAGE = Histogram("dicomlab_labeling_time_per_image_seconds",
                           "Reader time per image as reported with the answer.", buckets=TIME_BUCKETS_SECONDS)
TIME_TO_FIRST_IMAGE = Histogram("dicomlab_labeling_ui_time_to_first_image_seconds",
                                "From page load to the first image on screen, reported by the UI.",
                                buckets=FIRST_IMAGE_BUCKETS_SECONDS)
QUEUE_DEPTH = gauge("dicomlab_labeling_queue_depth", "Reader slots still to be filled, by job.", ("labeling_job",),
                    mode="mostrecent")
OLDEST_WAITING = gauge("dicomlab_labeling_oldest_waiting_seconds",
                       "Age of the oldest image still waiting for a reader, by job.", ("labeling_job",),
                       mode="mostrecent")
AGREEMENT = gauge("dicomlab_labeling_agreement_ratio",
                  "Krippendorff's alpha per finding at the last agreement computation, by job.",
                  ("labeling_job", "finding"), mode="mostrecent")

GOLD_ACCURACY = gauge("dicomlab_labeling_gold_accuracy_ratio",
                      "Share of a reader's answers on gold-standard images that match the known answer, by job, "
                      "reader and finding ('all': every gold finding pooled), at the last agreement computation.",
                      ("labeling_job", "reader", "finding"), mode="mostrecent")

_lock = threading.Lock()
_last_refresh: dict[int, float] = {}
"""When each database (engine) last refreshed the gauges: one app's refresh must not suppress another's."""


def refresh_queue_gauges(session: Session, *, force: bool = False) -> None:
    """Recompute queue depth and oldest waiting age of every active job (rate-limited)."""
    engine = id(session.get_bind())
    with _lock:
        if not force and time.monotonic() - _last_refresh.get(engine, -REFRESH_SECONDS) < REFRESH_SECONDS:
            return
        _last_refresh[engine] = time.monotonic()
    now: datetime = utcnow()
    rows = session.execute(
        select(Job.name, Job.readers_per_image, func.count(Task.id), func.coalesce(func.sum(Task.taken), 0),
               func.min(Task.created_at))
        .join(Task, Task.job_id == Job.id)
        .where(Job.status == JobStatus.ACTIVE.value, Task.taken < Job.readers_per_image)
        .group_by(Job.id, Job.name, Job.readers_per_image)).all()
    seen = set()
    for name, readers, tasks, taken, oldest in rows:
        seen.add(name)
        QUEUE_DEPTH.labels(name).set(int(tasks) * int(readers) - int(taken))
        OLDEST_WAITING.labels(name).set((now - oldest).total_seconds() if oldest else 0.0)
    for (name,) in session.execute(select(Job.name).where(Job.status == JobStatus.ACTIVE.value)):
        if name not in seen:
            QUEUE_DEPTH.labels(name).set(0)
            OLDEST_WAITING.labels(name).set(0)


def set_agreement(job: str, values: dict[str, float | None]) -> None:
    for finding, value in values.items():
        if value is not None:
            AGREEMENT.labels(job, finding).set(value)


def set_gold_accuracy(job: str, readers: dict[str, dict[str, Any]]) -> None:
    """Export a :func:`dicomlab_labeling.workflow.gold.report`'s ``readers`` part (overall as finding ``all``)."""
    for reader, score in readers.items():
        overall = score["overall"]["accuracy"]
        if overall is not None:
            GOLD_ACCURACY.labels(job, reader, "all").set(overall)
        for finding, item in score["findings"].items():
            if item["accuracy"] is not None:
                GOLD_ACCURACY.labels(job, reader, finding).set(item["accuracy"])
