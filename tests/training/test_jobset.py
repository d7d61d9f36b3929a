"""`dicomlab train submit --nodes N`: a JobSet (jobset.x-k8s.io/v1alpha2) checked against its CRD's fields.

The JobSet CRD is not on this machine (and no PyPI package ships it), so :data:`JOBSET_SCHEMA` restates
the v1alpha2 fields the object uses — names, types, enums, required keys, the rule-name pattern — as
published in kubernetes-sigs/jobset ``config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml``
(checked at commit 08dfbdf, Aug 2026), with ``additionalProperties: false`` so a misspelt or invented
field fails. The child Job (``replicatedJobs[].template``) is a batch/v1 JobTemplateSpec and is validated
strictly against the real Kubernetes schemas.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_launch import validate_strict

from dicomlab_cli.main import main
from dicomlab_training.cli import config_from_args
from dicomlab_training.config import PREEMPTED_EXIT_CODE, checkpoint_location
from dicomlab_training.launch import build_training_job, spec_from

_STRINGS = {"type": "array", "items": {"type": "string"}}
_META = {"type": "object", "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                          "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                          "annotations": {"type": "object",
                                                          "additionalProperties": {"type": "string"}}}}
JOBSET_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "jobset.x-k8s.io/v1alpha2"}, "kind": {"const": "JobSet"}, "metadata": _META,
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "coordinator": {"type": "object"}, "managedBy": {"type": "string"}, "suspend": {"type": "boolean"},
            "startupPolicy": {"type": "object"}, "volumeClaimPolicies": {"type": "array"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "network": {"type": "object", "additionalProperties": False, "properties": {
                "enableDNSHostnames": {"type": "boolean"}, "publishNotReadyAddresses": {"type": "boolean"},
                "subdomain": {"type": "string"}}},
            "failurePolicy": {"type": "object", "additionalProperties": False, "properties": {
                "maxRestarts": {"type": "integer"},
                "restartStrategy": {"enum": ["Recreate", "BlockingRecreate", "InPlaceRestart"]},
                "rules": {"type": "array", "items": {
                    "type": "object", "required": ["action", "name"], "additionalProperties": False, "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
                        "action": {"enum": ["FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts",
                                            "RestartJob", "RestartJobAndIgnoreMaxRestarts"]},
                        "onJobFailureReasons": _STRINGS, "onJobFailureMessagePatterns": _STRINGS,
                        "targetReplicatedJobs": _STRINGS}}}}},
            "successPolicy": {"type": "object", "required": ["operator"], "additionalProperties": False,
                              "properties": {"operator": {"enum": ["All", "Any"]}, "targetReplicatedJobs": _STRINGS}},
            "replicatedJobs": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "template"], "additionalProperties": False, "properties": {
                    "name": {"type": "string"}, "groupName": {"type": "string"}, "dependsOn": {"type": "array"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "template": {"type": "object", "additionalProperties": False,
                                 "properties": {"metadata": _META, "spec": {"type": "object"}}}}}},
        }},
    },
}

JOB_FAILURE_REASONS = {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded",
                       "FailedIndexes"}
"""Reasons a batch/v1 Job fails with (its Failed condition), what ``onJobFailureReasons`` matches."""


def validate_jobset(jobset: dict[str, Any], tmp_path: Path) -> None:
    jsonschema.validate(jobset, JOBSET_SCHEMA)
    for rule in jobset["spec"]["failurePolicy"]["rules"]:
        assert set(rule.get("onJobFailureReasons", [])) <= JOB_FAILURE_REASONS
    for replicated in jobset["spec"]["replicatedJobs"]:
        child = {"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": f"{jobset['metadata']['name']}-{replicated['name']}-0",
                              **replicated["template"].get("metadata", {})},
                 "spec": replicated["template"]["spec"]}
        validate_strict([child], tmp_path)


def multinode(**extra: Any) -> dict[str, Any]:
    settings = {"name": "cxr-ddp", "nodes": 3, "gpus_per_node": 8, "karpenter_nodepool": "gpu",
                "capacity_type": "spot", "backoff_limit": 5,
                "train_args": ("--manifest", "s3://b/out.manifest", "--out", "s3://b/runs/ddp"), **extra}
    (jobset,) = build_training_job(spec_from(settings))
    assert isinstance(jobset, dict)
    return jobset


def test_multi_node_is_a_valid_jobset(tmp_path: Path) -> None:
    jobset = multinode()
    validate_jobset(jobset, tmp_path)
    bad = {**jobset, "spec": {**jobset["spec"], "failurePolicy": {"maxRestarts": 1, "rules": [{"action": "Retry"}]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, JOBSET_SCHEMA)  # the check has teeth


def test_a_failed_rank_restarts_the_whole_group_and_disruptions_do_not_count() -> None:
    jobset = multinode()
    policy = jobset["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == 5 and policy.get("restartStrategy", "Recreate") == "Recreate"
    free = [r for r in policy["rules"] if r["action"] == "RestartJobSetAndIgnoreMaxRestarts"]
    assert free == [{"name": free[0]["name"], "action": "RestartJobSetAndIgnoreMaxRestarts",
                     "onJobFailureReasons": ["PodFailurePolicy"]}]
    assert policy["rules"].index(free[0]) == 0, "the first matching rule wins: the free restart comes first"
    assert all(r["action"].startswith("RestartJobSet") for r in policy["rules"]), "nothing fails the JobSet early"
    (replicated,) = jobset["spec"]["replicatedJobs"]
    child = replicated["template"]["spec"]
    assert replicated.get("replicas", 1) == 1
    assert child["completionMode"] == "Indexed" and child["parallelism"] == child["completions"] == 3
    assert child["backoffLimit"] == 0, "a failed pod fails its Job at once, so the JobSet restarts the group"
    # a disruption (spot reclaim, eviction) or a preempted exit fails the Job with reason PodFailurePolicy
    rules = child["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules
    assert {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In",
                                                  "values": [PREEMPTED_EXIT_CODE]}} in rules


def test_torchrun_meets_through_the_jobsets_headless_service() -> None:
    jobset = multinode()
    network = jobset["spec"]["network"]
    assert network["enableDNSHostnames"] is True
    subdomain = network.get("subdomain", jobset["metadata"]["name"])
    (replicated,) = jobset["spec"]["replicatedJobs"]
    pod = replicated["template"]["spec"]["template"]
    command = pod["spec"]["containers"][0]["command"]
    leader = f"{jobset['metadata']['name']}-{replicated['name']}-0-0.{subdomain}"  # the JobSet's pod host name
    assert f"--rdzv-endpoint={leader}:29400" in command and "--rdzv-backend=c10d" in command
    assert "--nnodes=3" in command and "--nproc-per-node=8" in command
    assert command[:3] == ["python", "-m", "dicomlab_training.torchrun"]
    assert "subdomain" not in pod["spec"], "the JobSet controller sets the subdomain"
    assert pod["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert pod["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "gpu", "karpenter.sh/capacity-type": "spot"}


def test_a_restarted_group_resumes_from_the_object_store() -> None:
    from dicomlab_cli.main import build_parser

    jobset = multinode()
    command = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["command"]
    run_args = command[command.index("dicomlab_training") + 1:]
    args = build_parser().parse_args(["train", *run_args])
    config = config_from_args(args)
    assert config.resume and checkpoint_location(config, env={}) == "s3://b/runs/ddp/checkpoints"


def test_cli_renders_a_jobset_for_several_nodes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = "train submit --dry-run --nodes 2 --gpus-per-node 4 --node-group gpu-p4d -- --manifest s3://b/m"
    assert main(shlex.split(argv)) == 0
    (jobset,) = yaml.safe_load_all(capsys.readouterr().out)
    validate_jobset(jobset, tmp_path)
    assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] == 2


def test_a_name_too_long_for_pod_host_names_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "submit", "--dry-run", "--nodes", "2", "--name", "x" * 60]) == 2
    assert "63 characters" in capsys.readouterr().err
