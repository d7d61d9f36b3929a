"""The dicomlab loop driven through the smoke's containers (the client side of make deploy-smoke).

Every call goes to a Service address (the forwarder kube-proxy would be) or, for /metrics, to the pod
address Prometheus would scrape; credentials come from the Secrets the chart rendered, never from the
command line or logs.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests

from deploy_smoke.kubelet import Cluster, SmokeError
from dicomlab_cli.labeling_api import LabelingSession

PATIENTS = 6
SIZE = 128
SEED = 11
READERS = (("reader-a", 0.95), ("reader-b", 0.85))


def _app_secret(cluster: Cluster) -> dict[str, str]:
    for obj in cluster.objects:
        if obj["kind"] == "Secret" and "service-token" in (obj.get("data") or {}):
            return cluster.secret_data(obj["metadata"]["name"])
    raise SmokeError("no rendered Secret holds the app credentials (service-token)")


def _service(cluster: Cluster, component: str) -> tuple[str, int]:
    for svc in cluster.services():
        labels = svc["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") == component and svc["spec"].get("clusterIP") != "None":
            port = int(svc["spec"]["ports"][0]["port"])
            return svc["metadata"]["name"], port
    raise SmokeError(f"no Service for {component}")


def url(cluster: Cluster, component: str) -> str:
    name, port = _service(cluster, component)
    return f"http://{cluster.service_address(name, port)}"


def run(cluster: Cluster, *, s3_endpoint: str, bucket: str, log: Callable[[str], None]) -> dict[str, Any]:
    from dicomlab_core.config import Secret
    from dicomlab_core.orthanc import OrthancClient, OrthancSettings
    from dicomlab_core.synth import SynthConfig, upload_study_set
    from dicomlab_labeling.workflow.simulate import simulate_readers

    creds = _app_secret(cluster)
    results: dict[str, Any] = {}

    log(f"loop 1/6: {PATIENTS} synthetic patients into Orthanc (REST through its Service)")
    orthanc = OrthancClient(OrthancSettings(url=url(cluster, "orthanc"), username=creds["orthanc-username"],
                                            password=Secret(creds["orthanc-password"])))
    truth = upload_study_set(SynthConfig(patients=PATIENTS, seed=SEED, rows=SIZE, columns=SIZE), orthanc, workers=2)
    results["images"] = len(truth)
    log(f"  uploaded {len(truth)} images")

    log("loop 2/6: a manifest through the manifest service")
    response = requests.post(f"{url(cluster, 'manifest')}/manifests?sync=true", timeout=600,
                             headers={"Authorization": f"Bearer {creds['service-token']}"},
                             json={"name": "smoke", "modalities": ["DX", "CR"], "seed": SEED})
    if response.status_code != 201:
        raise SmokeError(f"manifest service answered {response.status_code}: {response.text[:300]}")
    job_result = response.json()
    manifest = job_result.get("result") or job_result
    manifest_uri = next((manifest[k] for k in ("manifest", "manifestUri", "uri") if isinstance(manifest.get(k), str)),
                        None)
    if not manifest_uri or not manifest_uri.startswith(f"s3://{bucket}/"):
        raise SmokeError(f"the manifest service did not write to the bucket: {manifest}")
    results["manifest"] = manifest_uri
    log(f"  {manifest_uri}")

    log("loop 3/6: a labeling job, labelled through the API by simulated readers")
    base = url(cluster, "labeling")
    admin = LabelingSession(base, "admin", creds["admin-password"], timeout=300)
    readers = []
    for username, accuracy in READERS:
        password = secrets.token_urlsafe(18)
        admin.call("POST", "/api/admin/users", json={"username": username, "password": password, "role": "annotator"})
        readers.append((username, password, accuracy))
    job = admin.call("POST", "/api/admin/jobs", json={
        "name": "smoke", "manifestUri": manifest_uri, "readersPerImage": len(readers),
        "instructions": "smoke", "strategy": "fewest-answers-first"})
    findings = {r["sop_uid"]: r["findings"] for r in truth}
    outcomes = simulate_readers(base, job["id"], readers, findings, seed=SEED)
    for outcome in outcomes:
        if outcome.errors or not outcome.submitted:
            raise SmokeError(f"{outcome.username}: {outcome.submitted} submitted, errors {outcome.errors[:3]}")
    results["answers"] = {o.username: o.submitted for o in outcomes}
    log(f"  answers: {results['answers']}")

    log("loop 4/6: an image through the proxy with a viewer token")
    results["proxy"] = fetch_through_proxy(cluster, admin, base, manifest_uri)

    log("loop 5/6: export (output manifest, CSV, DICOM SR back into Orthanc)")
    export = admin.call("POST", f"/api/admin/jobs/{job['id']}/export", json={"sr": True})
    if not str(export.get("manifestUri", "")).startswith(f"s3://{bucket}/"):
        raise SmokeError(f"export did not write to the bucket: {export}")
    results["manifestUri"] = export["manifestUri"]
    results["sr"] = export.get("sr")
    log(f"  {export['manifestUri']} (SR: {str(export.get('sr'))[:120]})")

    log("loop 6/6: every /metrics endpoint")
    results["metrics"] = scrape_metrics(cluster, creds)
    return results


def fetch_through_proxy(cluster: Cluster, admin: LabelingSession, base: str, manifest_uri: str) -> dict[str, Any]:
    """A one-reader job: the reader's assignment names a WADO-RS URL on the proxy and a de-identified token for it."""
    password = secrets.token_urlsafe(18)
    admin.call("POST", "/api/admin/users", json={"username": "viewer", "password": password, "role": "annotator"})
    job = admin.call("POST", "/api/admin/jobs", json={"name": "smoke-viewer", "manifestUri": manifest_uri,
                                                     "readersPerImage": 1, "strategy": "random"})
    reader = LabelingSession(base, "viewer", password, timeout=300)
    assignment = reader.call("POST", f"/api/jobs/{job['id']}/next", json={"lookahead": 0})["assignment"]
    token = reader.call("POST", f"/api/assignments/{assignment['id']}/token")["token"]
    # The job hides patient identifiers (the default): the viewer reads metadata and frames, and the whole
    # instance, which carries the header, is refused to the same token.
    instance = f"{url(cluster, 'proxy')}{urlparse(assignment['image']['wadoRsUrl']).path}"
    auth = {"Authorization": f"Bearer {token}"}
    refused = requests.get(f"{instance}/metadata", timeout=30)
    metadata = requests.get(f"{instance}/metadata", timeout=30, headers={**auth, "Accept": "application/dicom+json"})
    frame = requests.get(f"{instance}/frames/1", timeout=60,
                         headers={**auth, "Accept": 'multipart/related; type="application/octet-stream"'})
    whole = requests.get(instance, timeout=60, headers={**auth, "Accept": "multipart/related; type=application/dicom"})
    if (refused.status_code != 401 or metadata.status_code != 200 or frame.status_code != 200
            or len(frame.content) < 1000 or whole.status_code != 403 or '"00100010"' in metadata.text):
        raise SmokeError(f"proxy: without token {refused.status_code}, metadata {metadata.status_code}, frame "
                         f"{frame.status_code} ({len(frame.content)} bytes), whole instance {whole.status_code}")
    log_line = {"withoutToken": refused.status_code, "metadata": metadata.status_code, "frame": frame.status_code,
                "frameBytes": len(frame.content), "wholeInstance": whole.status_code}
    return log_line


def scrape_metrics(cluster: Cluster, creds: dict[str, str]) -> dict[str, int]:
    """GET each service pod's /metrics (the port a ServiceMonitor names) and Orthanc's Prometheus endpoint."""
    counts: dict[str, int] = {}
    for pod in cluster.pods.values():
        component = pod.labels.get("app.kubernetes.io/component", "")
        if pod.kind != "Deployment":
            continue
        if component == "orthanc":
            target = f"http://{pod.ip}:{pod.port('http')}/tools/metrics-prometheus"
            response = requests.get(target, auth=(creds["orthanc-username"], creds["orthanc-password"]), timeout=30)
            prefix = "orthanc_"
        else:
            names = {p.get("name") for p in pod.container.get("ports", [])}
            port = pod.port("metrics" if "metrics" in names else "http")
            response = requests.get(f"http://{pod.ip}:{port}/metrics", timeout=30)
            prefix = "dicomlab_"
        samples = [line for line in response.text.splitlines() if line.startswith(prefix)]
        if response.status_code != 200 or not samples:
            raise SmokeError(f"{pod.name} metrics: {response.status_code}, {len(samples)} {prefix}* samples")
        counts[pod.name] = len(samples)
    return counts


def train(cluster: Cluster, jobs: list[dict[str, Any]], *, s3_endpoint: str, bucket: str,
          log: Callable[[str], None]) -> dict[str, Any]:
    """The `dicomlab train submit` Job (CPU) on the exported manifest; its outputs must land in the bucket."""
    import boto3

    if len(jobs) != 1:
        raise SmokeError(f"expected one training Job, rendered {len(jobs)}")
    log("training: the `train submit` Job in the training image (CPU, 1 epoch)")
    started = time.monotonic()
    pod = cluster.start(jobs[0])
    deadline = float(jobs[0]["spec"].get("activeDeadlineSeconds", 1800))
    code = cluster.wait_completed(pod, deadline)
    logs = cluster.logs(pod, tail=25)
    if code != 0:
        raise SmokeError(f"training Job exited {code}:\n{logs}")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="eu-west-1", aws_access_key_id="smoke",
                      aws_secret_access_key="smoke-secret")  # noqa: S106 - moto's fake credentials
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dicomlab/runs/").get("Contents", [])]
    if not any(k.endswith(".pt") or k.endswith(".onnx") for k in keys):
        raise SmokeError(f"training finished but wrote no model to the bucket: {keys[:20]}\n{logs}")
    log(f"  trained in {time.monotonic() - started:.0f} s; {len(keys)} objects under runs/")
    return {"seconds": round(time.monotonic() - started), "objects": len(keys),
            "models": [k for k in keys if k.endswith((".pt", ".onnx"))][:5]}
