"""The deploy smoke's kubelet stand-in (scripts/deploy_smoke/kubelet.py) translates the chart's rendered pod
specs faithfully: the same user, groups, read-only root, capabilities, env (with the kubelet's $(VAR)
expansion from Secrets) and volumes. The smoke itself (`make deploy-smoke`) needs podman and the images;
these checks need neither, so they run with the rest of tests/deploy.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from functools import cache
from pathlib import Path

import pytest
from deploy_chart import REPO

sys.path.insert(0, str(REPO / "scripts"))

from deploy_smoke.__main__ import SMOKE_VALUES, render
from deploy_smoke.kubelet import Cluster, Pod, SmokeError, cleanup, expand


@cache
def objects() -> tuple[dict, ...]:  # type: ignore[type-arg]
    return tuple(render(SMOKE_VALUES))


def cluster(tmp_path: Path) -> Cluster:
    return Cluster(list(objects()), "dicomlab", "test-net", tmp_path, log=lambda _: None)


def pod(name: str, kind: str = "Deployment") -> Pod:
    workload = next(o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name)
    spec = dict(workload["spec"]["template"]["spec"])
    if kind == "StatefulSet":
        spec["_volumeClaimTemplates"] = workload["spec"]["volumeClaimTemplates"]
    return Pod(f"{name}-pod", kind, spec, workload["spec"]["template"]["metadata"]["labels"],
               spec["containers"][0], "Always")


def test_expand_follows_the_kubelet() -> None:
    env = {"USER": "u", "PASSWORD": "p@ss"}
    assert expand("x://$(USER):$(PASSWORD)@h", env) == "x://u:p@ss@h"
    assert expand("$(MISSING) $$(USER)", env) == "$(MISSING) $(USER)"


@pytest.mark.parametrize("service", ["proxy", "manifest", "labeling"])
def test_service_pods_run_with_the_charts_security_context(service: str, tmp_path: Path) -> None:
    args = cluster(tmp_path).security_args(pod(f"dicomlab-{service}"), image_user="10001:10001")
    assert args == ["--user", "10001:10001", "--group-add", "10001", "--read-only", "--read-only-tmpfs=false",
                    "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def test_run_as_non_root_refuses_a_root_image_user(tmp_path: Path) -> None:
    training_like = pod("dicomlab-proxy")
    training_like.spec = {**training_like.spec, "securityContext": {"runAsNonRoot": True}}
    training_like.container = {**training_like.container, "securityContext": {}}
    with pytest.raises(SmokeError, match="root"):
        cluster(tmp_path).security_args(training_like, image_user="0")


def test_env_comes_from_the_rendered_secrets_with_expansion(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    env = c.resolve_env(pod("dicomlab-labeling"))
    pg_secret = next(o for o in objects() if o["kind"] == "Secret" and "password" in (o.get("data") or {}))
    user = base64.b64decode(pg_secret["data"]["username"]).decode()
    password = base64.b64decode(pg_secret["data"]["password"]).decode()
    assert env["DICOMLAB_LABELING__DATABASE_URL"].startswith(
        f"postgresql+psycopg://{user}:{password}@dicomlab-postgresql:5432/")
    orthanc_env = c.resolve_env(pod("dicomlab-orthanc"))
    app_secret = next(o for o in objects() if o["kind"] == "Secret" and o["metadata"]["name"] == "dicomlab-app")
    app = {k: base64.b64decode(v).decode() for k, v in app_secret["data"].items()}
    assert json.loads(orthanc_env["ORTHANC__REGISTERED_USERS"]) == {app["orthanc-username"]: app["orthanc-password"]}
    assert orthanc_env["ORTHANC__DICOM_WEB__ENABLE"] == "true"  # envFrom the ConfigMap


@pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts and fsGroup ownership need root, as the rootful smoke")
def test_volumes_are_made_as_the_kubelet_makes_them(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    args = c.volume_args(pod("dicomlab-proxy"))
    mounts = args
    multiproc = tmp_path / "volumes" / "dicomlab-proxy-pod" / "prometheus-multiproc"
    assert f"type=bind,source={multiproc},destination=/var/run/prometheus-multiproc" in mounts
    assert os.path.ismount(multiproc) and stat.S_IMODE(multiproc.stat().st_mode) == 0o777  # tmpfs, pod-level
    data = tmp_path / "volumes" / "dicomlab-proxy-pod" / "data"
    assert f"type=bind,source={data},destination=/var/lib/dicomlab" in mounts
    assert stat.S_IMODE(data.stat().st_mode) == 0o777
    pg_args = c.volume_args(pod("dicomlab-postgresql", "StatefulSet"))
    claim = tmp_path / "pvc" / "data-dicomlab-postgresql-pod"
    assert f"type=bind,source={claim},destination=/var/lib/postgresql/data" in pg_args
    assert claim.stat().st_gid == 999 and stat.S_IMODE(claim.stat().st_mode) == 0o2775
    init = tmp_path / "volumes" / "dicomlab-postgresql-pod" / "init"
    assert f"type=bind,source={init},destination=/docker-entrypoint-initdb.d,ro" in pg_args
    script = init / "10-labeling-db.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o555 and "CREATE DATABASE" in script.read_text()
    cleanup("test-net-unused", tmp_path, log=lambda _: None)
    assert not os.path.ismount(multiproc) and not tmp_path.exists()
