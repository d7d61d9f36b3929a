"""Render the dicomlab chart with Helm's own engine (helm-python-sdk) and index the objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "dicomlab"
SCENARIOS = tuple(sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")))
RELEASE = "dicomlab"
NAMESPACE = "dicomlab"
def _latest_kube_version() -> str:
    from kubernetes_validate.utils import latest_version

    return str(latest_version())


KUBE_VERSIONS = ("1.33.0", _latest_kube_version())
"""Validated against an older release still in EKS standard support (1.33) and the newest release whose
schemas kubernetes-validate ships (1.37 with kubernetes-validate 1.37)."""

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}


@dataclass
class Rendered:
    """One scenario's output: the objects, plus NOTES.txt."""

    scenario: str
    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str
    sources: dict[str, str] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{kind}/{name} not rendered in scenario {self.scenario}")

    def pod_specs(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod spec) for every object that runs containers."""
        out = []
        for obj in self.objects:
            if obj["kind"] == "Pod":
                out.append((obj, obj["spec"]))
            elif obj["kind"] in WORKLOAD_KINDS:
                out.append((obj, obj["spec"]["template"]["spec"]))
        return out


def scenario_values(scenario: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text()) or {}
    return loaded


OPERATOR_API_VERSIONS = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor",
                         "monitoring.coreos.com/v1/PodMonitor", "monitoring.coreos.com/v1/PrometheusRule")
"""What a cluster with the Prometheus Operator (kube-prometheus-stack) advertises in .Capabilities.APIVersions."""


def render_values(values: dict[str, Any] | None, scenario: str = "custom", *,
                  api_versions: tuple[str, ...] = OPERATOR_API_VERSIONS) -> Rendered:
    """Render with ``values`` (no cache: for behaviour tests with their own values).

    ``api_versions`` are the extra APIs the simulated cluster advertises (helm's ``--api-versions``):
    by default a cluster with the Prometheus Operator; ``()`` is a plain cluster without its CRDs.
    helm-python-sdk's ``Chart.render`` does not expose that option, its native call does.
    """
    import json

    import helm_python as helm
    from helm_python import _native

    options = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "api_versions": list(api_versions)}
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}),
                                                   json.dumps(options)))
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return Rendered(scenario, values or {}, objects, notes, manifests)


@cache
def render_scenario(scenario: str) -> Rendered:
    """Each ci/<scenario>-values.yaml is rendered once per session."""
    return render_values(scenario_values(scenario), scenario)


@cache
def _validator(version: str, kind: str, api_version: str) -> Any:
    """kubernetes-validate's strict schema for one kind, loaded once (its own validate() re-reads the
    large _definitions.json on every call)."""
    import re

    import jsonschema
    import kubernetes_validate.utils as kvu
    from referencing import Registry, Resource

    wanted = kvu.major_minor(version)
    schema_version = [v for v in kvu.all_versions() if kvu.major_minor(v) <= wanted][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{schema_version}-local-strict"
    try:
        schema = kvu.schema_contents(f"{directory}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        raise kvu.SchemaNotFoundError(version=wanted, kind=kind, api_version=api_version) from None
    definitions = kvu.schema_contents(f"{directory}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate_strict(obj: dict[str, Any], version: str) -> None:
    """``kubernetes-validate --strict`` for one object (raises jsonschema.ValidationError or
    kubernetes_validate SchemaNotFoundError)."""
    _validator(version, obj["kind"], obj["apiVersion"]).validate(obj)
