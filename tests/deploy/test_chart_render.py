"""Level 1: every ci/*-values.yaml scenario renders with Helm's engine and validates strictly.

Core objects go through kubernetes-validate --strict (unknown fields are errors) for each version
in KUBE_VERSIONS; the CRD-backed kinds it has no schema for (ServiceMonitor, PrometheusRule,
HTTPRoute) get structural checks here and behaviour checks in the other modules. `helm lint` runs
on every scenario.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate.utils
import pytest
from deploy_chart import CHART, KUBE_VERSIONS, SCENARIOS, render_scenario, scenario_values, validate_strict

CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}


def test_cached_validator_agrees_with_kubernetes_validate() -> None:
    """The cached validator is kubernetes-validate's own strict check, just loaded once."""
    import kubernetes_validate

    deployment = render_scenario("defaults").get("Deployment", "dicomlab-proxy")
    kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)
    validate_strict(deployment, KUBE_VERSIONS[-1])
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[-1], strict=True)
    with pytest.raises(jsonschema.ValidationError):
        validate_strict(broken, KUBE_VERSIONS[-1])


def test_every_issue_scenario_has_a_values_file() -> None:
    assert {"defaults", "external-db", "ingress", "gateway", "training", "monitoring-off"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_objects_validate_strictly(scenario: str, kube_version: str) -> None:
    rendered = render_scenario(scenario)
    assert rendered.objects, f"{scenario} rendered nothing"
    errors = []
    for obj in rendered.objects:
        kind = obj["kind"]
        if kind in CRD_KINDS:
            assert obj["apiVersion"] == CRD_KINDS[kind]
            continue
        try:
            validate_strict(obj, kube_version)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{kind}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.utils.SchemaNotFoundError as exc:
            errors.append(f"{kind}/{obj['metadata']['name']}: no schema ({exc.message})")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART, scenario_values(scenario), strict=True, namespace="dicomlab", kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not problems, problems


def test_object_names_are_unique_per_kind() -> None:
    for scenario in SCENARIOS:
        seen: set[tuple[str, str]] = set()
        for obj in render_scenario(scenario).objects:
            key = (obj["kind"], obj["metadata"]["name"])
            assert key not in seen, f"{scenario}: duplicate {key}"
            seen.add(key)


def _endpoints(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["endpoints"])


def test_custom_resources_are_well_formed() -> None:
    rendered = render_scenario("defaults")
    monitors = rendered.of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"dicomlab-services", "dicomlab-orthanc"}
    allowed_endpoint_keys = {"port", "path", "interval", "scrapeTimeout", "relabelings", "basicAuth", "honorLabels",
                             "metricRelabelings"}
    for monitor in monitors:
        assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        for endpoint in _endpoints(monitor):
            assert set(endpoint) <= allowed_endpoint_keys
            for relabel in endpoint["relabelings"]:
                assert set(relabel) <= {"sourceLabels", "targetLabel", "replacement", "action", "regex", "separator"}
    rule = rendered.of_kind("PrometheusRule")[0]
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert ("alert" in r) != ("record" in r)
    routes = render_scenario("gateway").of_kind("HTTPRoute")
    assert {r["spec"]["hostnames"][0] for r in routes} == {"dicomweb.dicomlab.example.org",
                                                          "labeling.dicomlab.example.org"}
    for route in routes:
        assert set(route["spec"]) == {"parentRefs", "hostnames", "rules"}
        backend = route["spec"]["rules"][0]["backendRefs"][0]
        assert backend["port"] == 80


def test_packaged_chart_carries_rules_and_dashboard_and_renders_the_same(tmp_path: Any) -> None:
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as packaged:
        names = {f["name"] for f in packaged.files}
        assert {"rules/dicomlab.rules.yaml", "dashboards/dicomlab.json"} <= names
        assert packaged.schema is not None
        assert not any(n.startswith("ci/") for n in names), ".helmignore keeps CI scenarios out of the package"
        values = scenario_values("defaults")
        from_archive = packaged.render(values=values, name="dicomlab", namespace="dicomlab")
    with helm.Chart.load(CHART) as directory:
        from_dir = directory.render(values=values, name="dicomlab", namespace="dicomlab")
    # the generated Secret's random values differ between two renders; everything else must be identical
    strip = re.compile(r"(?m)^\s+[a-z-]+(-password|-secret|-token|-keys|-registered-users):.*$")
    assert {k: strip.sub("", v) for k, v in from_archive.items()} == {k: strip.sub("", v) for k, v in from_dir.items()}
