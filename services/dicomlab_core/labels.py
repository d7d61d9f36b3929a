"""The finding vocabulary: the one source of truth for label names.

The default label set is the 14 CheXpert observations, in the order CheXpert publishes them.
Every list of labels elsewhere (manifests, the UI, the model head, the chart defaults, the docs)
is derived from :data:`CHEXPERT_LABELS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from dicomlab_core.errors import BadRequest

MAX_LABEL_LENGTH = 64
"""Ground Truth rejects label names longer than this (characters)."""


class Finding(StrEnum):
    """The 14 CheXpert observations."""

    NO_FINDING = "No Finding"
    ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
    CARDIOMEGALY = "Cardiomegaly"
    LUNG_OPACITY = "Lung Opacity"
    LUNG_LESION = "Lung Lesion"
    EDEMA = "Edema"
    CONSOLIDATION = "Consolidation"
    PNEUMONIA = "Pneumonia"
    ATELECTASIS = "Atelectasis"
    PNEUMOTHORAX = "Pneumothorax"
    PLEURAL_EFFUSION = "Pleural Effusion"
    PLEURAL_OTHER = "Pleural Other"
    FRACTURE = "Fracture"
    SUPPORT_DEVICES = "Support Devices"


CHEXPERT_LABELS: tuple[str, ...] = tuple(f.value for f in Finding)
"""The default label set, in CheXpert order."""

NO_FINDING: str = Finding.NO_FINDING.value
"""The label that is mutually exclusive with every other finding."""


class FindingState(StrEnum):
    """What a reader can say about one finding on one image."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


def validate_label_set(labels: Iterable[str], *, field: str = "labels") -> tuple[str, ...]:
    """Return ``labels`` as a tuple after checking the Ground Truth constraints.

    Labels must be non-empty, unique, free of commas (the manifest joins them with commas)
    and at most :data:`MAX_LABEL_LENGTH` characters. Raises :class:`BadRequest` naming ``field``.
    """
    result = tuple(label.strip() for label in labels)
    if not result:
        raise BadRequest(f"{field}: at least one label is required")
    seen: set[str] = set()
    for label in result:
        if not label:
            raise BadRequest(f"{field}: empty label name")
        if "," in label:
            raise BadRequest(f"{field}: label {label!r} contains a comma")
        if len(label) > MAX_LABEL_LENGTH:
            raise BadRequest(f"{field}: label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters")
        if label in seen:
            raise BadRequest(f"{field}: label {label!r} appears twice")
        seen.add(label)
    return result


def parse_label_list(value: str | Sequence[str], *, field: str = "labels") -> tuple[str, ...]:
    """Parse a label list given as a comma string or a JSON array (both appear in manifests)."""
    if isinstance(value, str):
        return validate_label_set(value.split(","), field=field)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return validate_label_set(value, field=field)
    raise BadRequest(f"{field}: expected a comma-separated string or a list of strings")
