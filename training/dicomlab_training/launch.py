"""``dicomlab train submit``: the training run as a Kubernetes Job (one node) or an Indexed Job +
headless Service running torchrun with c10d rendezvous (several nodes).

:func:`build_training_job` is a pure function from a :class:`JobSpec` to manifests (plain dicts made
with the kubernetes client's models), so the CLI, the tests and the Helm chart's training-Job
template share one definition; :data:`DEFAULTS_FILE` (``job-defaults.json`` next to this module) holds
the defaults the chart mirrors in ``values.yaml``.

What the spec encodes (see infra-notes.md):

- ``nvidia.com/gpu`` requests/limits, a toleration for the GPU taint, a node selector for an EKS
  managed node group (``eks.amazonaws.com/nodegroup``) or a Karpenter NodePool
  (``karpenter.sh/nodepool``) and the capacity type (spot/on-demand), optional extra affinity;
- an emptyDir ``medium: Memory`` at /dev/shm (the default 64 MB breaks DataLoader workers);
- a ServiceAccount for S3 through IRSA / EKS Pod Identity (no static keys in the pod);
- ``backoffLimit`` plus a ``podFailurePolicy`` that ignores DisruptionTarget (spot reclaim, eviction):
  the pod restarts and the run resumes from its checkpoint without using up the retry budget;
- multi-node: ``completionMode: Indexed`` with ``parallelism = completions = nodes``, pods named
  ``<job>-<index>.<service>``, torchrun ``--rdzv-backend=c10d --rdzv-endpoint=<job>-0.<service>:29400``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

DEFAULTS_FILE = Path(__file__).with_name("job-defaults.json")
RDZV_PORT = 29400
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class JobSpec:
    """A training Job. Defaults are in ``job-defaults.json`` (one source of truth with the chart)."""

    name: str = "dicomlab-train"
    namespace: str = "default"
    image: str = "dicomlab/training:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    train_args: tuple[str, ...] = ()
    """Arguments after ``python -m dicomlab_training`` (e.g. --manifest ... --out s3://...)."""
    config_map: str = ""
    """Optional ConfigMap with a ``train.json`` mounted at /config (passed as --config)."""
    nodes: int = 1
    gpus_per_node: int = 1
    cpu: str = "8"
    memory: str = "60Gi"
    shm_size: str = "16Gi"
    service_account: str = "dicomlab-training"
    node_group: str = ""
    """EKS managed node group name (``eks.amazonaws.com/nodegroup``)."""
    karpenter_nodepool: str = ""
    """Karpenter NodePool name (``karpenter.sh/nodepool``)."""
    capacity_type: str = ""
    """``spot`` or ``on-demand`` (empty: either)."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    backoff_limit: int = 3
    active_deadline_seconds: int = 0
    ttl_seconds_after_finished: int = 86400
    env: Mapping[str, str] = field(default_factory=dict)
    orthanc_secret: str = ""
    """Secret with keys ``username``/``password`` for Orthanc (env DICOMLAB_TRAIN__ORTHANC__*)."""
    orthanc_url: str = ""
    pushgateway_url: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


def load_defaults(path: Path = DEFAULTS_FILE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def spec_from(overrides: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> JobSpec:
    """A :class:`JobSpec` from the defaults file overlaid with ``overrides`` (unknown keys raise)."""
    names = {f.name for f in fields(JobSpec)}
    merged: dict[str, Any] = {}
    for source in (defaults if defaults is not None else load_defaults(), overrides):
        for key, value in source.items():
            if key not in names:
                raise ValueError(f"unknown job setting {key!r}")
            merged[key] = value
    for key in ("train_args", "tolerations"):
        if key in merged:
            merged[key] = tuple(merged[key])
    return JobSpec(**merged)


def defaults_document() -> dict[str, Any]:
    """The defaults of :class:`JobSpec` as JSON-ready data (what ``job-defaults.json`` holds)."""
    data = asdict(JobSpec())
    data["train_args"] = list(data["train_args"])
    data["tolerations"] = [dict(t) for t in data["tolerations"]]
    return data


def _labels(spec: JobSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "dicomlab", "app.kubernetes.io/component": "training",
            "app.kubernetes.io/instance": spec.name, "app.kubernetes.io/part-of": "dicomlab",
            "app.kubernetes.io/managed-by": "dicomlab-cli", **spec.labels}


def _service_name(spec: JobSpec) -> str:
    return f"{spec.name}-rdzv"


def _command(spec: JobSpec) -> list[str]:
    args = ["--cache-dir", "/cache", *spec.train_args]
    if spec.config_map:
        args = ["--config", "/config/train.json", *args]
    if spec.pushgateway_url:
        args += ["--set", f"pushgateway_url={spec.pushgateway_url}"]
    if spec.nodes == 1 and spec.gpus_per_node <= 1:
        return ["python", "-m", "dicomlab_training", "run", *args]
    torchrun = ["torchrun", f"--nnodes={spec.nodes}", f"--nproc-per-node={max(1, spec.gpus_per_node)}"]
    if spec.nodes > 1:
        # c10d rendezvous on the first pod of the Indexed Job (stable name through the headless Service);
        # node ranks are assigned by the rendezvous, restarts re-run it.
        endpoint = f"{spec.name}-0.{_service_name(spec)}.{spec.namespace}.svc:{RDZV_PORT}"
        torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={spec.name}"]
    else:
        torchrun += ["--standalone"]
    return [*torchrun, "-m", "dicomlab_training", "run", *args]


def _env(spec: JobSpec) -> list[k8s.V1EnvVar]:
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())]
    if spec.orthanc_url:
        env.append(k8s.V1EnvVar(name="DICOMLAB_TRAIN__ORTHANC__URL", value=spec.orthanc_url))
    if spec.orthanc_secret:
        for key in ("username", "password"):
            env.append(k8s.V1EnvVar(name=f"DICOMLAB_TRAIN__ORTHANC__{key.upper()}", value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=spec.orthanc_secret, key=key))))
    env.append(k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"))
    env.append(k8s.V1EnvVar(name="MPLCONFIGDIR", value="/tmp/matplotlib"))  # noqa: S108 (read-only root fs)
    return env


def _node_selector(spec: JobSpec) -> dict[str, str]:
    selector = dict(spec.node_selector)
    if spec.node_group:
        selector["eks.amazonaws.com/nodegroup"] = spec.node_group
    if spec.karpenter_nodepool:
        selector["karpenter.sh/nodepool"] = spec.karpenter_nodepool
    if spec.capacity_type:
        if spec.karpenter_nodepool:
            selector["karpenter.sh/capacity-type"] = spec.capacity_type.lower()
        else:
            selector["eks.amazonaws.com/capacityType"] = spec.capacity_type.upper().replace("-", "_")
    return selector


def _pod_spec(spec: JobSpec) -> k8s.V1PodSpec:
    resources: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    limits: dict[str, str] = {"memory": spec.memory}
    if spec.gpus_per_node:
        resources[GPU_RESOURCE] = str(spec.gpus_per_node)
        limits[GPU_RESOURCE] = str(spec.gpus_per_node)
    mounts = [k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),  # noqa: S108
              k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),  # noqa: S108
              k8s.V1VolumeMount(name="cache", mount_path="/cache")]
    shm = k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=spec.shm_size)
    volumes = [k8s.V1Volume(name="dshm", empty_dir=shm),
               k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
               k8s.V1Volume(name="cache", empty_dir=k8s.V1EmptyDirVolumeSource())]
    if spec.config_map:
        mounts.append(k8s.V1VolumeMount(name="config", mount_path="/config", read_only=True))
        volumes.append(k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(name=spec.config_map)))
    ports = [k8s.V1ContainerPort(name="rdzv", container_port=RDZV_PORT)] if spec.nodes > 1 else None
    container = k8s.V1Container(
        name="train", image=spec.image, image_pull_policy=spec.image_pull_policy, command=_command(spec),
        env=_env(spec),
        resources=k8s.V1ResourceRequirements(requests=resources, limits=limits), volume_mounts=mounts, ports=ports,
        security_context=k8s.V1SecurityContext(allow_privilege_escalation=False, run_as_non_root=True,
                                               capabilities=k8s.V1Capabilities(drop=["ALL"]),
                                               read_only_root_filesystem=True))
    return k8s.V1PodSpec(
        restart_policy="Never", service_account_name=spec.service_account or None, containers=[container],
        volumes=volumes, node_selector=_node_selector(spec) or None,
        # tolerations and affinity are given in Kubernetes' own (camelCase) form and passed through as is
        tolerations=[dict(t) for t in spec.tolerations] or None,  # type: ignore[misc]
        affinity=dict(spec.affinity) or None,  # type: ignore[arg-type]
        subdomain=_service_name(spec) if spec.nodes > 1 else None,
        termination_grace_period_seconds=60,
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=1000, fs_group=1000,
                                                  seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")))


def build_training_job(spec: JobSpec) -> list[dict[str, Any]]:
    """The manifests for ``spec``: ``[Job]`` or ``[Service (headless), Indexed Job]``."""
    if spec.nodes < 1:
        raise ValueError("nodes must be >= 1")
    labels = _labels(spec)
    meta = k8s.V1ObjectMeta(name=spec.name, namespace=spec.namespace, labels=labels)
    # Spot reclaim / eviction / preemption mark the pod DisruptionTarget: restart without using up backoffLimit
    # (the run resumes from its last checkpoint). Every other failure counts.
    failure_policy = k8s.V1PodFailurePolicy(rules=[
        k8s.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
    ])
    job_spec = k8s.V1JobSpec(
        backoff_limit=spec.backoff_limit, pod_failure_policy=failure_policy,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished or None,
        active_deadline_seconds=spec.active_deadline_seconds or None,
        template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=_pod_spec(spec)))
    objects: list[Any] = []
    if spec.nodes > 1:
        job_spec.completion_mode = "Indexed"
        job_spec.completions = spec.nodes
        job_spec.parallelism = spec.nodes
        objects.append(k8s.V1Service(
            api_version="v1", kind="Service",
            metadata=k8s.V1ObjectMeta(name=_service_name(spec), namespace=spec.namespace, labels=labels),
            spec=k8s.V1ServiceSpec(cluster_ip="None", publish_not_ready_addresses=True,
                                   selector={"app.kubernetes.io/instance": spec.name,
                                             "app.kubernetes.io/component": "training"},
                                   ports=[k8s.V1ServicePort(name="rdzv", port=RDZV_PORT, target_port=RDZV_PORT)])))
    objects.append(k8s.V1Job(api_version="batch/v1", kind="Job", metadata=meta, spec=job_spec))
    api = k8s.ApiClient()
    return [api.sanitize_for_serialization(obj) for obj in objects]  # type: ignore[no-untyped-call]


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False)


def submit(manifests: list[dict[str, Any]]) -> list[str]:
    """Create the objects in the current kube context (in-cluster config when running in a pod)."""
    from kubernetes import config as k8s_config

    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    created = []
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace", "default")
        if manifest["kind"] == "Service":
            k8s.CoreV1Api().create_namespaced_service(namespace, manifest)  # type: ignore[arg-type]
        else:
            k8s.BatchV1Api().create_namespaced_job(namespace, manifest)  # type: ignore[arg-type]
        created.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return created
