"""The chart's training Job is the spec `dicomlab train submit` produces (one source of truth).

The chart template is rendered and compared with ``build_training_job`` from
training/dicomlab_training/launch.py for the same values. The chart adds a few policy items on
top; they are applied to the launcher's output by ``chart_policy`` below, so everything else must
match exactly. When the launcher adopts an item, its entry here becomes a no-op.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from deploy_chart import CHART, render_scenario, render_values, scenario_values

launch = pytest.importorskip("dicomlab_training.launch", reason="the training launcher has not landed yet")

APP_SECRET_KEYS = {"username": "orthanc-username", "password": "orthanc-password"}
"""The chart's app Secret holds many values, so its Orthanc keys are prefixed (the launcher expects a
Secret with exactly ``username``/``password``)."""


def chart_spec(values: dict[str, Any]) -> Any:
    """The launcher's JobSpec for the chart values (release dicomlab, namespace dicomlab)."""
    t = values["training"]
    merged = json.loads(json.dumps(chart_defaults()["training"]))
    merged.update(t)
    name = f"dicomlab-train-{merged['runName']}"
    args = ["--manifest", merged["manifestUrl"], "--out", f"{merged['outputUrl'].rstrip('/')}/{merged['runName']}",
            *merged["args"]]
    return launch.spec_from({
        "name": name, "namespace": "dicomlab",
        "image": f"{merged['image']['repository']}:{merged['image']['tag'] or '0.1.0'}",
        "image_pull_policy": merged["image"]["pullPolicy"], "train_args": args, "nodes": merged["nodes"],
        "gpus_per_node": merged["gpusPerNode"], "cpu": merged["cpu"], "memory": merged["memory"],
        "shm_size": merged["shmSize"], "service_account": "dicomlab-training", "node_group": merged["nodeGroup"],
        "karpenter_nodepool": merged["karpenterNodePool"], "capacity_type": merged["capacityType"],
        "node_selector": merged["nodeSelector"], "tolerations": merged["tolerations"], "affinity": merged["affinity"],
        "backoff_limit": merged["backoffLimit"], "active_deadline_seconds": merged["activeDeadlineSeconds"],
        "ttl_seconds_after_finished": merged["ttlSecondsAfterFinished"], "env": merged["env"],
        "orthanc_secret": "dicomlab-app", "orthanc_url": "http://dicomlab-orthanc:8042",
        "pushgateway_url": "http://prometheus-pushgateway.monitoring.svc:9091",
    })


def chart_defaults() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def chart_policy(obj: dict[str, Any]) -> dict[str, Any]:
    """The launcher's object with the chart's additions applied (and labels dropped: compared apart)."""
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("labels", None)
    if obj["kind"] == "Service":
        obj["spec"].pop("selector")
        return obj
    template = obj["spec"]["template"]
    template["metadata"].pop("labels", None)
    pod = template["spec"]
    pod["automountServiceAccountToken"] = False
    for c in pod["containers"]:
        c["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
        c["resources"]["limits"].setdefault("cpu", c["resources"]["requests"]["cpu"])
        for entry in c["env"]:
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                ref["key"] = APP_SECRET_KEYS.get(ref["key"], ref["key"])
    return obj


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """Through JSON (quoted numbers and YAML ints compare equal), env as a name map, labels dropped."""
    obj = json.loads(json.dumps(obj))
    obj["metadata"].pop("labels", None)
    if obj["kind"] == "Service":
        obj["spec"].pop("selector", None)
        for port in obj["spec"]["ports"]:
            port.setdefault("protocol", "TCP")
        return obj
    template = obj["spec"]["template"]
    template["metadata"].pop("labels", None)
    for c in template["spec"]["containers"]:
        c["env"] = {e["name"]: e for e in c["env"]}
        for bound in c["resources"].values():
            for key, value in bound.items():
                bound[key] = str(value)
        for port in c.get("ports", []):
            port.setdefault("protocol", "TCP")
    return obj


def chart_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = render_values(values) if values is not None else None
    assert rendered is not None
    return [o for o in rendered.objects
            if o["kind"] in ("Job", "Service") and o["metadata"]["name"].startswith("dicomlab-train-")]


@pytest.mark.parametrize("variant", ["multi-node", "single-gpu", "karpenter-cpu"])
def test_chart_job_equals_the_launcher_job(variant: str) -> None:
    values = scenario_values("training")
    if variant == "single-gpu":
        values["training"].update({"nodes": 1, "gpusPerNode": 1, "nodeGroup": "", "capacityType": "",
                                   "env": {"OMP_NUM_THREADS": "8", "A_FIRST": "x"}})
    elif variant == "karpenter-cpu":
        values["training"].update({"nodes": 1, "gpusPerNode": 0, "nodeGroup": "", "karpenterNodePool": "gpu",
                                   "capacityType": "on-demand", "ttlSecondsAfterFinished": 0,
                                   "activeDeadlineSeconds": 0, "tolerations": []})
    ours = chart_objects(values)
    theirs = [chart_policy(o) for o in launch.build_training_job(chart_spec(values))]
    assert [o["kind"] for o in ours] == [o["kind"] for o in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert normalized(mine) == normalized(reference)


def test_chart_training_defaults_mirror_the_launcher_defaults() -> None:
    job_defaults = launch.load_defaults()
    t = chart_defaults()["training"]
    pairs = {"nodes": "nodes", "gpusPerNode": "gpus_per_node", "cpu": "cpu", "memory": "memory",
             "shmSize": "shm_size", "nodeGroup": "node_group", "karpenterNodePool": "karpenter_nodepool",
             "capacityType": "capacity_type", "nodeSelector": "node_selector", "tolerations": "tolerations",
             "affinity": "affinity", "backoffLimit": "backoff_limit",
             "activeDeadlineSeconds": "active_deadline_seconds",
             "ttlSecondsAfterFinished": "ttl_seconds_after_finished", "env": "env"}
    for chart_key, launcher_key in pairs.items():
        assert t[chart_key] == job_defaults[launcher_key], chart_key
    assert t["image"]["pullPolicy"] == job_defaults["image_pull_policy"]


def test_training_job_has_gpu_shm_spot_tolerance_and_labels() -> None:
    rendered = render_scenario("training")
    job = next(o for o in rendered.of_kind("Job") if "-train-" in o["metadata"]["name"])  # not the migration hook
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert pod["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "gpu-p4d", "eks.amazonaws.com/capacityType": "SPOT"}
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    assert job["spec"]["completionMode"] == "Indexed"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "training" and labels["app.kubernetes.io/instance"] == "dicomlab"
    assert "--out" in c["command"] and "s3://hospital-dicomlab/runs/cxr-densenet-001" in c["command"]
    assert not [j for j in render_scenario("defaults").of_kind("Job") if "-train-" in j["metadata"]["name"]], \
        "training is off by default"
