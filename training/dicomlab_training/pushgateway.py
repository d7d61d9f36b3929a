"""Training metrics to a Prometheus Pushgateway (when ``pushgateway_url`` is set).

A batch job cannot be scraped, so rank 0 pushes after every epoch and at the end, grouped by
``job="dicomlab_training"`` and ``run=<run name>`` (one group per run, replaced on each push). A push
that fails is logged and never stops training.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

logger = logging.getLogger(__name__)

JOB = "dicomlab_training"


class MetricsPusher:
    """Gauges for one run; ``push_epoch`` / ``push_test`` send them when a gateway is configured."""

    def __init__(self, url: str, run: str) -> None:
        self.url = url
        self.run = run
        self.registry = CollectorRegistry()
        self.epoch = Gauge("dicomlab_training_epoch", "Epochs completed", registry=self.registry)
        self.loss = Gauge("dicomlab_training_loss", "Masked BCE loss", ["split"], registry=self.registry)
        self.auroc = Gauge("dicomlab_training_auroc", "AUROC (macro, micro or per label)", ["split", "label"],
                           registry=self.registry)
        self.speed = Gauge("dicomlab_training_images_per_second", "Training throughput over the last epoch",
                           registry=self.registry)
        self.steps = Gauge("dicomlab_training_steps", "Optimizer steps done", registry=self.registry)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def push_epoch(self, record: dict[str, Any]) -> None:
        self.epoch.set(record["epoch"] + 1)
        self.steps.set(record["steps"])
        self.loss.labels("train").set(record["train_loss"])
        self.speed.set(record["images_per_second"])
        if record.get("val_loss") is not None:
            self.loss.labels("val").set(record["val_loss"])
        for name in ("macro", "micro"):
            value = record.get(f"val_{name}_auroc")
            if value is not None:
                self.auroc.labels("val", name).set(value)
        for label, value in (record.get("val_per_label_auroc") or {}).items():
            if value is not None:
                self.auroc.labels("val", label).set(value)
        self._push()

    def push_test(self, metrics: dict[str, Any]) -> None:
        self.loss.labels("test").set(metrics["loss"])
        for name in ("macro", "micro"):
            if metrics.get(f"{name}_auroc") is not None:
                self.auroc.labels("test", name).set(metrics[f"{name}_auroc"])
        for label, item in metrics.get("per_label", {}).items():
            if item.get("auroc") is not None:
                self.auroc.labels("test", label).set(item["auroc"])
        self._push()

    def _push(self) -> None:
        if not self.enabled:
            return
        try:
            push_to_gateway(self.url, job=JOB, registry=self.registry, grouping_key={"run": self.run}, timeout=5)
        except Exception as exc:  # metrics must never stop a run
            logger.warning("metrics push failed", extra={"error": type(exc).__name__})
