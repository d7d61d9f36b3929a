"""Every metric the code registers, checked against what Prometheus under the Operator does with it.

The metrics are collected from the registries themselves (every module of our service packages is
imported, so every module-level metric is registered; the training pusher builds its own registry),
and cross-checked against the metric definitions found in the source, so a metric added in a new module
cannot escape the checks:

- no metric uses a label the Prometheus Operator sets on targets (job, service, namespace, pod,
  instance, container, endpoint): those would arrive renamed ``exported_<name>``;
- every metric name an alert rule or a Grafana panel queries is one the code (or Orthanc, Prometheus,
  the Pushgateway, kube-state-metrics) exports.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from typing import Any

import pytest
import requests
from deploy_chart import REPO
from prometheus_client import REGISTRY
from test_deploy_monitoring import (
    EXTERNAL_METRICS,
    OPERATOR_TARGET_LABELS,
    base_name,
    dashboard_exprs,
    exposition_names,
    metric_names,
    recorded_names,
    rule_exprs,
)

PACKAGES = ("dicomlab_core", "dicomlab_proxy", "dicomlab_manifest", "dicomlab_labeling", "dicomlab_cli")
DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum|gauge)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "gauge": (), "info": ("_info",), "stateset": ()}


def _import_all() -> None:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if ".migrations" in info.name or info.name.endswith(".__main__"):
                continue
            importlib.import_module(info.name)


@cache
def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{family name: (type, label names)}`` of every metric the code registers."""
    _import_all()
    collectors: list[Any] = list(REGISTRY._collector_to_names)
    from dicomlab_training.pushgateway import MetricsPusher

    collectors += list(MetricsPusher("", "probe").registry._collector_to_names)
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in collectors:
        name = getattr(collector, "_name", None)
        if name is None or not name.startswith("dicomlab_"):
            continue  # the client library's own process/platform/gc collectors
        found[name] = (collector._type, tuple(collector._labelnames))
    return found


def exported_names() -> set[str]:
    """Sample names as Prometheus stores them (``_total``, ``_bucket``, ...)."""
    names: set[str] = set()
    for family, (kind, _) in registered().items():
        names.add(family)
        names.update(f"{family}{suffix}" for suffix in SUFFIXES.get(kind, ()))
    return names


def defined_in_source() -> set[str]:
    names: set[str] = set()
    for root in ("services", "training"):
        for path in (REPO / root).rglob("*.py"):
            names.update(DEFINITION.findall(path.read_text(encoding="utf-8")))
    return {n.removesuffix("_total") for n in names if n.startswith("dicomlab_")}


def test_the_registry_walk_sees_every_metric_defined_in_the_source() -> None:
    in_source = defined_in_source()
    assert len(in_source) >= 30, "the source scan found too few definitions: is the pattern still right?"
    missing = in_source - set(registered())
    assert not missing, f"defined in the source but not registered by importing the packages: {sorted(missing)}"


def test_no_metric_uses_a_label_the_operator_sets() -> None:
    offending = {name: sorted(set(labels) & OPERATOR_TARGET_LABELS)
                 for name, (_, labels) in registered().items() if set(labels) & OPERATOR_TARGET_LABELS}
    assert not offending, f"these labels would arrive as exported_*: {offending}"
    assert registered()["dicomlab_http_requests_total".removesuffix("_total")][1][0] == "dicomlab_service"
    assert "labeling_job" in registered()["dicomlab_labeling_queue_depth"][1]


def test_the_scan_catches_a_reserved_label() -> None:
    """The check itself: a registry holding a metric labelled ``job`` is reported."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("dicomlab_probe_depth", "probe", ("job",), registry=registry)
    labels = {c._labelnames for c in registry._collector_to_names}
    assert any(set(names) & OPERATOR_TARGET_LABELS for names in labels)


def _rule_and_panel_names() -> set[str]:
    return {n for e in dashboard_exprs() + rule_exprs() for n in metric_names(e)}


def test_rules_and_panels_select_no_label_the_operator_overwrites() -> None:
    """Only the Pushgateway's and kube-state-metrics' own series (scraped with honorLabels) may be
    selected by job/namespace; our metrics are selected by dicomlab_service / labeling_job."""
    for expr in dashboard_exprs() + rule_exprs():
        for matcher in re.findall(r"\b(service|job|pod|container|endpoint)\s*[=!~]", expr):
            assert matcher == "job" and ('push_time_seconds{job="dicomlab_training"}' in expr), expr
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            used = {label.strip() for label in group.split(",")}
            assert not used & (OPERATOR_TARGET_LABELS - {"namespace"}), expr


def test_every_rule_and_panel_queries_a_metric_that_is_exported(orthanc: Any) -> None:
    response = requests.get(f"{orthanc.url}/tools/metrics-prometheus",
                            auth=(orthanc.username, orthanc.password.reveal()), timeout=10)
    response.raise_for_status()
    orthanc_names = exposition_names(response.text)[0]
    known = exported_names() | orthanc_names | set(EXTERNAL_METRICS) | recorded_names()
    used = _rule_and_panel_names()
    unknown = sorted(n for n in used if n not in known and base_name(n) not in known)
    assert not unknown, f"queried by a rule or panel but exported by nothing: {unknown}"
    ours = {n for n in used if n.startswith("dicomlab_") and ":" not in n}
    assert ours and ours <= exported_names()


@pytest.mark.parametrize("name", ["dicomlab_http_requests_total", "dicomlab_http_request_duration_seconds_bucket",
                                  "dicomlab_labeling_oldest_waiting_seconds", "dicomlab_proxy_upstream_errors_total"])
def test_names_the_alerts_depend_on_are_exported(name: str) -> None:
    assert name in exported_names()
