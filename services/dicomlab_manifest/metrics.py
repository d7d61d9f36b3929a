"""Prometheus metrics of manifest builds (names defined once here)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from dicomlab_core.metrics import gauge

INSTANCES_SCANNED = Counter("dicomlab_manifest_instances_scanned_total",
                            "Instances whose qualification was evaluated by manifest builds.")
INSTANCES_SELECTED = Counter("dicomlab_manifest_instances_selected_total",
                             "Instances written to manifests.")
INSTANCES_SKIPPED = Counter("dicomlab_manifest_instances_skipped_total",
                            "Instances skipped by manifest builds, by reason.", ("reason",))
ORTHANC_ERRORS = Counter("dicomlab_manifest_orthanc_errors_total",
                         "Manifest builds interrupted by an Orthanc error (they resume from their cursor).")
JOB_DURATION = Histogram("dicomlab_manifest_job_duration_seconds", "Wall time of manifest builds, by outcome.",
                         ("mode", "outcome"), buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
JOBS_RUNNING = gauge("dicomlab_manifest_jobs_running", "Manifest builds running now.", mode="livesum")


def publish(counts: dict[str, int], skipped: dict[str, int], last_counts: dict[str, int],
            last_skipped: dict[str, int]) -> None:
    """Add the growth of a build's counters since the last checkpoint to the Prometheus counters."""
    scanned = counts.get("instances_scanned", 0) - last_counts.get("instances_scanned", 0)
    if scanned > 0:
        INSTANCES_SCANNED.inc(scanned)
    for reason, value in skipped.items():
        delta = value - last_skipped.get(reason, 0)
        if delta > 0:
            INSTANCES_SKIPPED.labels(reason).inc(delta)
