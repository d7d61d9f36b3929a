"""Synthetic chest X-rays with known findings: DICOM DX/CR study sets for tests, demos and training.

Deterministic by seed (pixels and UIDs), 12-bit, MONOCHROME1 and MONOCHROME2, VOI windows and
LUTs, lossless compression, and the 14 CheXpert findings drawn visibly in the pixels with realistic
prevalence and co-occurrence::

    from dicomlab_core.synth import SynthConfig, generate, write_study_set, upload_study_set

    for image in generate(SynthConfig(patients=5, rows=256, columns=256)):
        image.dataset, image.findings, image.truth_record()
"""

from __future__ import annotations

from .dicom import TRANSFER_SYNTAX, SynthImage, make_image, stored_values, to_bytes
from .extras import ExtraKind, make_extra_objects
from .load import (
    GROUND_TRUTH_CSV,
    GROUND_TRUTH_JSON,
    generate,
    load_ground_truth,
    upload_study_set,
    write_study_set,
)
from .plan import (
    Compression,
    ImageSpec,
    Modality,
    Photometric,
    SynthConfig,
    Voi,
    available_compressions,
    plan,
)

__all__ = [
    "GROUND_TRUTH_CSV", "GROUND_TRUTH_JSON", "TRANSFER_SYNTAX", "Compression", "ExtraKind", "ImageSpec", "Modality",
    "Photometric", "SynthConfig", "SynthImage", "Voi", "available_compressions", "generate", "load_ground_truth",
    "make_extra_objects", "make_image", "plan", "stored_values", "to_bytes", "upload_study_set", "write_study_set",
]
