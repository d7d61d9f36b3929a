"""The chart sets every secret the app factories require at start-up, from a Secret (never a literal)."""

from __future__ import annotations

import importlib

import pytest
from deploy_chart import SCENARIOS, render_scenario

from dicomlab_core.config import env_name

SERVICES = {"proxy": "DICOMLAB_PROXY", "manifest": "DICOMLAB_MANIFEST", "labeling": "DICOMLAB_LABELING"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_chart_sets_every_required_secret_from_a_secret(service: str, scenario: str) -> None:
    required = importlib.import_module(f"dicomlab_{service}.app").REQUIRED_SECRETS
    rendered = render_scenario(scenario)
    try:
        deployment = rendered.get("Deployment", f"dicomlab-{service}")
    except KeyError:
        pytest.skip(f"{scenario}: {service} is not deployed")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for path in required:
        name = env_name(SERVICES[service], *path)
        assert name in env, f"{scenario}: the chart does not set {name}"
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{scenario}: {name} must come from a Secret"
