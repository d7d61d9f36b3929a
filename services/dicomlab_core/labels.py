"""The finding vocabulary: the one source of truth for label names.

The default label set is the 14 CheXpert observations, in the order CheXpert publishes them.
Every list of labels elsewhere (manifests, the UI, the model head, the chart defaults, the docs)
is derived from :data:`CHEXPERT_LABELS`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum

from dicomlab_core.errors import BadRequest

MAX_LABEL_LENGTH = 64
"""Ground Truth rejects label names longer than this (characters)."""

_FORBIDDEN = re.compile(r'[\[\]{}"\'`\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
"""Characters a label may not hold: brackets, braces, quotes, backslash and control characters.

A label with any of them is almost always a mis-parsed JSON array (``["Atelectasis"``), and it would
not survive the comma string, the Liquid template or a DICOM code meaning unchanged.
"""


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

    Labels must be non-empty, unique, free of commas (the manifest joins them with commas), of
    brackets, quotes, backslashes and control characters (:data:`_FORBIDDEN`), and at most
    :data:`MAX_LABEL_LENGTH` characters. Raises :class:`BadRequest` naming ``field``.
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
        bad = _FORBIDDEN.search(label)
        if bad is not None:
            raise BadRequest(f"{field}: label {label[:40]!r} contains {bad.group()!r}; brackets, quotes, "
                             "backslashes and control characters are not allowed")
        if len(label) > MAX_LABEL_LENGTH:
            raise BadRequest(f"{field}: label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters")
        if label in seen:
            raise BadRequest(f"{field}: label {label!r} appears twice")
        seen.add(label)
    return result


def parse_label_list(value: str | Sequence[str], *, field: str = "labels") -> tuple[str, ...]:
    """Parse a label list given as a comma string or a JSON array (both appear in manifests).

    A string that starts with ``[`` is a JSON array written as a string (``"[\\"A\\", \\"B\\"]"``, as some
    manifest writers emit it) and is decoded as one; splitting it on commas would make labels such as
    ``["A"`` that match nothing.
    """
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"{field}: starts with '[' but is not a JSON array ({exc.msg})") from None
            if not isinstance(decoded, list):
                raise BadRequest(f"{field}: expected a JSON array of strings")
            return parse_label_list(decoded, field=field)
        return validate_label_set(value.split(","), field=field)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return validate_label_set(value, field=field)
    raise BadRequest(f"{field}: expected a comma-separated string or a list of strings")
