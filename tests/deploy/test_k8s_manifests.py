"""k8s/ (plain manifests outside the chart) and skaffold.yaml.

The standalone training Jobs are what `dicomlab train submit --dry-run` prints for the arguments in
their header; every core object validates strictly; skaffold builds one artifact per Dockerfile and
deploys only through the chart, and each profile's values render a valid chart.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_chart import KUBE_VERSIONS, REPO, render_values, validate_strict

K8S = REPO / "k8s"
SKAFFOLD = REPO / "skaffold.yaml"
CRD_KINDS = {"NodePool": "karpenter.sh/v1", "EC2NodeClass": "karpenter.k8s.aws/v1", "ClusterConfig": "eksctl.io/v1alpha5",
             "JobSet": "jobset.x-k8s.io/v1alpha2"}
"""Kinds outside core Kubernetes (no schema in kubernetes-validate); the JobSet's fields are checked in
tests/training/test_jobset.py on the launcher's output, which training-jobset.yaml must equal."""


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_k8s_objects_validate(path: Path) -> None:
    docs = documents(path)
    assert docs
    for obj in docs:
        if obj["kind"] in CRD_KINDS:
            assert obj["apiVersion"] == CRD_KINDS[obj["kind"]]
            continue
        for version in KUBE_VERSIONS:
            validate_strict(obj, version)


@pytest.mark.parametrize("name", ["training-job.yaml", "training-jobset.yaml"])
def test_standalone_training_jobs_are_what_the_launcher_generates(name: str) -> None:
    from dicomlab_cli.main import build_parser

    launch = pytest.importorskip("dicomlab_training.launch")
    from dicomlab_training.cli import submit_overrides

    text = (K8S / name).read_text()
    match = re.search(r"(?m)^# dicomlab-submit-args: (.+)$", text)
    assert match, "the header records the generating command"
    args = build_parser().parse_args(["train", "submit", "--dry-run", *shlex.split(match.group(1))])
    expected = launch.build_training_job(launch.spec_from(submit_overrides(args)))
    assert documents(K8S / name) == [d for d in yaml.safe_load_all(launch.to_yaml(expected)) if d]


def test_multinode_training_is_a_jobset_not_a_hand_made_indexed_job() -> None:
    assert not (K8S / "training-multinode.yaml").exists()
    (jobset,) = documents(K8S / "training-jobset.yaml")
    assert jobset["kind"] == "JobSet" and jobset["spec"]["network"]["enableDNSHostnames"] is True
    (replicated,) = jobset["spec"]["replicatedJobs"]
    pod = replicated["template"]["spec"]["template"]
    command = pod["spec"]["containers"][0]["command"]
    leader = f"--rdzv-endpoint=dicomlab-train-multinode-{replicated['name']}-0-0.{jobset['spec']['network']['subdomain']}:"
    assert any(c.startswith(leader) for c in command)
    assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert pod["spec"]["nodeSelector"]["karpenter.sh/nodepool"] == "gpu"
    for doc in K8S.glob("*.yaml"):
        for obj in documents(doc):
            assert obj["kind"] != "Service" or obj["spec"].get("clusterIP") != "None", f"{doc.name}: hand-made rendezvous"


def test_namespace_enforces_restricted_pod_security() -> None:
    (ns,) = documents(K8S / "namespace.yaml")
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_gpu_node_examples_taint_and_label_for_the_training_job() -> None:
    (cluster,) = documents(K8S / "eks-gpu-nodegroup.yaml")
    for group in cluster["managedNodeGroups"]:
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in group["taints"]
    assert any(g["spot"] for g in cluster["managedNodeGroups"] if "spot" in g)
    nodepool = next(d for d in documents(K8S / "karpenter-nodepool.yaml") if d["kind"] == "NodePool")
    assert nodepool["metadata"]["name"] == "gpu"
    assert nodepool["spec"]["template"]["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
    keys = {r["key"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
    assert "karpenter.sh/capacity-type" in keys


# ------------------------------------------------------------------------------------------ skaffold

def skaffold() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


def test_skaffold_builds_one_artifact_per_dockerfile_and_deploys_only_the_chart() -> None:
    config = skaffold()
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"])
    artifacts = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
    dockerfiles = {f"docker/{p.name}" for p in (REPO / "docker").glob("*.Dockerfile")}
    assert set(artifacts.values()) == dockerfiles and len(artifacts) == len(dockerfiles)
    assert set(config["deploy"]) == {"helm"}, "deploy through the chart only"
    assert "manifests" not in config or not config["manifests"].get("rawYaml")
    (release,) = config["deploy"]["helm"]["releases"]
    assert release["chartPath"] == "charts/dicomlab"
    templates = " ".join(release["setValueTemplates"].values())
    for image in artifacts:
        key = image.replace("-", "_")
        # the training image is built and pushed, but runs only through `dicomlab train submit --image`
        deployed = image != "dicomlab-training"
        assert (f"IMAGE_REPO_{key}" in templates and f"IMAGE_TAG_{key}" in templates) is deployed, image
    assert {p["name"] for p in config["profiles"]} == {"local", "eks"}


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    for patch in patches:
        parts = patch["path"].strip("/").split("/")
        node: Any = config
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert patch["op"] in ("add", "replace")
        node[parts[-1]] = patch["value"]
    return config


def profile_values(name: str) -> dict[str, Any]:
    import helm_python as helm

    config = skaffold()
    profile = next(p for p in config["profiles"] if p["name"] == name)
    config = apply_patches(config, profile.get("patches", []))
    (release,) = config["deploy"]["helm"]["releases"]
    def fake(variable: str) -> str:
        """What skaffold puts into {{.VARIABLE}} after a build (IMAGE_REPO_dicomlab_proxy, ...)."""
        if match := re.fullmatch(r"IMAGE_(REPO|TAG|DIGEST)_(\w+)", variable):
            image = match.group(2).replace("_", "-")
            return {"REPO": f"registry.example/{image}", "TAG": "abc1234",
                    "DIGEST": "sha256:" + "cd" * 32}[match.group(1)]
        return {"DICOMLAB_DB_HOST": "db.example"}[variable]

    def substitute(template: str) -> str:
        return re.sub(r"\{\{\.(\w+)\}\}", lambda m: fake(m.group(1)), template)

    values: dict[str, Any] = {}
    settings = {**{k: substitute(v) for k, v in release["setValueTemplates"].items()}, **release["setValues"]}
    for key, value in settings.items():
        parsed = helm.parse_set_string(f"{key}={value}")
        merge(values, parsed)
    return values


def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


@pytest.mark.parametrize("profile", ["local", "eks"])
def test_each_profile_renders_a_valid_chart(profile: str) -> None:
    values = profile_values(profile)
    rendered = render_values(values, f"skaffold-{profile}")
    for obj in rendered.objects:
        if obj["apiVersion"].startswith(("monitoring.coreos.com", "gateway.networking.k8s.io")):
            continue
        validate_strict(obj, KUBE_VERSIONS[-1])
    images = {c["image"] for _, pod in rendered.pod_specs() for c in pod["containers"]}
    built = {i.split(":")[0].removeprefix("registry.example/") for i in images if i.startswith("registry.example/")}
    # dicomlab-training is built and pushed too, but runs only through `dicomlab train submit --image`
    assert built == {"dicomlab-proxy", "dicomlab-manifest", "dicomlab-labeling"}
    if profile == "eks":
        assert all(i.endswith(":abc1234@sha256:" + "cd" * 32) for i in images if i.startswith("registry.example/"))
        assert rendered.get("ConfigMap", "dicomlab-orthanc")["data"]["ORTHANC__POSTGRESQL__HOST"] == "db.example"
    else:
        assert rendered.of_kind("StatefulSet") and not rendered.of_kind("ServiceMonitor")


def _training_pods() -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for name in ("training-job.yaml", "training-jobset.yaml"):
        for obj in documents(K8S / name):
            if obj["kind"] == "Job":
                pods.append((name, obj["spec"]["template"]["spec"]))
            elif obj["kind"] == "JobSet":
                pods += [(name, rj["template"]["spec"]["template"]["spec"]) for rj in obj["spec"]["replicatedJobs"]]
    return pods


def test_training_examples_land_on_a_matching_node_group_or_nodepool() -> None:
    (cluster,) = documents(K8S / "eks-gpu-nodegroup.yaml")
    groups = {g["name"]: g for g in cluster["managedNodeGroups"]}
    nodepool, _ = documents(K8S / "karpenter-nodepool.yaml")
    requirements = {r["key"]: r["values"] for r in nodepool["spec"]["template"]["spec"]["requirements"]}
    pods = _training_pods()
    assert pods
    for name, pod in pods:
        selector = pod["nodeSelector"]
        if "eks.amazonaws.com/nodegroup" in selector:
            group = groups[selector["eks.amazonaws.com/nodegroup"]]
            capacity = selector.get("eks.amazonaws.com/capacityType")
            if capacity is not None:
                assert (capacity == "SPOT") == bool(group.get("spot")), f"{name}: {capacity} on {group['name']}"
        else:
            assert selector["karpenter.sh/nodepool"] == nodepool["metadata"]["name"]
            capacity = selector.get("karpenter.sh/capacity-type")
            assert capacity is None or capacity in requirements["karpenter.sh/capacity-type"], name
    assert any(p["nodeSelector"].get("eks.amazonaws.com/capacityType") == "SPOT" for _, p in pods), "a spot example"


def test_efa_is_claimed_only_with_its_device_resource() -> None:
    """EFA needs the node group flag AND pods requesting vpc.amazonaws.com/efa (and the NCCL OFI plugin in the
    image): a node group that claims EFA while no pod requests it is a false promise."""
    (cluster,) = documents(K8S / "eks-gpu-nodegroup.yaml")
    efa_groups = [g["name"] for g in cluster["managedNodeGroups"] if g.get("efaEnabled")]
    requesting = [name for name, pod in _training_pods()
                  if any("vpc.amazonaws.com/efa" in c["resources"].get("limits", {}) for c in pod["containers"])]
    assert bool(efa_groups) == bool(requesting), (efa_groups, requesting)


def test_karpenter_ami_alias_is_pinned() -> None:
    node_class = documents(K8S / "karpenter-nodepool.yaml")[1]
    aliases = [t["alias"] for t in node_class["spec"]["amiSelectorTerms"] if "alias" in t]
    assert aliases and all(re.fullmatch(r"al2023@v\d{8}", a) for a in aliases), aliases
