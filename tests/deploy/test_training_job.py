"""Training pods and the chart: one spec with the chart's Job template, admitted by its NetworkPolicies.

The chart template is rendered and compared with ``build_training_job`` from
training/dicomlab_training/launch.py for the same values. The chart adds a few policy items on
top; they are applied to the launcher's output by ``chart_policy`` below, so everything else must
match exactly. When the launcher adopts an item, its entry here becomes a no-op. Multi-node runs are
a JobSet from the launcher (training Jobs are leaving the release, issue 17); the chart's multi-node
Indexed Job is no longer compared.

Reachability: pods rendered by the launcher (Job and JobSet) and from k8s/*.yaml must be selected by
the rendered chart's NetworkPolicy peers that admit clients to Orthanc and the manifest service, and
must use the Secret, keys, image and Orthanc Service the chart creates.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from deploy_chart import CHART, render_scenario, render_values, scenario_values

launch = pytest.importorskip("dicomlab_training.launch", reason="the training launcher has not landed yet")

LAUNCHER_ONLY_ANNOTATIONS = ("karpenter.sh/do-not-disrupt",)
"""Pod annotations the launcher adds that the chart's (outgoing) Job template does not have."""


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
    annotations = template["metadata"].get("annotations", {})
    for key in LAUNCHER_ONLY_ANNOTATIONS:
        annotations.pop(key, None)
    if not annotations:
        template["metadata"].pop("annotations", None)
    # the chart's template predates the rule for the preempted exit code (143)
    rules = obj["spec"]["podFailurePolicy"]["rules"]
    obj["spec"]["podFailurePolicy"]["rules"] = [r for r in rules if "onExitCodes" not in r]
    pod = template["spec"]
    pod["automountServiceAccountToken"] = False
    for c in pod["containers"]:
        c["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
        c["resources"]["limits"].setdefault("cpu", c["resources"]["requests"]["cpu"])
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


@pytest.mark.parametrize("variant", ["single-gpu", "karpenter-cpu"])
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


# --- reachability: training pods against the chart's rendered NetworkPolicies -------------------------------------

def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions) applied to ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if (operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and labels.get(key) in values) \
                or (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def _admitted(policy: dict[str, Any], pod_labels: dict[str, str], pod_namespace: str, port: int) -> bool:
    """Whether ``policy`` lets a pod with these labels (in that namespace) in on ``port``."""
    for rule in policy["spec"].get("ingress", []):
        if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule.get("from", []):
            if "ipBlock" in peer or "namespaceSelector" in peer:
                continue  # only same-namespace pod peers concern training pods
            if pod_namespace == policy["metadata"]["namespace"] and _selects(peer["podSelector"], pod_labels):
                return True
    return False


def _pod_templates(obj: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(pod template, namespace) of a Job or a JobSet."""
    namespace = obj["metadata"]["namespace"]
    if obj["kind"] == "JobSet":
        return [(rj["template"]["spec"]["template"], namespace) for rj in obj["spec"]["replicatedJobs"]]
    return [(obj["spec"]["template"], namespace)] if obj["kind"] == "Job" else []


def training_pods() -> dict[str, tuple[dict[str, Any], str]]:
    """Every way a training pod is made outside the chart: the CLI's renderer and k8s/*.yaml."""
    import yaml

    sources: dict[str, list[dict[str, Any]]] = {
        "launcher-job": launch.build_training_job(launch.spec_from({})),
        "launcher-jobset": launch.build_training_job(launch.spec_from({"nodes": 2, "gpus_per_node": 8})),
    }
    for path in sorted((CHART.parents[1] / "k8s").glob("training-*.yaml")):
        sources[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pods = {}
    for name, objects in sources.items():
        for obj in objects:
            for template, namespace in _pod_templates(obj):
                pods[f"{name}/{obj['kind']}"] = (template, namespace)
    assert {"launcher-job/Job", "launcher-jobset/JobSet", "training-job.yaml/Job", "training-jobset.yaml/JobSet"} \
        <= set(pods)
    return pods


@pytest.mark.parametrize(("policy_name", "port"), [("dicomlab-orthanc", 8042), ("dicomlab-manifest", 8080)])
def test_training_pods_are_admitted_by_the_charts_network_policies(policy_name: str, port: int) -> None:
    policy = render_scenario("defaults").get("NetworkPolicy", policy_name)
    for source, (template, namespace) in training_pods().items():
        labels = template["metadata"]["labels"]
        assert _admitted(policy, labels, namespace, port), f"{source}: {labels} not admitted by {policy_name}"
        # the check has teeth: another component, or the pod in another namespace, is refused
        assert not _admitted(policy, {**labels, "app.kubernetes.io/component": "notebook"}, namespace, port)
        assert not _admitted(policy, labels, "elsewhere", port)


def test_training_pods_use_the_charts_secret_keys_image_and_orthanc() -> None:
    import base64

    import yaml

    rendered = render_scenario("defaults")
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    values = chart_defaults()["training"]["image"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    orthanc = rendered.get("Service", "dicomlab-orthanc")
    http_port = next(p["port"] for p in orthanc["spec"]["ports"] if p["port"] == 8042)
    for source, (template, namespace) in training_pods().items():
        (container,) = template["spec"]["containers"]
        assert container["image"] == f"{values['repository']}:{values['tag'] or app_version}", source
        env = {e["name"]: e for e in container["env"]}
        assert env["DICOMLAB_TRAIN__ORTHANC__URL"]["value"] == f"http://{orthanc['metadata']['name']}:{http_port}"
        assert namespace == orthanc["metadata"]["namespace"]
        for setting in ("USERNAME", "PASSWORD"):
            ref = env[f"DICOMLAB_TRAIN__ORTHANC__{setting}"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{source}: the chart creates no Secret {ref['name']}"
            assert base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]), f"{source}: no key {ref['key']}"
