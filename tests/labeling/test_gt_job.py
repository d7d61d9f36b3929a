"""CreateLabelingJob: our request validated by botocore's own SageMaker service model (Stubber)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber

from dicomlab_core.errors import BadRequest, UpstreamError
from dicomlab_labeling.groundtruth.job import GroundTruthJobSpec, build_request, create_job

ACCOUNT = "123456789012"
SPEC = GroundTruthJobSpec(
    name="chest-xray-findings-1",
    input_manifest_uri="s3://labels/manifests/input.manifest",
    output_path="s3://labels/output/",
    role_arn=f"arn:aws:iam::{ACCOUNT}:role/GroundTruthExecution",
    workteam_arn=f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/private-crowd/radiologists",
    template_uri="s3://labels/templates/chest-xray.liquid.html",
    pre_lambda_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dicomlab-gt-pre",
    post_lambda_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:dicomlab-gt-post",
    workers_per_object=5, task_time_limit_seconds=1800, task_availability_seconds=14400,
    max_concurrent_tasks=200, tags={"project": "dicomlab"},
)
ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:labeling-job/chest-xray-findings-1"


@pytest.fixture
def sagemaker() -> Any:
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_create_job_request_passes_botocore_validation(sagemaker: Any) -> None:
    expected = {
        "LabelingJobName": "chest-xray-findings-1",
        "LabelAttributeName": "chest-xray-findings-1",
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": SPEC.input_manifest_uri}}},
        "OutputConfig": {"S3OutputPath": "s3://labels/output/"},
        "RoleArn": SPEC.role_arn,
        "Tags": [{"Key": "project", "Value": "dicomlab"}],
        "HumanTaskConfig": {
            "WorkteamArn": SPEC.workteam_arn,
            "UiConfig": {"UiTemplateS3Uri": SPEC.template_uri},
            "PreHumanTaskLambdaArn": SPEC.pre_lambda_arn,
            "TaskKeywords": ["xray", "radiology", "classification"],
            "TaskTitle": SPEC.title,
            "TaskDescription": SPEC.description,
            "NumberOfHumanWorkersPerDataObject": 5,
            "TaskTimeLimitInSeconds": 1800,
            "TaskAvailabilityLifetimeInSeconds": 14400,
            "MaxConcurrentTaskCount": 200,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": SPEC.post_lambda_arn},
        },
    }
    with Stubber(sagemaker) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": ARN}, expected)
        assert create_job(SPEC, client=sagemaker) == ARN
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda r: r["HumanTaskConfig"].pop("TaskTitle"), "Missing required parameter"),
    (lambda r: r["HumanTaskConfig"].update(PreHumanTaskLambdaARN="x"), "Unknown parameter"),
    (lambda r: r["HumanTaskConfig"].update(TaskTimeLimitInSeconds="3600"), "Invalid type"),
    (lambda r: r["HumanTaskConfig"].update(TaskTimeLimitInSeconds=10), "valid min value: 30"),
])
def test_botocore_validation_is_real(sagemaker: Any, breakage: Any, message: str) -> None:
    """The Stubber refuses what the service model refuses, so the passing test above means something."""
    bad = build_request(SPEC)
    breakage(bad)
    with Stubber(sagemaker) as stub:
        stub.add_response("create_labeling_job", {"LabelingJobArn": ARN})
        with pytest.raises(ParamValidationError, match=message):
            sagemaker.create_labeling_job(**bad)


def test_aws_errors_become_upstream_errors(sagemaker: Any) -> None:
    with Stubber(sagemaker) as stub:
        stub.add_client_error("create_labeling_job", "ResourceInUse", "Labeling job already exists")
        with pytest.raises(UpstreamError, match="ResourceInUse"):
            create_job(SPEC, client=sagemaker)


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "bad_name"}, "job name"),
    ({"workers_per_object": 10}, "between 1 and 9"),
    ({"template_uri": "https://x/t.html"}, "s3://"),
    ({"task_availability_seconds": 86400 * 2}, "image tokens expire"),
    ({"label_attribute": "x-metadata"}, "label attribute"),
    ({"keywords": ("chest, x-ray",)}, "keyword"),
])
def test_spec_is_checked_before_sending(change: dict[str, object], message: str) -> None:
    from dataclasses import replace

    with pytest.raises(BadRequest, match=message):
        build_request(replace(SPEC, **change))  # type: ignore[arg-type]


def test_cli_dry_run_prints_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlab_cli.main import main

    code = main(["labeling", "gt-create-job", "--name", "job-2", "--manifest", SPEC.input_manifest_uri,
                 "--output", SPEC.output_path, "--role-arn", SPEC.role_arn, "--workteam-arn", SPEC.workteam_arn,
                 "--template", SPEC.template_uri, "--pre-lambda-arn", SPEC.pre_lambda_arn,
                 "--post-lambda-arn", SPEC.post_lambda_arn, "--attr", "findings", "--workers", "3",
                 "--tag", "team=radiology", "--dry-run"])
    assert code == 0
    request = json.loads(capsys.readouterr().out)
    assert request["LabelAttributeName"] == "findings"
    assert request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 3
    assert request["Tags"] == [{"Key": "team", "Value": "radiology"}]
