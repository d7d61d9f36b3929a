"""Output manifest → training samples with per-label targets and masks.

Parsing (every accepted shape: ours, Ground Truth's with either metadata spelling, raw per-worker
answers, the reference sample's nested answers) is the shared core's
:func:`dicomlab_core.groundtruth.read_output_manifest`; this module turns its rows into arrays.
Uncertain or unanswered labels get mask 0, so they contribute nothing to the loss or the metrics.

Soft targets (``soft=True``, the trainer's ``soft_labels`` setting): a known label's target is the
consolidation's probability that the finding is present instead of 0/1. The labeling export writes,
per finding, the chosen ``value`` and its ``confidence`` — the Dawid–Skene posterior of that value
where the model decided, the winning vote share where majority vote did, 1 for an adjudication — so
P(present) = confidence for "present" and 1 − confidence for "absent". A finding without a
confidence keeps its hard 0/1 target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth import LabeledObject, read_output_manifest
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.objectstore import open_store, split_uri

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One labelled instance: where to get it, and its targets."""

    key: str
    """The SOP Instance UID when the manifest has it, else the ``source`` value (unique per sample)."""
    source: str
    """Orthanc instance ID or ``source-ref`` URI."""
    sop_uid: str | None
    study_uid: str | None
    series_uid: str | None


@dataclass(frozen=True)
class LabelTable:
    """Samples with their ``targets`` (N × L, 0/1) and ``mask`` (N × L, 1 = known)."""

    labels: tuple[str, ...]
    samples: tuple[Sample, ...]
    targets: npt.NDArray[np.float32]
    mask: npt.NDArray[np.float32]
    duplicates: int = 0
    """Manifest lines dropped because their instance appeared earlier."""

    def counts(self, rows: npt.NDArray[np.int64] | None = None) -> dict[str, dict[str, int]]:
        """Positives, negatives and masked entries per label (over ``rows`` or every sample)."""
        t = self.targets if rows is None else self.targets[rows]
        m = self.mask if rows is None else self.mask[rows]
        return {label: {"positive": int(((t[:, i] > 0.5) & (m[:, i] == 1)).sum()),
                        "negative": int(((t[:, i] <= 0.5) & (m[:, i] == 1)).sum()),
                        "unknown": int((m[:, i] == 0).sum())}
                for i, label in enumerate(self.labels)}


def read_manifest_text(uri: str) -> str:
    """The manifest's text from a path, ``file://`` or ``s3://`` URI."""
    store_url, key = split_uri(uri)
    return open_store(store_url).get_bytes(key).decode("utf-8")


def fetch_uri(uri: str) -> bytes:
    store_url, key = split_uri(uri)
    return open_store(store_url).get_bytes(key)


def load_objects(uri: str) -> list[LabeledObject]:
    return list(read_output_manifest(read_manifest_text(uri).splitlines(), fetch=fetch_uri))


def choose_labels(objects: Iterable[LabeledObject], requested: Sequence[str] = ()) -> tuple[str, ...]:
    """The label set: ``requested`` if given, else every label in the manifest (CheXpert order first)."""
    if requested:
        return tuple(requested)
    seen: dict[str, None] = {}
    for obj in objects:
        for label in obj.labels:
            seen.setdefault(label, None)
    ordered = [label for label in CHEXPERT_LABELS if label in seen]
    ordered += [label for label in seen if label not in CHEXPERT_LABELS]
    if not ordered:
        raise BadRequest("the manifest lists no labels; pass the label set explicitly")
    return tuple(ordered)


def soft_target(value: float, confidence: float | None) -> float:
    """P(present) from a consolidated value (1 present / 0 absent) and the confidence of that value."""
    if confidence is None or not 0.0 <= confidence <= 1.0:
        return 1.0 if value >= 0.5 else 0.0
    return float(confidence) if value >= 0.5 else 1.0 - float(confidence)


def build_table(objects: Sequence[LabeledObject], labels: Sequence[str] = (), *, soft: bool = False) -> LabelTable:
    """Targets and masks for ``objects`` over the chosen label set; repeated instances are dropped.

    With ``soft`` the targets are P(present) from the consolidation confidence (see the module docstring).
    """
    label_set = choose_labels(objects, labels)
    index = {label: i for i, label in enumerate(label_set)}
    samples: list[Sample] = []
    rows_t: list[npt.NDArray[np.float32]] = []
    rows_m: list[npt.NDArray[np.float32]] = []
    seen: set[str] = set()
    duplicates = 0
    for obj in objects:
        key = obj.sop_uid or obj.source
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        t = np.zeros(len(label_set), dtype=np.float32)
        m = np.zeros(len(label_set), dtype=np.float32)
        for label, value in obj.values.items():
            i = index.get(label)
            if i is None or value is None:
                continue
            t[i] = soft_target(value, obj.confidence.get(label)) if soft else 1.0 if value >= 0.5 else 0.0
            m[i] = 1.0
        samples.append(Sample(key=key, source=obj.source, sop_uid=obj.sop_uid, study_uid=obj.study_uid,
                              series_uid=obj.series_uid))
        rows_t.append(t)
        rows_m.append(m)
    if duplicates:
        logger.warning("dropped repeated manifest lines", extra={"duplicates": duplicates})
    shape = (len(samples), len(label_set))
    targets = np.stack(rows_t) if rows_t else np.zeros(shape, np.float32)
    mask = np.stack(rows_m) if rows_m else np.zeros(shape, np.float32)
    return LabelTable(labels=label_set, samples=tuple(samples), targets=targets, mask=mask, duplicates=duplicates)


def load_table(uri: str, labels: Sequence[str] = (), *, soft: bool = False) -> LabelTable:
    """Read the output manifest at ``uri`` into a :class:`LabelTable` (soft targets with ``soft``)."""
    return build_table(load_objects(uri), labels, soft=soft)
