"""`dicomlab train submit`: the Job manifests, validated against real Kubernetes schemas (strict).

The multi-node JobSet is tested in test_jobset.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomlab_cli.main import main
from dicomlab_training.config import PREEMPTED_EXIT_CODE
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
    assert rules[1] == {"action": "Ignore", "onExitCodes": {"containerName": "train", "operator": "In",
                                                            "values": [PREEMPTED_EXIT_CODE]}}
    assert job["spec"]["template"]["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
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
    assert password["valueFrom"]["secretKeyRef"] == {"name": "orthanc-creds", "key": "orthanc-password"}


def test_defaults_are_the_charts_secret_keys_image_and_orthanc() -> None:
    (job,) = build_training_job(spec_from({}))
    container = job["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"DICOMLAB_TRAIN__ORTHANC__USERNAME": {"name": "dicomlab-app", "key": "orthanc-username"},
                    "DICOMLAB_TRAIN__ORTHANC__PASSWORD": {"name": "dicomlab-app", "key": "orthanc-password"}}
    assert container["image"] == "ghcr.io/dicomlab/dicomlab-training:0.1.0"
    assert {"name": "DICOMLAB_TRAIN__ORTHANC__URL", "value": "http://dicomlab-orthanc:8042"} in container["env"]


def test_defaults_file_is_the_spec_defaults() -> None:
    assert load_defaults() == defaults_document(), f"regenerate {DEFAULTS_FILE.name}"
    with pytest.raises(ValueError, match="unknown job setting"):
        spec_from({"gpus": 2})


def test_cli_dry_run_prints_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "submit", "--dry-run", "--gpus-per-node", "4", "--node-group", "gpu",
                 "--image", "registry.example/dicomlab-training:0.1.0", "--", "--manifest", "s3://b/m", "--epochs", "3"])
    assert code == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [m["kind"] for m in manifests] == ["Job"]
    container = manifests[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/dicomlab-training:0.1.0"
    assert container["command"][:6] == ["python", "-m", "dicomlab_training.torchrun", "--nnodes=1",
                                        "--nproc-per-node=4", "--standalone"]
    assert container["command"][-4:] == ["--manifest", "s3://b/m", "--epochs", "3"]
    validate_strict(manifests, tmp_path)


def test_every_submit_option_has_help() -> None:
    from dicomlab_cli.main import build_parser

    parser = build_parser()
    commands: Any = next(a for a in parser._actions if a.dest == "command").choices
    actions: Any = next(a for a in commands["train"]._actions if a.dest == "action").choices
    for name in ("run", "evaluate", "export", "submit"):
        for option in actions[name]._actions:
            assert option.help, f"train {name} {option.option_strings or option.dest} has no help text"


def test_submit_without_a_kubeconfig_is_one_clean_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing-kubeconfig"))
    done = subprocess.run([sys.executable, "-m", "dicomlab_cli.main", "train", "submit", "--", "--manifest", "s3://b/m"],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("dicomlab train: error: no Kubernetes configuration") and "--dry-run" in lines[0]


def test_predict_job(tmp_path: Path) -> None:
    """--mode predict: the same image, Secret, ServiceAccount and labels, running `train predict` in one pod."""
    args = ("--model", "s3://b/runs/1/models/best.pt", "--manifest", "s3://b/pool.manifest",
            "--out", "s3://b/predictions/1", "--batch-size", "64", "--device", "cuda")
    spec = spec_from({"name": "cxr-predict-1", "namespace": "ml", "mode": "predict", "orthanc_secret": "orthanc-creds",
                      "train_args": args})
    manifests = build_training_job(spec)
    validate_strict(manifests, tmp_path)
    (job,) = manifests
    train = build_training_job(spec_from({"name": "cxr-predict-1", "namespace": "ml",
                                          "orthanc_secret": "orthanc-creds", "train_args": args}))[0]
    assert job["kind"] == "Job"
    labels = job["metadata"]["labels"]
    assert labels == {**train["metadata"]["labels"], "dicomlab.io/mode": "predict"}
    assert labels["app.kubernetes.io/component"] == "training"  # what the NetworkPolicy admits to Orthanc
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    pod, train_pod = job["spec"]["template"]["spec"], train["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == train_pod["serviceAccountName"] == "dicomlab-training"
    (container,), (train_container,) = pod["containers"], train_pod["containers"]
    assert container["image"] == train_container["image"] == load_defaults()["image"]
    assert container["env"] == train_container["env"]
    assert container["command"] == ["python", "-m", "dicomlab_training", "predict", "--cache-dir", "/cache", *args]
    assert train_container["command"][3] == "run"
    assert job["spec"]["podFailurePolicy"] == train["spec"]["podFailurePolicy"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train_args": ("--manifest", "s3://b/m", "--out", "s3://b/o")}, "predict needs --model"),
    ({"nodes": 2, "train_args": ("--model", "m", "--manifest", "s3://b/m", "--out", "s3://b/o")}, "one node"),
    ({"gpus_per_node": 4, "train_args": ("--model", "m", "--manifest", "s3://b/m", "--out", "s3://b/o")},
     "at most one GPU"),
])
def test_predict_job_refuses_what_it_cannot_run(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_training_job(spec_from({"mode": "predict", **overrides}))
    with pytest.raises(ValueError, match="mode: one of train, predict"):
        build_training_job(spec_from({"mode": "infer"}))


def test_cli_predict_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["train", "submit", "--mode", "predict", "--dry-run", "--name", "pred-7", "--gpus-per-node", "0",
                 "--", "--model=s3://b/best.pt", "--manifest", "s3://b/m", "--out", "s3://b/p", "--limit", "10"])
    assert code == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    validate_strict(manifests, tmp_path)
    (job,) = manifests
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:4] == ["python", "-m", "dicomlab_training", "predict"]
    assert container["command"][-7:] == ["--model=s3://b/best.pt", "--manifest", "s3://b/m", "--out", "s3://b/p",
                                         "--limit", "10"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert job["metadata"]["labels"]["dicomlab.io/mode"] == "predict"
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == "pred-7"
    assert main(["train", "submit", "--mode", "predict", "--dry-run", "--", "--manifest", "s3://b/m"]) == 2
