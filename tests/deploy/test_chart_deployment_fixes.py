"""What a real installation needs from the chart (issue 18 §5-6, issue 14 §7), rendered with Helm's engine.

- Prometheus Operator objects only where the cluster serves monitoring.coreos.com/v1 (or when forced);
- /metrics on its own port: a `metrics` Service port that no Ingress/HTTPRoute references and that the
  NetworkPolicies admit only from the monitoring peers;
- FORWARDED_ALLOW_IPS from values, so the ingress's X-Forwarded-Proto counts;
- Orthanc's users JSON encoded by toJson (any character in the password);
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_chart import CHART, Rendered, render_scenario, render_values, scenario_values

OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule", "PodMonitor"}
FLASK_SERVICES = ("proxy", "manifest", "labeling")


def _kinds(rendered: Rendered) -> set[str]:
    return {o["kind"] for o in rendered.objects}


def test_plain_cluster_without_the_operator_gets_no_operator_objects() -> None:
    values = scenario_values("defaults")
    plain = render_values(values, "plain", api_versions=())
    assert not _kinds(plain) & OPERATOR_KINDS, "helm install would fail on a cluster without the Operator's CRDs"
    assert plain.get("ConfigMap", "dicomlab-dashboard"), "the dashboard is a plain ConfigMap: kept"
    with_operator = render_values(values, "operator")
    assert {"ServiceMonitor", "PrometheusRule"} <= _kinds(with_operator)


def test_operator_objects_can_be_forced_for_offline_renders() -> None:
    values = scenario_values("defaults")
    values["monitoring"] = {**values.get("monitoring", {}), "forceOperatorObjects": True}
    forced = render_values(values, "forced", api_versions=())
    assert {"ServiceMonitor", "PrometheusRule"} <= _kinds(forced)
    off = render_values({**values, "monitoring": {"enabled": False, "forceOperatorObjects": True}}, "off")
    assert not _kinds(off) & OPERATOR_KINDS


def _container(rendered: Rendered, name: str) -> dict[str, Any]:
    deployment = rendered.get("Deployment", f"dicomlab-{name}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("port", [9090, 9464])
def test_metrics_have_their_own_port(port: int) -> None:
    values = scenario_values("ingress")
    values["monitoring"] = {**values.get("monitoring", {}), "metricsPort": port}
    rendered = render_values(values, "ingress")
    for name in FLASK_SERVICES:
        container = _container(rendered, name)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": 8080, "metrics": port}
        assert _env(container)["DICOMLAB_METRICS_PORT"] == str(port)
        # probes stay on the public port: the metrics port answers /metrics only
        assert container["readinessProbe"]["httpGet"]["port"] == "http"
        service = rendered.get("Service", f"dicomlab-{name}")
        assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
            "http": (80, "http"), "metrics": (port, "metrics")}
    (monitor,) = [m for m in rendered.of_kind("ServiceMonitor") if m["metadata"]["name"] == "dicomlab-services"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_ingress_and_gateway_never_route_the_metrics_port() -> None:
    ingress = render_scenario("ingress").of_kind("Ingress")
    assert ingress
    backends = [p["backend"]["service"]["port"] for i in ingress for r in i["spec"]["rules"]
                for p in r["http"]["paths"]]
    assert backends and all(b == {"name": "http"} for b in backends)
    routes = render_scenario("gateway").of_kind("HTTPRoute")
    assert routes
    for route in routes:
        for rule in route["spec"]["rules"]:
            assert {b["port"] for b in rule["backendRefs"]} == {80}


def test_network_policies_admit_the_metrics_port_only_from_monitoring() -> None:
    rendered = render_scenario("defaults")
    metrics_from = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]["metricsFrom"]
    for name in FLASK_SERVICES:
        policy = rendered.get("NetworkPolicy", f"dicomlab-{name}")
        rules = policy["spec"]["ingress"]
        for rule in rules:
            ports = {p["port"] for p in rule["ports"]}
            if 9090 in ports:
                assert ports == {9090} and rule["from"] == metrics_from, rule
            else:
                assert ports == {8080}, rule
        assert any(9090 in {p["port"] for p in r["ports"]} for r in rules), f"{name}: Prometheus cannot scrape"
    # without monitoring, nothing is admitted on the metrics port
    off = render_scenario("monitoring-off")
    for name in FLASK_SERVICES:
        ports = {p["port"] for r in off.get("NetworkPolicy", f"dicomlab-{name}")["spec"]["ingress"] for p in r["ports"]}
        assert ports == {8080}


def test_forwarded_allow_ips_come_from_values() -> None:
    rendered = render_scenario("defaults")
    for name in FLASK_SERVICES:
        assert _env(_container(rendered, name))["FORWARDED_ALLOW_IPS"] == \
            "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.1,::1"
    narrowed = render_values({**scenario_values("defaults"), "forwardedAllowIps": ["10.42.0.0/16"]})
    assert _env(_container(narrowed, "proxy"))["FORWARDED_ALLOW_IPS"] == "10.42.0.0/16"


@pytest.mark.parametrize("values", [
    {"forwardedAllowIps": []},
    {"forwardedAllowIps": ["10.0.0.0/8; rm -rf /"]},
    {"monitoring": {"metricsPort": 8080}},
    {"monitoring": {"metricsPort": 80}},
])
def test_schema_rejects_bad_metrics_and_proxy_settings(values: dict[str, Any]) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError):
        render_values({**scenario_values("defaults"), **values})


# --------------------------------------------------------------------------------- Orthanc's users JSON

TRICKY_PASSWORD = 'p"a\\s\ns\'{}$(X)\t\u00e9<&>'
TRICKY_USER = 'o"r\\t\nh'


def _go_string(text: str) -> str:
    """``text`` as a Go template string literal (its own escapes: quote, backslash, control characters)."""
    return json.dumps(text, ensure_ascii=True).replace("\\u00e9", "\u00e9")


def test_orthanc_users_json_is_valid_for_any_characters(tmp_path: Path) -> None:
    """The helper the generated Secret uses, rendered by Helm with a password holding quotes,
    backslashes, a newline and a $(VAR) lookalike: the result parses back to exactly those strings."""
    import helm_python as helm

    chart = tmp_path / "dicomlab"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-users-json-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: users-json-probe}\ndata:\n"
        f"  users: {{{{ include \"dicomlab.orthancUsersJson\" (dict \"username\" {_go_string(TRICKY_USER)} "
        f"\"password\" {_go_string(TRICKY_PASSWORD)}) | b64enc | quote }}}}\n")
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values=scenario_values("defaults"), name="dicomlab", namespace="dicomlab")
    probe = yaml.safe_load(next(text for path, text in manifests.items() if path.endswith("zz-users-json-probe.yaml")))
    assert json.loads(base64.b64decode(probe["data"]["users"])) == {TRICKY_USER: TRICKY_PASSWORD}


def test_orthanc_reads_its_users_json_from_the_secret() -> None:
    values = {**scenario_values("defaults"), "secrets": {"orthancUsername": TRICKY_USER}}
    rendered = render_values(values)
    (secret,) = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "dicomlab-app"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert json.loads(data["orthanc-registered-users"]) == {TRICKY_USER: data["orthanc-password"]}
    assert data["orthanc-username"] == TRICKY_USER
    orthanc = rendered.get("Deployment", "dicomlab-orthanc")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in orthanc["env"]}
    assert env["ORTHANC__REGISTERED_USERS"] == {"name": "ORTHANC__REGISTERED_USERS", "valueFrom": {
        "secretKeyRef": {"name": "dicomlab-app", "key": "orthanc-registered-users"}}}
    assert not any("$(" in str(e.get("value", "")) and "ORTHANC" in e["name"] for e in orthanc["env"])


# ------------------------------------------------------------------------------ manifest service state

def test_manifest_service_is_one_pod_with_recreate_and_a_state_volume() -> None:
    rendered = render_scenario("defaults")
    deployment = rendered.get("Deployment", "dicomlab-manifest")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "dicomlab-manifest-state"}
    claim = rendered.get("PersistentVolumeClaim", "dicomlab-manifest-state")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not [h for h in rendered.of_kind("HorizontalPodAutoscaler") if "manifest" in h["metadata"]["name"]]
    # the other services keep rolling updates on emptyDirs
    proxy = rendered.get("Deployment", "dicomlab-proxy")
    assert proxy["spec"]["strategy"]["type"] == "RollingUpdate"
    existing = render_values({**scenario_values("defaults"),
                              "services": {"manifest": {"persistence": {"existingClaim": "my-state"}}}})
    volumes = {v["name"]: v for v in existing.get("Deployment", "dicomlab-manifest")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "my-state"}
    assert not existing.of_kind("PersistentVolumeClaim") or all(
        c["metadata"]["name"] != "dicomlab-manifest-state" for c in existing.of_kind("PersistentVolumeClaim"))


@pytest.mark.parametrize("manifest", [{"replicaCount": 2}, {"autoscaling": {"enabled": True}},
                                      {"persistence": {"size": "lots"}}, {"persistence": {"unknown": 1}}])
def test_schema_keeps_the_manifest_service_to_one_pod(manifest: dict[str, Any]) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError):
        render_values({**scenario_values("defaults"), "services": {"manifest": manifest}})


# ---------------------------------------------------------------------------- labeling migration hook

def _hook(rendered: Rendered) -> dict[str, Any]:
    return rendered.get("Job", "dicomlab-migrate")


def test_migrations_run_as_a_hook_before_new_labeling_pods() -> None:
    generated = render_scenario("defaults")  # generated Secrets: they do not exist before install
    job = _hook(generated)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    external = _hook(render_scenario("external-db"))  # every Secret and the database exist beforehand
    assert external["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "dicomlab_labeling.workflow.migrate"]
    labeling = _container(generated, "labeling")
    assert container["image"] == labeling["image"]
    ours = {e["name"]: e for e in container["env"] if e["name"].startswith("DICOMLAB_")}
    theirs = {e["name"]: e for e in labeling["env"] if e["name"].startswith("DICOMLAB_LABELING__")
              or e["name"].startswith("DICOMLAB_DB_")}
    assert {n: e for n, e in ours.items() if n in theirs} == theirs, "the Job sees the service's database config"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    policy = generated.get("NetworkPolicy", "dicomlab-migrate")
    assert policy["spec"]["ingress"] == []
    assert 5432 in {p["port"] for r in policy["spec"]["egress"] for p in r.get("ports", [])}
    postgres_policy = render_scenario("ingress").get("NetworkPolicy", "dicomlab-postgresql")  # in-chart database
    peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
             for r in postgres_policy["spec"]["ingress"] for p in r["from"]}
    assert "migrate" in peers
    off = render_values({**scenario_values("defaults"), "services": {"labeling": {"migrations": {"hook": False}}}})
    assert not off.of_kind("Job")


def test_migration_job_command_migrates_a_real_database_with_the_rendered_env(postgres: Any) -> None:
    """The hook's command, with the env the Job gets (Secrets resolved, $(VAR) expanded as the kubelet
    does; the database host pointed at the test server), brings an empty PostgreSQL database to head."""
    import re
    import subprocess
    import sys

    from dicomlab_labeling.workflow.db import Database
    from dicomlab_labeling.workflow.migrate import current_revision, head_revision

    rendered = render_scenario("ingress")
    secrets = {(s["metadata"]["name"], k): base64.b64decode(v).decode()
               for s in rendered.of_kind("Secret") for k, v in s["data"].items()}
    secrets[("dicomlab-postgresql", "username")] = postgres.user
    secrets[("dicomlab-postgresql", "password")] = postgres.password.reveal()
    (container,) = _hook(rendered)["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], entry["value"])
    database = "labeling_hook_test"
    postgres.create_database(database)
    url = re.sub(r"@[^/]+/labeling\?sslmode=disable$", f"@127.0.0.1:{postgres.port}/{database}",
                 env["DICOMLAB_LABELING__DATABASE_URL"])
    assert url != env["DICOMLAB_LABELING__DATABASE_URL"]
    env.update({"DICOMLAB_LABELING__DATABASE_URL": url, "DICOMLAB_LABELING__DATA_DIR": "/tmp",
                "PATH": "/usr/bin:/bin"})
    assert container["command"][0] == "python"  # the image's interpreter; here the test's own
    result = subprocess.run([sys.executable, *container["command"][1:]], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    db = Database(url)
    try:
        revision = current_revision(db)
        assert revision is not None and revision == head_revision(db)
        assert result.stdout.strip().splitlines()[-1] == revision
    finally:
        db.dispose()
    assert postgres.password.reveal() not in result.stdout + result.stderr


def test_services_get_the_read_stores_and_the_trusted_forwarders_from_values() -> None:
    """Ground Truth output buckets must reach the confinement rule, and login limits must see the real client."""
    values = scenario_values("ingress")
    values["objectStore"] = {**values.get("objectStore", {}), "extraReadStores": ["s3://gt-output/chest", "s3://gt-other"]}
    values["forwardedAllowIps"] = ["10.42.0.0/16"]
    rendered = render_values(values, "read-stores")
    labeling, manifest = _env(_container(rendered, "labeling")), _env(_container(rendered, "manifest"))
    assert labeling["DICOMLAB_LABELING__EXTRA_READ_STORES"] == "s3://gt-output/chest,s3://gt-other"
    assert manifest["DICOMLAB_MANIFEST__EXTRA_READ_STORES"] == "s3://gt-output/chest,s3://gt-other"
    assert labeling["DICOMLAB_LABELING__AUTH__FORWARDED_FOR_PROXIES"] == "10.42.0.0/16"
    assert _env(_container(rendered, "labeling"))["FORWARDED_ALLOW_IPS"] == "10.42.0.0/16"
    values["objectStore"]["extraReadStores"] = ["/etc"]
    with pytest.raises(Exception, match="extraReadStores"):
        render_values(values, "bad-store")
