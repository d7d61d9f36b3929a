"""``dicomlab train submit``: a training run on Kubernetes — a Job on one node, a JobSet on several.

``--mode predict`` renders the same Job for ``dicomlab_training predict`` (batch inference over a
manifest, one pod, resumable from its written parts): same image, labels, Secret and ServiceAccount.

:func:`build_training_job` is a pure function from a :class:`JobSpec` to manifests (plain dicts made
with the kubernetes client's models), so the CLI, the tests and ``k8s/*.yaml`` share one definition;
:data:`DEFAULTS_FILE` (``job-defaults.json`` next to this module) holds the defaults. Training runs are
not part of the Helm release (a Job's pod template cannot change under ``helm upgrade``); the defaults
point at what the chart creates for release ``dicomlab``: its image, its Orthanc Service and its app
Secret (keys ``orthanc-username`` / ``orthanc-password``).

What the spec encodes (see infra-notes.md):

- labels ``app.kubernetes.io/part-of=dicomlab`` + ``app.kubernetes.io/component=training``: what the
  chart's NetworkPolicies admit to Orthanc (``instance`` is the run's name, not the release's);
- ``nvidia.com/gpu`` requests/limits, a toleration for the GPU taint, a node selector for an EKS
  managed node group (``eks.amazonaws.com/nodegroup``) or a Karpenter NodePool
  (``karpenter.sh/nodepool``) and the capacity type (spot/on-demand), optional extra affinity;
- ``karpenter.sh/do-not-disrupt: "true"`` on training pods (Karpenter does not consolidate a node
  under a running step; a spot reclaim still can, and is handled below);
- an emptyDir ``medium: Memory`` at /dev/shm (the default 64 MB breaks DataLoader workers);
- a ServiceAccount for S3 through IRSA / EKS Pod Identity (no static keys in the pod);
- one node: a Job whose ``podFailurePolicy`` ignores DisruptionTarget (spot reclaim, eviction) and the
  preempted exit code 143, so the pod is replaced and the run resumes from its checkpoint without
  using up ``backoffLimit``;
- several nodes: a JobSet (``jobset.x-k8s.io/v1alpha2``, needs the JobSet controller) with one
  replicated Job of ``nodes`` Indexed pods. When any pod fails the whole group is recreated
  (``failurePolicy.maxRestarts`` = ``backoff_limit``): each child Job has ``backoffLimit: 0`` and a
  ``podFailurePolicy`` that fails the Job with reason ``PodFailurePolicy`` on DisruptionTarget or exit
  code 143, which the JobSet rule ``RestartJobSetAndIgnoreMaxRestarts`` turns into a restart that does not
  count. torchrun meets through the JobSet's headless Service (``network.enableDNSHostnames``): c10d
  rendezvous on ``<jobset>-node-0-0.<subdomain>:29400``. Every restart runs the same command, which
  resumes from ``<out>/checkpoints/last.pt`` in the object store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from dicomlab_training.config import PREEMPTED_EXIT_CODE

DEFAULTS_FILE = Path(__file__).with_name("job-defaults.json")
RDZV_PORT = 29400
GPU_RESOURCE = "nvidia.com/gpu"


JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "node"
"""Name of the JobSet's one replicated Job (pods are ``<jobset>-node-0-<index>``)."""
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
CONTAINER = "train"
PREDICT = "predict"
MODES = ("train", PREDICT)
MODE_LABEL = "dicomlab.io/mode"


@dataclass(frozen=True)
class JobSpec:
    """A training run on Kubernetes. Defaults are in ``job-defaults.json``."""

    name: str = "dicomlab-train"
    namespace: str = "dicomlab"
    image: str = "ghcr.io/dicomlab/dicomlab-training:0.1.0"
    """The project's training image (docker/training.Dockerfile) at the chart's appVersion (the chart runs no
    training itself: it provides the ServiceAccount and NetworkPolicy these pods use)."""
    image_pull_policy: str = "IfNotPresent"
    mode: str = "train"
    """``train`` (``dicomlab_training run``) or ``predict`` (``dicomlab_training predict``: batch inference,
    one pod, same image, labels, Secret and ServiceAccount)."""
    train_args: tuple[str, ...] = ()
    """Arguments after ``python -m dicomlab_training run`` (or ``predict`` in predict mode), e.g.
    --manifest ... --out s3://..."""
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
    """Retries for real failures: the Job's ``backoffLimit``, the JobSet's ``failurePolicy.maxRestarts``."""
    active_deadline_seconds: int = 0
    ttl_seconds_after_finished: int = 86400
    env: Mapping[str, str] = field(default_factory=dict)
    orthanc_secret: str = "dicomlab-app"  # noqa: S105 (a Secret's name)
    """Secret with the Orthanc credentials (the chart's app Secret for release ``dicomlab``)."""
    orthanc_username_key: str = "orthanc-username"
    orthanc_password_key: str = "orthanc-password"  # noqa: S105 (a key name)
    orthanc_url: str = "http://dicomlab-orthanc:8042"
    """The chart's Orthanc Service for release ``dicomlab``."""
    pushgateway_url: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    do_not_disrupt: bool = True
    """Annotate pods ``karpenter.sh/do-not-disrupt: "true"``."""


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
    """part-of + component select training pods in the chart's NetworkPolicies; instance names the run.

    A predict run keeps component ``training`` (it reads Orthanc through the same NetworkPolicy) and
    adds ``dicomlab.io/mode: predict`` so it can be told apart.
    """
    mode = {MODE_LABEL: PREDICT} if spec.mode == PREDICT else {}
    return {"app.kubernetes.io/name": "dicomlab", "app.kubernetes.io/component": "training",
            "app.kubernetes.io/instance": spec.name, "app.kubernetes.io/part-of": "dicomlab",
            "app.kubernetes.io/managed-by": "dicomlab-cli", **mode, **spec.labels}


def rendezvous_host(spec: JobSpec) -> str:
    """The JobSet's first pod through its headless Service: ``<jobset>-<replicated job>-0-0.<subdomain>``."""
    return f"{spec.name}-{REPLICATED_JOB}-0-0.{spec.name}"


def _command(spec: JobSpec) -> list[str]:
    args = ["--cache-dir", "/cache", *spec.train_args]
    if spec.config_map:
        args = ["--config", "/config/train.json", *args]
    if spec.pushgateway_url:
        args += ["--set", f"pushgateway_url={spec.pushgateway_url}"]
    if spec.mode == PREDICT:  # one process: batch inference needs no torchrun
        return ["python", "-m", "dicomlab_training", PREDICT, *args]
    if spec.nodes == 1 and spec.gpus_per_node <= 1:
        return ["python", "-m", "dicomlab_training", "run", *args]
    # torchrun through dicomlab_training.torchrun: the same launcher, exiting 143 when preempted
    torchrun = ["python", "-m", "dicomlab_training.torchrun", f"--nnodes={spec.nodes}",
                f"--nproc-per-node={max(1, spec.gpus_per_node)}"]
    if spec.nodes > 1:
        # c10d rendezvous on the JobSet's first pod; node ranks come from the rendezvous. A group restart
        # recreates every pod, which meet again under the same name and resume from the checkpoint.
        torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rendezvous_host(spec)}:{RDZV_PORT}",
                     f"--rdzv-id={spec.name}"]
    else:
        torchrun += ["--standalone"]
    return [*torchrun, "-m", "dicomlab_training", "run", *args]


def _env(spec: JobSpec) -> list[k8s.V1EnvVar]:
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())]
    if spec.orthanc_url:
        env.append(k8s.V1EnvVar(name="DICOMLAB_TRAIN__ORTHANC__URL", value=spec.orthanc_url))
    if spec.orthanc_secret:
        for setting, key in (("USERNAME", spec.orthanc_username_key), ("PASSWORD", spec.orthanc_password_key)):
            env.append(k8s.V1EnvVar(name=f"DICOMLAB_TRAIN__ORTHANC__{setting}", value_from=k8s.V1EnvVarSource(
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
        name=CONTAINER, image=spec.image, image_pull_policy=spec.image_pull_policy, command=_command(spec),
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
        termination_grace_period_seconds=60,
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=1000, fs_group=1000,
                                                  seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")))


def _pod_template(spec: JobSpec) -> k8s.V1PodTemplateSpec:
    annotations = {DO_NOT_DISRUPT: "true"} if spec.do_not_disrupt else None
    return k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=_labels(spec), annotations=annotations),
                                 spec=_pod_spec(spec))


def _preempted(action: str) -> k8s.V1PodFailurePolicy:
    """``action`` for a pod that was disrupted (spot reclaim, eviction, preemption) or exited as preempted."""
    return k8s.V1PodFailurePolicy(rules=[
        k8s.V1PodFailurePolicyRule(action=action, on_pod_conditions=[
            k8s.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
        k8s.V1PodFailurePolicyRule(action=action, on_exit_codes=k8s.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER, operator="In", values=[PREEMPTED_EXIT_CODE])),
    ])


def build_training_job(spec: JobSpec) -> list[dict[str, Any]]:
    """The manifests for ``spec``: ``[Job]`` on one node, ``[JobSet]`` on several."""
    if spec.nodes < 1:
        raise ValueError("nodes must be >= 1")
    if spec.mode not in MODES:
        raise ValueError(f"mode: one of {', '.join(MODES)}")
    if spec.mode == PREDICT:
        _check_predict(spec)
    if spec.nodes > 1:
        return [build_jobset(spec)]
    # A disrupted or preempted pod is replaced without using up backoffLimit (the run resumes from its
    # last checkpoint). Every other failure counts.
    job_spec = k8s.V1JobSpec(
        backoff_limit=spec.backoff_limit, pod_failure_policy=_preempted("Ignore"),
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished or None,
        active_deadline_seconds=spec.active_deadline_seconds or None, template=_pod_template(spec))
    job = k8s.V1Job(api_version="batch/v1", kind="Job", spec=job_spec,
                    metadata=k8s.V1ObjectMeta(name=spec.name, namespace=spec.namespace, labels=_labels(spec)))
    return [_serialize(job)]


def _check_predict(spec: JobSpec) -> None:
    """A predict run is one pod on at most one GPU and needs --model, --manifest and --out."""
    if spec.nodes != 1 or spec.gpus_per_node > 1:
        raise ValueError("predict runs on one node with at most one GPU (--nodes 1, --gpus-per-node 0 or 1)")
    given = {a.split("=", 1)[0] for a in spec.train_args}
    missing = [o for o in ("--model", "--manifest", "--out") if o not in given]
    if missing:
        raise ValueError(f"predict needs {', '.join(missing)} after -- (the arguments of `train predict`)")


def build_jobset(spec: JobSpec) -> dict[str, Any]:
    """The multi-node run as a JobSet: whole-group restart, disruptions not counted, DNS rendezvous."""
    last_pod = f"{spec.name}-{REPLICATED_JOB}-0-{spec.nodes - 1}"
    if len(last_pod) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec.name):
        raise ValueError(f"JobSet name {spec.name!r}: pod host names ({last_pod}) must be DNS labels of at most "
                         "63 characters (lower-case letters, digits, '-')")
    child = k8s.V1JobSpec(
        completion_mode="Indexed", completions=spec.nodes, parallelism=spec.nodes, backoff_limit=0,
        pod_failure_policy=_preempted("FailJob"),
        active_deadline_seconds=spec.active_deadline_seconds or None, template=_pod_template(spec))
    jobset_spec: dict[str, Any] = {
        "network": {"enableDNSHostnames": True, "subdomain": spec.name, "publishNotReadyAddresses": True},
        "failurePolicy": {
            "maxRestarts": spec.backoff_limit,
            "restartStrategy": "Recreate",
            "rules": [
                # the child Job failed through its podFailurePolicy: a disruption or a preempted exit
                {"name": "RestartOnPreemption", "action": "RestartJobSetAndIgnoreMaxRestarts",
                 "onJobFailureReasons": ["PodFailurePolicy"]},
                # anything else (BackoffLimitExceeded, DeadlineExceeded, ...) restarts and counts
                {"name": "RestartOnFailure", "action": "RestartJobSet"},
            ],
        },
        "successPolicy": {"operator": "All"},
        "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {
            "metadata": {"labels": _labels(spec)}, "spec": _serialize(child)}}],
    }
    if spec.ttl_seconds_after_finished:
        jobset_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {"apiVersion": JOBSET_API_VERSION, "kind": "JobSet",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": _labels(spec)},
            "spec": jobset_spec}


def _serialize(obj: Any) -> Any:
    return k8s.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False)


def submit(manifests: list[dict[str, Any]]) -> list[str]:
    """Create the objects in the current kube context (in-cluster config when running in a pod).

    No configuration, an unreachable API server or a refusal raise :class:`ConfigError` with one line
    (the CLI prints it without a traceback); a missing JobSet CRD says that the controller is needed.
    """
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from dicomlab_core.errors import ConfigError

    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
        except (k8s_config.ConfigException, OSError) as exc:
            raise ConfigError(f"no Kubernetes configuration ({_first_line(exc)}); set KUBECONFIG or use "
                              "--dry-run to print the manifests") from None
    created = []
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace", "default")
        kind = manifest["kind"]
        try:
            if kind == "JobSet":
                group, version = JOBSET_API_VERSION.split("/")
                k8s.CustomObjectsApi().create_namespaced_custom_object(group, version, namespace, "jobsets", manifest)
            else:
                k8s.BatchV1Api().create_namespaced_job(namespace, manifest)  # type: ignore[arg-type]
        except ApiException as exc:
            hint = " (is the JobSet controller installed?)" if kind == "JobSet" and exc.status == 404 else ""
            raise ConfigError(f"creating {kind}/{manifest['metadata']['name']} in {namespace} failed: "
                              f"{exc.status} {exc.reason}{hint}") from None
        except HTTPError as exc:
            raise ConfigError(f"cannot reach the Kubernetes API server: {_first_line(exc)}") from None
        created.append(f"{kind}/{manifest['metadata']['name']}")
    return created


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
