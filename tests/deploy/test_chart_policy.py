"""Level 2: template behaviour — security, labels/selectors, secrets, probes/resources, NetworkPolicies,
checksums, validateValues and the env variable names each service really reads."""

from __future__ import annotations

import base64
import copy
import importlib
import re
from typing import Any

import helm_python as helm
import pytest
from deploy_chart import SCENARIOS, Rendered, render_scenario, render_values, scenario_values

SELECTOR_FORBIDDEN = {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}
RECOMMENDED = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
               "helm.sh/chart"}
LONG_RUNNING = {"Deployment", "StatefulSet"}


def all_scenarios() -> list[Rendered]:
    return [render_scenario(s) for s in SCENARIOS]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return dict(obj["metadata"]["labels"])
    return dict(obj["spec"]["template"]["metadata"]["labels"])


def runtime_labels(obj: dict[str, Any]) -> dict[str, str]:
    """Pod labels as they exist at run time (the Job controller adds ``batch.kubernetes.io/job-name``)."""
    labels = pod_labels(obj)
    if obj["kind"] == "Job":
        labels["batch.kubernetes.io/job-name"] = obj["metadata"]["name"]
    return labels


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------- security

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_restricted(scenario: str) -> None:
    rendered = render_scenario(scenario)
    assert rendered.pod_specs()
    for obj, pod in rendered.pod_specs():
        where = f"{scenario}: {obj['kind']}/{obj['metadata']['name']}"
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert psc.get("runAsUser", 1) != 0, where
        assert pod["automountServiceAccountToken"] is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_resources_and_probes_on_every_container(scenario: str) -> None:
    for obj, pod in render_scenario(scenario).pod_specs():
        for c in containers(pod):
            where = f"{scenario}: {obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), where
            if obj["kind"] in LONG_RUNNING:
                assert "livenessProbe" in c and "readinessProbe" in c, where


def test_flask_services_probe_health_and_readiness_and_keep_metrics_writable() -> None:
    rendered = render_scenario("defaults")
    for name in ("proxy", "manifest", "labeling"):
        pod = rendered.get("Deployment", f"dicomlab-{name}")["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["DICOMLAB_BIND"] == "0.0.0.0:8080"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts[env["PROMETHEUS_MULTIPROC_DIR"]] == "prometheus-multiproc"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["prometheus-multiproc"] and "emptyDir" in volumes["tmp"]


# ------------------------------------------------------------------------------------ labels/selectors

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_labels_and_selectors_are_consistent(scenario: str) -> None:
    rendered = render_scenario(scenario)
    workloads = [obj for obj, _ in rendered.pod_specs()]
    for obj in rendered.objects:
        labels = obj["metadata"].get("labels", {})
        assert set(labels) >= RECOMMENDED, f"{obj['kind']}/{obj['metadata']['name']} lacks {RECOMMENDED - set(labels)}"
    for obj in workloads:
        if obj["kind"] in ("Pod", "Job"):  # Jobs get a generated controller-uid selector
            continue
        selector = obj["spec"]["selector"]["matchLabels"]
        assert not SELECTOR_FORBIDDEN & set(selector), obj["metadata"]["name"]
        assert matches(selector, pod_labels(obj)), obj["metadata"]["name"]
        others = [w for w in workloads if w is not obj and matches(selector, pod_labels(w))]
        assert not others, f"{obj['metadata']['name']} selector also matches {[o['metadata']['name'] for o in others]}"
    for svc in rendered.of_kind("Service"):
        selected = [w for w in workloads if w["kind"] != "Pod" and matches(svc["spec"]["selector"], runtime_labels(w))]
        assert len(selected) == 1, f"Service {svc['metadata']['name']} selects {len(selected)} workloads"
        target_ports = {p[k] for c in containers(selected[0]["spec"]["template"]["spec"]) for p in c["ports"]
                        for k in ("name", "containerPort")}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in target_ports
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        assert any(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(w)) for w in workloads)


def test_hpa_drives_the_proxy_and_the_deployment_leaves_replicas_to_it() -> None:
    rendered = render_scenario("defaults")
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dicomlab-proxy"}
    assert "replicas" not in rendered.get("Deployment", "dicomlab-proxy")["spec"]
    off = render_scenario("monitoring-off")
    assert not off.of_kind("HorizontalPodAutoscaler")
    assert off.get("Deployment", "dicomlab-proxy")["spec"]["replicas"] == 3


# ------------------------------------------------------------------------------------------- secrets

def secret_values(rendered: Rendered) -> set[str]:
    """Every secret value except user names (which legitimately appear in names like dicomlab-orthanc)."""
    values = set()
    for secret in rendered.of_kind("Secret"):
        for key, encoded in secret.get("data", {}).items():
            if "user" not in key:
                values.add(base64.b64decode(encoded).decode())
    assert all(len(v) >= 16 for v in values), "generated secrets must be long random strings"
    return values


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_value_in_plain_env(scenario: str) -> None:
    rendered = render_scenario(scenario)
    secrets = secret_values(rendered)
    for obj, pod in rendered.pod_specs():
        for c in containers(pod):
            for entry in c.get("env", []):
                value = entry.get("value")
                if value is None:
                    assert set(entry["valueFrom"]) <= {"secretKeyRef", "configMapKeyRef", "fieldRef"}
                    continue
                assert not any(s in value for s in secrets), f"{obj['metadata']['name']}: {entry['name']}"
                if re.search(r"PASSWORD|SECRET|TOKEN|KEYS$|REGISTERED_USERS|DATABASE_URL", entry["name"]):
                    # a composed value may only reference secretKeyRef entries, never carry a literal credential
                    refs = re.findall(r"\$\(([A-Z0-9_]+)\)", value)
                    assert refs, f"{obj['metadata']['name']}: {entry['name']} carries a literal value"
                    sources = {e["name"]: e for e in c["env"]}
                    assert all("secretKeyRef" in sources[r].get("valueFrom", {}) for r in refs)
    for cm in rendered.of_kind("ConfigMap"):
        for value in cm.get("data", {}).values():
            assert not any(s in value for s in secrets), cm["metadata"]["name"]


def test_existing_secrets_replace_generated_ones() -> None:
    rendered = render_scenario("external-db")
    assert not rendered.of_kind("Secret"), "with existing Secrets the chart must not create any"
    labeling = rendered.get("Deployment", "dicomlab-labeling")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in labeling["env"]}
    assert env["DICOMLAB_LABELING__DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "dicomlab-labeling-db", "key": "url"}
    assert env["DICOMLAB_LABELING__TOKEN_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "dicomlab-app", "key": "token-keys"}
    orthanc = rendered.get("Deployment", "dicomlab-orthanc")["spec"]["template"]["spec"]["containers"][0]
    oenv = {e["name"]: e for e in orthanc["env"]}
    assert oenv["ORTHANC__POSTGRESQL__PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "dicomlab-db", "key": "pass"}


def test_generated_secret_has_every_key_the_pods_reference() -> None:
    rendered = render_scenario("ingress")
    secrets = {s["metadata"]["name"]: set(s["data"]) for s in rendered.of_kind("Secret")}
    for obj, pod in rendered.pod_specs():
        for c in containers(pod):
            for entry in c.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], f"{obj['metadata']['name']}: {ref}"
    app = next(s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "dicomlab-app")
    kid, _, key = base64.b64decode(app["data"]["token-keys"]).decode().partition(":")
    from dicomlab_core.tokens import KeyRing

    assert KeyRing.parse([f"{kid}:{key}"]).active == "k1"


# ------------------------------------------------------------------------------------------ checksums

def test_checksum_config_annotation_follows_configuration() -> None:
    base = scenario_values("defaults")
    changed = copy.deepcopy(base)
    changed["orthanc"] = {"config": {"ORTHANC__STABLE_AGE": "30"}}
    before, after = render_values(base), render_values(changed)
    for obj, _ in before.pod_specs():
        if obj["kind"] in LONG_RUNNING:
            assert re.fullmatch(r"[0-9a-f]{64}", obj["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    def checksum(r: Rendered, name: str) -> str:
        return str(r.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(before, "dicomlab-orthanc") != checksum(after, "dicomlab-orthanc")
    assert after.get("ConfigMap", "dicomlab-orthanc")["data"]["ORTHANC__STABLE_AGE"] == "30"


# -------------------------------------------------------------------------------------------- Orthanc

def test_orthanc_is_configured_securely() -> None:
    rendered = render_scenario("defaults")
    config = rendered.get("ConfigMap", "dicomlab-orthanc")["data"]
    assert config["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
    assert config["ORTHANC__DICOM_WEB__ENABLE"] == "true"
    assert config["ORTHANC__POSTGRESQL__ENABLE_INDEX"] == "true"
    assert config["ORTHANC__POSTGRESQL__HOST"] == "dicomlab.cluster-abc123.eu-west-1.rds.amazonaws.com"
    assert config["ORTHANC__POSTGRESQL__ENABLE_SSL"] == "true"
    deployment = rendered.get("Deployment", "dicomlab-orthanc")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"docker\.io/orthancteam/orthanc:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "dicomlab-orthanc-storage"
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert "dicomlab-orthanc-dicom" not in {s["metadata"]["name"] for s in rendered.of_kind("Service")}
    dicom = render_scenario("external-db").get("Service", "dicomlab-orthanc-dicom")
    assert dicom["spec"]["type"] == "LoadBalancer" and dicom["spec"]["ports"][0]["port"] == 4242
    assert dicom["spec"]["loadBalancerSourceRanges"] == ["10.30.0.0/16"]
    assert dicom["spec"]["externalTrafficPolicy"] == "Local", "the NetworkPolicy must see the modality's address"


def test_image_digest_pins_the_image() -> None:
    values = scenario_values("defaults")
    digest = "sha256:" + "ab" * 32
    values["orthanc"] = {"image": {"digest": digest}}
    rendered = render_values(values)
    image = rendered.get("Deployment", "dicomlab-orthanc")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":26.8.2@{digest}")


def test_internal_postgresql_is_a_statefulset_from_the_official_image() -> None:
    rendered = render_scenario("ingress")
    (sts,) = rendered.of_kind("StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("docker.io/library/postgres:")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert "eval" in rendered.notes.lower() or "evaluation" in rendered.notes.lower()
    assert rendered.get("ConfigMap", "dicomlab-orthanc")["data"]["ORTHANC__POSTGRESQL__HOST"] == "dicomlab-postgresql"


# ---------------------------------------------------------------------------------- NetworkPolicies

def _peers_components(rule: dict[str, Any]) -> set[str | None]:
    return {p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") for p in rule.get("from", [])}


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


def test_orthanc_is_reachable_only_from_our_pods_and_prometheus() -> None:
    rendered = render_scenario("defaults")
    policy = rendered.get("NetworkPolicy", "dicomlab-orthanc")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    http_rules = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {8042}]
    ours = {"proxy", "manifest", "labeling", "training", "test"}
    for rule in http_rules:
        assert rule["from"], "an empty 'from' would admit everyone"
        components = _peers_components(rule)
        pods_only = all("podSelector" in p and "namespaceSelector" not in p for p in rule["from"])
        monitoring = all("namespaceSelector" in p for p in rule["from"])
        assert (pods_only and components <= ours) or monitoring, rule
    assert _egress_ports(policy) == {53, 5432}


def test_egress_is_limited_per_service() -> None:
    rendered = render_scenario("defaults")
    assert _egress_ports(rendered.get("NetworkPolicy", "dicomlab-proxy")) == {53, 8042}
    assert _egress_ports(rendered.get("NetworkPolicy", "dicomlab-manifest")) == {53, 8042, 443}
    assert _egress_ports(rendered.get("NetworkPolicy", "dicomlab-labeling")) == {53, 8042, 5432, 443}
    for policy in rendered.of_kind("NetworkPolicy"):
        for rule in policy["spec"]["egress"]:
            assert rule.get("ports") or policy["metadata"]["name"] == "dicomlab-training", policy["metadata"]["name"]
    workloads = {pod_labels(o).get("app.kubernetes.io/component") for o, _ in rendered.pod_specs()}
    covered = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rendered.of_kind("NetworkPolicy")}
    assert workloads <= covered, f"pods without a NetworkPolicy: {workloads - covered}"


def test_external_database_egress_uses_the_configured_cidrs_and_ingress_peers_narrow_public_access() -> None:
    policy = render_scenario("external-db").get("NetworkPolicy", "dicomlab-labeling")
    db_rules = [r for r in policy["spec"]["egress"] if {p["port"] for p in r["ports"]} == {5432}]
    assert db_rules[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    proxy = render_scenario("ingress").get("NetworkPolicy", "dicomlab-proxy")
    public = proxy["spec"]["ingress"][0]
    assert public["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}]


# ------------------------------------------------------------------------------ exposure and notes

def test_ingress_routes_public_hosts_with_tls_and_keeps_manifest_internal() -> None:
    (ingress,) = render_scenario("ingress").of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    hosts = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["spec"]["rules"]}
    assert hosts == {"dicomweb.example.org": "dicomlab-proxy", "labeling.example.org": "dicomlab-labeling"}
    assert set(ingress["spec"]["tls"][0]["hosts"]) == set(hosts)
    assert not any("cors" in k.lower() for k in ingress["metadata"].get("annotations", {}))


def test_proxy_allows_the_labeling_origin_and_labeling_points_browsers_at_the_proxy() -> None:
    rendered = render_scenario("ingress")
    proxy = {e["name"]: e.get("value") for e in
             rendered.get("Deployment", "dicomlab-proxy")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert proxy["DICOMLAB_PROXY__ALLOWED_ORIGINS"] == "https://labeling.example.org,https://s3.amazonaws.com"
    labeling = {e["name"]: e.get("value") for e in
                rendered.get("Deployment", "dicomlab-labeling")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert labeling["DICOMLAB_LABELING__PROXY_PUBLIC_URL"] == "https://dicomweb.example.org"


def test_service_accounts_carry_irsa_annotations() -> None:
    rendered = render_scenario("external-db")
    sa = rendered.get("ServiceAccount", "dicomlab-manifest")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/dicomlab-manifest")
    assert sa["automountServiceAccountToken"] is False
    deployment = rendered.get("Deployment", "dicomlab-manifest")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "dicomlab-manifest"


def test_notes_say_how_to_reach_everything() -> None:
    notes = render_scenario("defaults").notes
    for needle in ("svc/dicomlab-labeling", "svc/dicomlab-proxy", "svc/dicomlab-manifest", "svc/dicomlab-orthanc",
                   "helm test dicomlab"):
        assert needle in notes
    assert "https://labeling.example.org/" in render_scenario("ingress").notes


def test_helm_test_pod_checks_orthanc_auth_and_every_service() -> None:
    rendered = render_scenario("defaults")
    pods = rendered.of_kind("Pod")
    assert len(pods) == 1 and pods[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert set(env["SERVICE_URLS"].split()) == {f"http://dicomlab-{n}/readyz" for n in ("labeling", "manifest", "proxy")}
    assert "401" in pods[0]["spec"]["containers"][0]["args"][0]
    assert not render_scenario("monitoring-off").of_kind("Pod")


# ------------------------------------------------------------------------------- values validation

@pytest.mark.parametrize(("values", "message"), [
    ({}, "postgresql.external.host is required"),
    ({"postgresql": {"mode": "internal"}, "ingress": {"enabled": True}, "gateway": {"enabled": True}},
     "choose one of ingress.enabled and gateway.enabled"),
    ({"postgresql": {"mode": "internal"}, "orthanc": {"replicaCount": 2}}, "ReadWriteMany"),
])
def test_validate_values_fails_with_one_readable_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as excinfo:
        render_values(values)
    assert message in str(excinfo.value)
    assert "VALUES VALIDATION" in str(excinfo.value)


@pytest.mark.parametrize("values", [
    {"services": {"proxy": {"replicas": 3}}},
    {"orthanc": {"image": {"digest": "latest"}}},
    {"postgresql": {"mode": "sqlite"}},
    {"services": {"proxy": {"env": {"ORTHANC__X": "1"}}}},
    {"unknownTopLevel": True},
])
def test_schema_rejects_unknown_or_malformed_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_values(values)


# ------------------------------------------------------------------ env names = the services' config

SERVICE_CONFIGS = {
    "proxy": ("dicomlab_proxy.config", "DICOMLAB_PROXY"),
    "manifest": ("dicomlab_manifest.config", "DICOMLAB_MANIFEST"),
    "labeling": ("dicomlab_labeling.config", "DICOMLAB_LABELING"),
}


def _config_class(module_name: str) -> type | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    import dataclasses

    candidates = [obj for obj in vars(module).values()
                  if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
                  and obj.__name__.endswith("Config")]
    return candidates[0] if len(candidates) == 1 else None


@pytest.mark.parametrize("service", sorted(SERVICE_CONFIGS))
def test_chart_env_names_match_the_service_config(service: str) -> None:
    module_name, prefix = SERVICE_CONFIGS[service]
    cls = _config_class(module_name)
    if cls is None:
        pytest.skip(f"{module_name} has not landed yet (no single *Config dataclass to compare with)")
    from dicomlab_core.config import describe_config

    fields = {row.env: row for row in describe_config(cls, prefix)}
    for scenario in ("defaults", "external-db", "ingress"):
        rendered = render_scenario(scenario)
        c = rendered.get("Deployment", f"dicomlab-{service}")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        ours = {n for n in env if n.startswith(prefix + "__")}
        unknown = ours - set(fields)
        assert not unknown, f"{scenario}: the chart sets variables {service} does not read: {sorted(unknown)}"
        missing = {n for n, row in fields.items() if row.required} - ours
        assert not missing, f"{scenario}: required variables not set: {sorted(missing)}"
        for name in ours:
            if "secret" in fields[name].type:
                entry = env[name]
                assert "valueFrom" in entry or re.fullmatch(r"[^$]*(\$\([A-Z_]+\)[^$]*)+", entry["value"]), name


@pytest.mark.parametrize("service", sorted(SERVICE_CONFIGS))
def test_services_load_their_config_from_the_chart_env(service: str) -> None:
    """The env a pod gets (secretKeyRefs resolved from the generated Secrets, $(VAR) expanded as the
    kubelet does) is accepted by the service's own config loader, validation included."""
    module_name, prefix = SERVICE_CONFIGS[service]
    cls = _config_class(module_name)
    if cls is None:
        pytest.skip(f"{module_name} has not landed yet")
    from dicomlab_core.config import Secret, load_config

    rendered = render_scenario("ingress")
    secrets = {(s["metadata"]["name"], k): base64.b64decode(v).decode()
               for s in rendered.of_kind("Secret") for k, v in s["data"].items()}
    container = rendered.get("Deployment", f"dicomlab-{service}")["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], entry["value"])
    config = load_config(cls, prefix, env)
    assert config.orthanc.url == "http://dicomlab-orthanc:8042"
    assert config.orthanc.password == Secret(secrets[("dicomlab-app", "orthanc-password")])
    if service == "labeling":
        password = secrets[("dicomlab-postgresql", "password")]
        assert config.database_url.reveal() == (
            f"postgresql+psycopg://dicomlab:{password}@dicomlab-postgresql:5432/labeling?sslmode=disable")
        assert config.proxy_public_url == "https://dicomweb.example.org"
    if service == "proxy":
        assert config.allowed_origins == ("https://labeling.example.org", "https://s3.amazonaws.com")


TRAINING_PODS = {"matchLabels": {"app.kubernetes.io/part-of": "dicomlab", "app.kubernetes.io/component": "training"}}
"""Training runs are not part of the release (their instance label is the run's name): part-of + component."""


def test_training_egress_opens_only_the_pushgateway_port() -> None:
    values = scenario_values("training")
    values["monitoring"] = {"pushgatewayUrl": "http://pgw.monitoring.svc:19091"}
    policy = render_values(values).get("NetworkPolicy", "dicomlab-training")
    assert policy["spec"]["podSelector"] == TRAINING_PODS
    assert _egress_ports(policy) == {53, 8042, 443, 19091}
    peer_rules = [r for r in policy["spec"]["egress"] if "ports" not in r]
    assert peer_rules == [{"to": [{"podSelector": TRAINING_PODS}]}], "only other training pods on any port"
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": TRAINING_PODS}]}]
    values["monitoring"] = {"pushgatewayUrl": ""}
    without_push = render_values(values).get("NetworkPolicy", "dicomlab-training")
    assert _egress_ports(without_push) == {53, 8042, 443}, "no Pushgateway: no extra port"


def test_training_policy_and_service_account_are_rendered_without_any_training_job() -> None:
    rendered = render_scenario("training")
    account = rendered.get("ServiceAccount", "dicomlab-training")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/dicomlab-training"}
    assert account["automountServiceAccountToken"] is False
    assert rendered.get("NetworkPolicy", "dicomlab-training")["spec"]["podSelector"] == TRAINING_PODS
    jobs = [o for o in rendered.objects if o["kind"] in ("Job", "JobSet")]
    assert all(j["metadata"].get("annotations", {}).get("helm.sh/hook") for j in jobs), \
        "the release owns no training Job: only hook Jobs (migrations, tests)"
    named = render_values({**scenario_values("training"),
                           "training": {"serviceAccount": {"create": True, "name": "trainer"}}})
    assert named.get("ServiceAccount", "trainer")
    none = render_values({**scenario_values("training"), "training": {"serviceAccount": {"create": False}}})
    assert not [a for a in none.of_kind("ServiceAccount") if a["metadata"]["name"].endswith("training")]
    assert none.get("NetworkPolicy", "dicomlab-training"), "the policy does not depend on the ServiceAccount"


@pytest.mark.parametrize("old", [{"enabled": True}, {"nodes": 2}, {"runName": "r1", "gpusPerNode": 4},
                                 {"image": {"repository": "x/dicomlab-training"}}])
def test_old_training_job_values_fail_schema_validation(old: dict[str, Any]) -> None:
    """A values file from before training left the release fails loudly, naming the key (not silently ignored)."""
    values = {**scenario_values("training"), "training": old}
    with pytest.raises(helm.HelmError) as excinfo:
        render_values(values)
    message = str(excinfo.value)
    assert "training" in message and next(iter(old)) in message, message
