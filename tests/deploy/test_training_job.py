"""Training pods and the chart: runs launched outside the release use what the chart provides.

Training Jobs are not part of the Helm release (a Job's pod template is immutable under ``helm upgrade``,
and a release that owns a finished Job fails its upgrades, issue 17): ``dicomlab train submit``
(training/dicomlab_training/launch.py: a Job on one node, a JobSet on several) and k8s/*.yaml launch
them. The chart provides the training ServiceAccount and a NetworkPolicy for training pods.

Checked here for every way a training pod is made (the launcher's Job and JobSet with their defaults, and
k8s/training-*.yaml): it runs as the chart's training ServiceAccount, reads the chart's Secret and keys,
uses the chart's image at its appVersion and its Orthanc Service; the chart's training NetworkPolicy
selects it (egress-limited) and the Orthanc/manifest policies admit it; the chart renders no training
workload of its own.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from deploy_chart import CHART, REPO, SCENARIOS, render_scenario, render_values, scenario_values

launch = pytest.importorskip("dicomlab_training.launch", reason="the training launcher has not landed yet")

TRAINING = {"app.kubernetes.io/part-of": "dicomlab", "app.kubernetes.io/component": "training"}


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
    """Every way a training pod is made: the CLI's renderer with its defaults, and k8s/*.yaml."""
    sources: dict[str, list[dict[str, Any]]] = {
        "launcher-job": launch.build_training_job(launch.spec_from({})),
        "launcher-jobset": launch.build_training_job(launch.spec_from({"nodes": 2, "gpus_per_node": 8})),
    }
    for path in sorted((REPO / "k8s").glob("training-*.yaml")):
        sources[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pods = {}
    for name, objects in sources.items():
        for obj in objects:
            for template, namespace in _pod_templates(obj):
                pods[f"{name}/{obj['kind']}"] = (template, namespace)
    assert {"launcher-job/Job", "launcher-jobset/JobSet", "training-job.yaml/Job", "training-jobset.yaml/JobSet"} \
        <= set(pods)
    return pods


def test_the_chart_renders_no_training_workload() -> None:
    """Every scenario: no pod of component training and no Job/JobSet that is not a hook."""
    for scenario in SCENARIOS:
        rendered = render_scenario(scenario)
        for obj, pod in rendered.pod_specs():
            labels = obj["spec"]["template"]["metadata"].get("labels", {}) if "template" in obj.get("spec", {}) \
                else obj["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/component") != "training", (scenario, obj["metadata"]["name"])
            assert pod.get("serviceAccountName") != "dicomlab-training", (scenario, obj["metadata"]["name"])
        for job in (o for o in rendered.objects if o["kind"] in ("Job", "JobSet")):
            assert job["metadata"].get("annotations", {}).get("helm.sh/hook"), (scenario, job["metadata"]["name"])
        assert not [o for o in rendered.objects if "-train-" in o["metadata"]["name"] or
                    o["metadata"]["name"].endswith("-rdzv")], scenario


def test_cli_defaults_to_the_charts_training_service_account() -> None:
    rendered = render_scenario("training")
    (account,) = [a for a in rendered.of_kind("ServiceAccount")
                  if a["metadata"]["labels"].get("app.kubernetes.io/component") == "training"]
    assert launch.load_defaults()["service_account"] == account["metadata"]["name"] == launch.JobSpec().service_account
    assert account["metadata"]["namespace"] == launch.load_defaults()["namespace"]
    for source, (template, _) in training_pods().items():
        assert template["spec"]["serviceAccountName"] == account["metadata"]["name"], source


def test_training_pods_use_the_charts_secret_keys_image_and_orthanc() -> None:
    rendered = render_scenario("defaults")
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    # the chart's images: <registry>/<owner>/dicomlab-<component>:<appVersion> (the services' repositories)
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    owners = {svc["image"]["repository"].rsplit("/", 1)[0] for svc in chart_values["services"].values()}
    (owner,) = owners
    orthanc = rendered.get("Service", "dicomlab-orthanc")
    http_port = next(p["port"] for p in orthanc["spec"]["ports"] if p["port"] == 8042)
    for source, (template, namespace) in training_pods().items():
        (container,) = template["spec"]["containers"]
        assert container["image"] == f"{owner}/dicomlab-training:{app_version}", source
        env = {e["name"]: e for e in container["env"]}
        assert env["DICOMLAB_TRAIN__ORTHANC__URL"]["value"] == f"http://{orthanc['metadata']['name']}:{http_port}"
        assert namespace == orthanc["metadata"]["namespace"]
        for setting in ("USERNAME", "PASSWORD"):
            ref = env[f"DICOMLAB_TRAIN__ORTHANC__{setting}"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{source}: the chart creates no Secret {ref['name']}"
            assert base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]), f"{source}: no key {ref['key']}"


def test_training_pods_are_selected_by_the_charts_training_policy() -> None:
    rendered = render_scenario("training")
    policy = rendered.get("NetworkPolicy", "dicomlab-training")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    selector = policy["spec"]["podSelector"]
    for source, (template, namespace) in training_pods().items():
        labels = template["metadata"]["labels"]
        assert namespace == policy["metadata"]["namespace"], source
        assert _selects(selector, labels), f"{source}: {labels} not egress-limited by the training policy"
        assert labels["app.kubernetes.io/instance"] != "dicomlab", "the run's own name, not the release's"
        # pods of one run (and of other runs) may talk to each other: torchrun rendezvous, NCCL
        assert _admitted(policy, labels, namespace, launch.RDZV_PORT), source
        assert not _selects(selector, {**labels, "app.kubernetes.io/component": "notebook"})
    # the policy limits training pods only: none of the release's own pods
    for obj, _ in rendered.pod_specs():
        labels = obj["spec"]["template"]["metadata"]["labels"] if "template" in obj.get("spec", {}) \
            else obj["metadata"]["labels"]
        assert not _selects(selector, labels), obj["metadata"]["name"]


@pytest.mark.parametrize(("policy_name", "port"), [("dicomlab-orthanc", 8042), ("dicomlab-manifest", 8080)])
def test_training_pods_are_admitted_by_the_charts_network_policies(policy_name: str, port: int) -> None:
    policy = render_scenario("defaults").get("NetworkPolicy", policy_name)
    for source, (template, namespace) in training_pods().items():
        labels = template["metadata"]["labels"]
        assert _admitted(policy, labels, namespace, port), f"{source}: {labels} not admitted by {policy_name}"
        # the check has teeth: another component, or the pod in another namespace, is refused
        assert not _admitted(policy, {**labels, "app.kubernetes.io/component": "notebook"}, namespace, port)
        assert not _admitted(policy, labels, "elsewhere", port)


def test_pushgateway_port_of_the_launchers_example_is_open_in_the_training_policy() -> None:
    """k8s/training-job.yaml pushes to the Pushgateway; the chart opens that port when it knows the URL."""
    (job,) = [d for d in yaml.safe_load_all((REPO / "k8s" / "training-job.yaml").read_text()) if d]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (push,) = [a for a in container["command"] if a.startswith("pushgateway_url=")]
    url = push.split("=", 1)[1]
    values = json.loads(json.dumps(scenario_values("training")))
    values["monitoring"] = {**values.get("monitoring", {}), "pushgatewayUrl": url}
    policy = render_values(values).get("NetworkPolicy", "dicomlab-training")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert any({"protocol": "TCP", "port": port} in rule.get("ports", []) and "to" not in rule
               for rule in policy["spec"]["egress"]), policy["spec"]["egress"]
