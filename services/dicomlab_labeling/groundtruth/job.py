"""Create a SageMaker Ground Truth labeling job for teams that still run Ground Truth.

:func:`build_request` turns a :class:`GroundTruthJobSpec` into the ``CreateLabelingJob`` request
(custom task: our ``.liquid.html`` template, both callback Lambdas, readers per image);
:func:`create_job` sends it with boto3. The request shape is checked against botocore's own
service model in the tests (``botocore.stub.Stubber`` validates parameters before answering).

The image-access token handed out at pre-annotation must outlive the task: Ground Truth calls the
pre-annotation Lambda when it queues a task, and a reader may open it until the availability lifetime
plus the task time limit have passed. :func:`build_request` refuses a job whose tasks could outlive
``token_ttl_seconds`` (the labeling service's ``DICOMLAB_LABELING__TOKEN_TTL_SECONDS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dicomlab_core.errors import BadRequest, UpstreamError

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_KEYWORD = re.compile(r"^[A-Za-z0-9]+( [A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class GroundTruthJobSpec:
    """What a Ground Truth custom labeling job needs."""

    name: str
    input_manifest_uri: str
    output_path: str
    role_arn: str
    workteam_arn: str
    template_uri: str
    pre_lambda_arn: str
    post_lambda_arn: str
    label_attribute: str = ""
    """Label attribute name in the output manifest (default: the job name)."""
    workers_per_object: int = 3
    task_time_limit_seconds: int = 3600
    task_availability_seconds: int = 21600
    max_concurrent_tasks: int | None = None
    title: str = "Chest X-ray findings"
    description: str = "Mark each finding as present, absent or uncertain and outline it on the image."
    keywords: tuple[str, ...] = ("xray", "radiology", "classification")
    label_category_config_uri: str | None = None
    kms_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    token_ttl_seconds: int = 43200
    """The labeling service's token lifetime; the job's tasks must not outlive it."""

    @property
    def attribute(self) -> str:
        return self.label_attribute or self.name


def _check(spec: GroundTruthJobSpec) -> None:
    if not _NAME.match(spec.name):
        raise BadRequest("job name: 1–63 letters, digits and hyphens, starting with a letter or digit")
    if not _NAME.match(spec.attribute) or spec.attribute.endswith("-metadata"):
        raise BadRequest("label attribute: 1–63 letters, digits and hyphens, not ending in -metadata")
    for label, uri in (("input manifest", spec.input_manifest_uri), ("output path", spec.output_path),
                       ("template", spec.template_uri)):
        if not uri.startswith("s3://"):
            raise BadRequest(f"{label} must be an s3:// URI")
    if not 1 <= spec.workers_per_object <= 9:
        raise BadRequest("workers per object must be between 1 and 9")
    # CreateLabelingJob's own bounds (HumanTaskConfig), checked here so a bad value is a clear 400
    # before any AWS call rather than a ValidationException from the API.
    if not 30 <= spec.task_time_limit_seconds <= 604_800:
        raise BadRequest("task time limit must be from 30 seconds to 604800 seconds (7 days)")
    if not 60 <= spec.task_availability_seconds <= 864_000:
        raise BadRequest("task availability must be from 60 seconds to 864000 seconds (10 days)")
    if spec.max_concurrent_tasks is not None and not 1 <= spec.max_concurrent_tasks <= 5000:
        raise BadRequest("max concurrent tasks must be from 1 to 5000")
    lifetime = spec.task_availability_seconds + spec.task_time_limit_seconds
    if lifetime > spec.token_ttl_seconds:
        raise BadRequest(f"tasks can live {lifetime} s (availability + time limit) but image tokens expire after "
                         f"{spec.token_ttl_seconds} s: raise DICOMLAB_LABELING__TOKEN_TTL_SECONDS (and --token-ttl) "
                         "or shorten the task availability")
    for keyword in spec.keywords:
        if not _KEYWORD.match(keyword) or len(keyword) > 30:
            raise BadRequest(f"keyword {keyword!r}: letters, digits and single spaces, at most 30 characters")


def build_request(spec: GroundTruthJobSpec) -> dict[str, Any]:
    """The ``CreateLabelingJob`` parameters for ``spec`` (validated first)."""
    _check(spec)
    human: dict[str, Any] = {
        "WorkteamArn": spec.workteam_arn,
        "UiConfig": {"UiTemplateS3Uri": spec.template_uri},
        "PreHumanTaskLambdaArn": spec.pre_lambda_arn,
        "TaskTitle": spec.title,
        "TaskDescription": spec.description,
        "NumberOfHumanWorkersPerDataObject": spec.workers_per_object,
        "TaskTimeLimitInSeconds": spec.task_time_limit_seconds,
        "TaskAvailabilityLifetimeInSeconds": spec.task_availability_seconds,
        "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": spec.post_lambda_arn},
    }
    if spec.keywords:
        human["TaskKeywords"] = list(spec.keywords)
    if spec.max_concurrent_tasks:
        human["MaxConcurrentTaskCount"] = spec.max_concurrent_tasks
    output: dict[str, Any] = {"S3OutputPath": spec.output_path}
    if spec.kms_key_id:
        output["KmsKeyId"] = spec.kms_key_id
    request: dict[str, Any] = {
        "LabelingJobName": spec.name,
        "LabelAttributeName": spec.attribute,
        # No DataAttributes.ContentClassifiers: we never claim that medical images are free of PHI.
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": spec.input_manifest_uri}}},
        "OutputConfig": output,
        "RoleArn": spec.role_arn,
        "HumanTaskConfig": human,
    }
    if spec.label_category_config_uri:
        request["LabelCategoryConfigS3Uri"] = spec.label_category_config_uri
    if spec.tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
    return request


def create_job(spec: GroundTruthJobSpec, *, client: Any = None, region: str | None = None) -> str:
    """Create the job; returns its ARN. Errors from AWS become :class:`UpstreamError`."""
    request = build_request(spec)
    if client is None:
        import boto3

        client = boto3.client("sagemaker", region_name=region)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.create_labeling_job(**request)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise UpstreamError(f"CreateLabelingJob failed: {err.get('Code', 'error')}: {err.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise UpstreamError(f"CreateLabelingJob failed: {exc}") from exc
    return str(response["LabelingJobArn"])


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (CLI ``--tag``) as a dict."""
    tags = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise BadRequest(f"tag {value!r}: expected KEY=VALUE")
        tags[key] = val
    return tags
