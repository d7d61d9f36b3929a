"""The EKS values shown in the top-level README render and validate: the README stays true."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_chart import KUBE_VERSIONS, REPO, render_values, validate_strict


def readme_eks_values() -> dict[str, object]:
    text = (REPO / "README.md").read_text()
    match = re.search(r"```yaml\n# eks-values\.yaml\n(.*?)```", text, re.S)
    assert match, "README.md lost its eks-values.yaml example"
    values: dict[str, object] = yaml.safe_load(match.group(1))
    return values


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_readme_eks_values_render_and_validate(version: str) -> None:
    rendered = render_values(readme_eks_values(), "readme-eks")
    kinds = {obj["kind"] for obj in rendered.objects}
    assert {"Deployment", "NetworkPolicy", "Ingress", "ServiceAccount"} <= kinds
    # training runs are launched with the CLI/kubectl; the chart gives them their ServiceAccount and policy
    account = rendered.get("ServiceAccount", "dicomlab-training")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/dicomlab-training")
    assert not [j for j in rendered.of_kind("Job") if not j["metadata"].get("annotations", {}).get("helm.sh/hook")]
    for obj in rendered.objects:
        if obj["apiVersion"].startswith(("monitoring.coreos.com", "gateway.networking.k8s.io")):
            continue  # CRDs: checked structurally in test_chart_render
        validate_strict(obj, version)
