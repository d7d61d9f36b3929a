"""Chart conventions platform teams expect (bitnami, prometheus-community), rendered and validated.

global.imageRegistry, priorityClassName, topologySpreadConstraints, extraEnvVars/extraEnvVarsSecret,
extraVolumes/extraVolumeMounts, initContainers/sidecars, podLabels, PDB maxUnavailable and percentages,
ServiceMonitor honorLabels/metricRelabelings/jobLabel; a schema that rejects unknown keys under
resources and the security contexts and plain-text secrets in env.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import yaml
from deploy_chart import CHART, KUBE_VERSIONS, render_values, scenario_values, validate_strict

EXTRAS: dict[str, Any] = {
    "podLabels": {"team": "imaging"},
    "priorityClassName": "dicomlab-high",
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "proxy"}}}],
    "extraEnvVars": [{"name": "HTTPS_PROXY", "value": "http://egress.internal:3128"},
                     {"name": "EXTRA_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "extra", "key": "token"}}}],
    "extraEnvVarsSecret": "proxy-extra-env",
    "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
    "initContainers": [{"name": "wait", "image": "busybox:1.36", "command": ["true"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                      "limits": {"cpu": "50m", "memory": "32Mi"}}}],
    "sidecars": [{"name": "shipper", "image": "fluent/fluent-bit:3.1", "resources": {
        "requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}}],
    "pdb": {"enabled": True, "maxUnavailable": "50%"},
}


def conventions_values() -> dict[str, Any]:
    values = scenario_values("defaults")
    values["global"] = {"imageRegistry": "mirror.example.org:5000/dicomlab-mirror"}
    values["services"] = {"proxy": EXTRAS}
    values["monitoring"] = {"serviceMonitor": {"honorLabels": True, "jobLabel": "app.kubernetes.io/component",
                                               "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"],
                                                                      "regex": "python_gc_.*"}]}}
    return values


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_conventions_render_and_validate(kube_version: str) -> None:
    rendered = render_values(conventions_values())
    deployment = rendered.get("Deployment", "dicomlab-proxy")
    validate_strict(deployment, kube_version)
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert pod["metadata"]["labels"]["team"] == "imaging"
    assert deployment["spec"]["selector"]["matchLabels"].get("team") is None, "selectors stay immutable"
    assert spec["priorityClassName"] == "dicomlab-high"
    assert spec["topologySpreadConstraints"] == EXTRAS["topologySpreadConstraints"]
    assert [c["name"] for c in spec["initContainers"]] == ["wait"]
    assert [c["name"] for c in spec["containers"]] == ["proxy", "shipper"]
    proxy = spec["containers"][0]
    env = {e["name"]: e for e in proxy["env"]}
    assert env["HTTPS_PROXY"]["value"] == "http://egress.internal:3128"
    assert env["EXTRA_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "extra", "key": "token"}
    assert proxy["envFrom"] == [{"secretRef": {"name": "proxy-extra-env"}}]
    assert {"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True} in proxy["volumeMounts"]
    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in spec["volumes"]
    pdb = rendered.get("PodDisruptionBudget", "dicomlab-proxy")
    assert pdb["spec"].get("maxUnavailable") == "50%" and "minAvailable" not in pdb["spec"]
    # the other services keep their defaults
    labeling = rendered.get("Deployment", "dicomlab-labeling")["spec"]["template"]["spec"]
    assert "priorityClassName" not in labeling and len(labeling["containers"]) == 1


def test_global_image_registry_rewrites_every_image() -> None:
    rendered = render_values(conventions_values())
    images = {c["image"] for _, pod in rendered.pod_specs()
              for c in pod["containers"] + pod.get("initContainers", [])
              if not c["image"].startswith(("busybox", "fluent/"))}
    assert images, "no images rendered"
    assert all(i.startswith("mirror.example.org:5000/dicomlab-mirror/") for i in images), images
    assert "mirror.example.org:5000/dicomlab-mirror/orthancteam/orthanc:26.8.2" in images
    assert any(i.startswith("mirror.example.org:5000/dicomlab-mirror/dicomlab/dicomlab-proxy:") for i in images)
    plain = render_values(scenario_values("defaults"))
    assert plain.get("Deployment", "dicomlab-orthanc")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "docker.io/orthancteam/orthanc:26.8.2"


def test_service_monitor_takes_honor_labels_metric_relabelings_and_job_label() -> None:
    monitor = render_values(conventions_values()).get("ServiceMonitor", "dicomlab-services")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/component"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["metricRelabelings"][0]["action"] == "drop"


def test_chart_metadata_names_icon_sources_and_maintainers() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["icon"].startswith("https://")
    assert chart["sources"] and chart["maintainers"][0]["name"]


@pytest.mark.parametrize("services", [
    {"proxy": {"resources": {"request": {"cpu": "1"}}}},
    {"proxy": {"resources": {"requests": {"cpus": "1"}}}},
    {"proxy": {"resources": {"limits": {"memory": "lots"}}}},
    {"proxy": {"extraEnvVars": [{"name": "DB_PASSWORD", "value": "hunter2"}]}},
    {"proxy": {"extraEnvVars": [{"name": "X", "value": "1", "unknown": True}]}},
    {"proxy": {"env": {"DICOMLAB_PROXY__SERVICE_TOKENS": "abc"}}},
    {"proxy": {"pdb": {"maxUnavailable": "half"}}},
])
def test_schema_rejects_unknown_resource_keys_and_plain_text_secrets(services: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render_values({**scenario_values("defaults"), "services": services})


@pytest.mark.parametrize("values", [
    {"podSecurityContext": {"runAsUser": 10001, "runAsNonroot": True}},
    {"containerSecurityContext": {"privilegd": False}},
    {"orthanc": {"podSecurityContext": {"fsgroup": 1000}}},
    {"postgresql": {"internal": {"resources": {"limits": {"cpu": "1"}, "limts": {}}}}},
    {"global": {"imageRegistry": "not a registry"}},
])
def test_schema_rejects_unknown_security_context_keys(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        render_values({**scenario_values("defaults"), **values})
