"""What the chart runs in our images (hook Jobs, helm test pods, commands overriding CMD) is installed there.

The Dockerfiles' own entry points are checked in test_image_dependencies.py; the chart also runs
``python -m dicomlab_labeling.workflow.migrate`` (the pre-install/pre-upgrade hook) and a ``python -c`` health check
in the proxy image. Every scenario in charts/dicomlab/ci is rendered (helm-python-sdk) and each container
whose image is one of ours is checked against that image's extra.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_chart import SCENARIOS, render_scenario
from image_deps import container_entry, missing_modules

OUR_IMAGE = re.compile(r"/dicomlab-(proxy|manifest|labeling|training)[:@]")


def our_containers(scenario: str) -> list[tuple[str, str, dict[str, Any]]]:
    rendered = render_scenario(scenario)
    found = []
    for workload, spec in rendered.pod_specs():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            match = OUR_IMAGE.search(container["image"])
            if match:
                found.append((f"{workload['kind']}/{workload['metadata']['name']}", match.group(1), container))
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_what_the_chart_runs_in_our_images_is_installed_there(scenario: str) -> None:
    containers = our_containers(scenario)
    assert containers, f"{scenario}: no container runs one of our images"
    for where, image, container in containers:
        entry, inline = container_entry(image, container.get("command"), container.get("args"))
        missing = missing_modules(entry, inline=inline)
        assert not missing, f"{scenario}: {where} runs {entry.entry_modules or 'python -c'} in the {image} image, " \
                            f"whose extra '{entry.extra}' lacks {missing}"


def test_the_hook_and_test_pods_are_among_the_checked_containers() -> None:
    commands = {(image, tuple(c.get("command") or ())[:3]) for _, image, c in our_containers("defaults")}
    assert ("labeling", ("python", "-m", "dicomlab_labeling.workflow.migrate")) in commands
    assert ("proxy", ("python", "-c")) in commands
