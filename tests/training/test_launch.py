"""`dicomlab train submit`: the Job manifests, validated against real Kubernetes schemas (strict)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from dicomlab_cli.main import main
from dicomlab_training.launch import DEFAULTS_FILE, build_training_job, defaults_document, load_defaults, spec_from

KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")


def validate_strict(manifests: list[dict[str, object]], tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    for version in KUBERNETES_VERSIONS:
        done = subprocess.run([str(Path(__file__).parents[2] / ".venv/bin/kubernetes-validate"), "--strict",
                               "-k", version, str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_single_gpu_job(tmp_path: Path) -> None:
    spec = spec_from({"name": "cxr-1", "namespace": "ml", "node_group": "gpu-a10g", "capacity_type": "spot",
                      "orthanc_secret": "orthanc-creds", "orthanc_url": "http://orthanc:8042",
                      "train_args": ("--manifest", "s3://b/out.manifest", "--out", "s3://b/runs/1")})
    manifests = build_training_job(spec)
    validate_strict(manifests, tmp_path)
    (job,) = manifests
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 3
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "dicomlab-training"
    assert pod["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "gpu-a10g", "eks.amazonaws.com/capacityType": "SPOT"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"][:4] == ["python", "-m", "dicomlab_training", "run"]
    assert "s3://b/out.manifest" in container["command"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    password = next(e for e in container["env"] if e["name"] == "DICOMLAB_TRAIN__ORTHANC__PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "orthanc-creds", "key": "password"}


def test_multi_node_indexed_job_with_headless_service(tmp_path: Path) -> None:
    spec = spec_from({"name": "cxr-ddp", "nodes": 3, "gpus_per_node": 8, "karpenter_nodepool": "gpu",
                      "capacity_type": "spot", "affinity": {"podAntiAffinity": {
                          "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                              "topologyKey": "kubernetes.io/hostname",
                              "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "cxr-ddp"}}}}]}}})
    manifests = build_training_job(spec)
    validate_strict(manifests, tmp_path)
    service, job = manifests
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    assert pod["nodeSelector"] == {"karpenter.sh/nodepool": "gpu", "karpenter.sh/capacity-type": "spot"}
    command = pod["containers"][0]["command"]
    assert command[:3] == ["torchrun", "--nnodes=3", "--nproc-per-node=8"]
    assert "--rdzv-backend=c10d" in command
    assert f"--rdzv-endpoint=cxr-ddp-0.{service['metadata']['name']}.default.svc:29400" in command
    assert pod["affinity"]["podAntiAffinity"]


def test_defaults_file_is_the_spec_defaults() -> None:
    assert load_defaults() == defaults_document(), f"regenerate {DEFAULTS_FILE.name}"
    with pytest.raises(ValueError, match="unknown job setting"):
        spec_from({"gpus": 2})


def test_cli_dry_run_prints_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "submit", "--dry-run", "--nodes", "2", "--gpus-per-node", "4", "--node-group", "gpu",
                 "--image", "registry.example/dicomlab-training:0.1.0", "--", "--manifest", "s3://b/m", "--epochs", "3"])
    assert code == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [m["kind"] for m in manifests] == ["Service", "Job"]
    container = manifests[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/dicomlab-training:0.1.0"
    assert container["command"][-4:] == ["--manifest", "s3://b/m", "--epochs", "3"]
    validate_strict(manifests, tmp_path)
