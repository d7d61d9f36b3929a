"""Ground Truth formats shared by the manifest service, the labeling service and training; one contract
per module (see ``ground-truth.md``):

- :mod:`.input_manifest` — the input manifest line (``source``/``source-ref``, ``labels``, our own keys);
- :mod:`.pre_annotation` — the pre-annotation request and response;
- :mod:`.worker_answer` — what a reader submits, in every accepted shape, and its one clean serializer;
- :mod:`.consolidation` — the post-annotation request, the consolidated content, the response entries;
- :mod:`.output_manifest` — the output manifest line, written and read (for training).

Everything public is re-exported here, so ``from dicomlab_core.groundtruth import ManifestLine`` works.
"""

from __future__ import annotations

from dicomlab_core.groundtruth.consolidation import (
    METADATA_SUFFIX,
    ConsolidatedLabel,
    FindingConsensus,
    Flag,
    PostAnnotationRequest,
    RejectedAnswer,
    parse_post_request,
    response_entry,
)
from dicomlab_core.groundtruth.input_manifest import (
    INPUT_LINE_SEPARATORS,
    LABELS_KEY,
    MAX_MANIFEST_LINE_CHARS,
    PATIENT_KEY_KEY,
    SERIES_UID_KEY,
    SOP_UID_KEY,
    SOURCE_KEY,
    SOURCE_REF_KEY,
    STUDY_UID_KEY,
    ManifestError,
    ManifestLine,
    dump_line,
    input_line,
    iter_manifest,
    parse_manifest_line,
)
from dicomlab_core.groundtruth.output_manifest import (
    CREATION_DATE_FORMAT,
    CUSTOM_TYPE,
    LabeledObject,
    answer_from_content,
    is_custom_type,
    label_attributes,
    labeled_object,
    output_manifest_line,
    output_metadata,
    read_output_manifest,
)
from dicomlab_core.groundtruth.pre_annotation import PreAnnotationRequest, human_annotation_required
from dicomlab_core.groundtruth.worker_answer import (
    SKIP_KEY,
    AnswerError,
    AnswerSkipped,
    Roi,
    RoiTool,
    WorkerAnswer,
    parse_rois,
    parse_worker_answer,
)

__all__ = [
    "CREATION_DATE_FORMAT", "CUSTOM_TYPE", "INPUT_LINE_SEPARATORS", "LABELS_KEY", "MAX_MANIFEST_LINE_CHARS",
    "METADATA_SUFFIX", "PATIENT_KEY_KEY", "SERIES_UID_KEY", "SKIP_KEY", "SOP_UID_KEY", "SOURCE_KEY",
    "SOURCE_REF_KEY",
    "STUDY_UID_KEY", "AnswerError", "AnswerSkipped", "ConsolidatedLabel", "FindingConsensus", "Flag", "LabeledObject",
    "ManifestError", "ManifestLine", "PostAnnotationRequest", "PreAnnotationRequest", "RejectedAnswer", "Roi",
    "RoiTool", "WorkerAnswer", "answer_from_content", "dump_line", "human_annotation_required", "input_line",
    "is_custom_type", "iter_manifest", "label_attributes", "labeled_object", "output_manifest_line",
    "output_metadata", "parse_manifest_line", "parse_post_request", "parse_rois", "parse_worker_answer",
    "read_output_manifest", "response_entry",
]
