"""make deploy-smoke: render the chart with Helm and run its workloads under podman like a kubelet, then drive
the dicomlab loop through the containers.

    PYTHONPATH=scripts .venv/bin/python -m deploy_smoke [--keep] [--skip-training] [--values extra.yaml]

Steps (each one must pass; the first failure stops the run, prints the pod's logs and cleans up):
 1. render ``charts/dicomlab`` (helm-python-sdk, as tests/deploy do) with SMOKE_VALUES: an evaluation install
    (in-chart PostgreSQL, Ingress with TLS, S3 object store) pointed at the local images;
 2. start every rendered StatefulSet and Deployment (kubelet.py), the Services' forwarders, and require
    startup, liveness and readiness probes to pass; then run the `helm test` pod;
 3. the loop (loop.py): synthetic images into Orthanc, a manifest from the manifest service, a labeling job
    labelled through the API by simulated readers, a proxy fetch with a viewer token, the export with SR,
    every /metrics endpoint scraped, and a short CPU training as the Job `dicomlab train submit` renders.
Containers, the network and host folders are removed at the end, on failure and on Ctrl-C (``--keep`` keeps
them for debugging; ``--cleanup`` only removes what an earlier run left).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from deploy_smoke import kubelet, loop
from deploy_smoke.kubelet import Cluster, SmokeError, podman
from dicomlab_cli.processes import StackError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "deploy"))

NETWORK = "dicomlab-smoke"
WORKDIR = Path(os.environ.get("DICOMLAB_SMOKE_DIR", "/var/tmp/dicomlab-smoke"))  # noqa: S108 - root-owned, removed
TAG = os.environ.get("DICOMLAB_IMAGE_TAG", "local")
S3_BUCKET = "dicomlab-smoke"
S3_HOST = "smoke-s3"  # no dots: moto would read "s3.<domain>" as a virtual-hosted bucket


def image(name: str) -> dict[str, str]:
    return {"repository": f"localhost/dicomlab-{name}", "tag": TAG, "pullPolicy": "Never"}


S3_ENV = {"DICOMLAB_S3_ENDPOINT_URL": f"http://{S3_HOST}:5000", "AWS_REGION": "eu-west-1"}

SMOKE_VALUES: dict[str, Any] = {
    # ci/ingress-values.yaml: the evaluation install (Ingress + TLS, in-chart PostgreSQL) ...
    "postgresql": {"mode": "internal", "internal": {"image": image("smoke-postgresql")}},
    "ingress": {"enabled": True, "className": "traefik", "tls": {"enabled": True, "secretName": "dicomlab-tls"}},
    "publicHosts": {"proxy": "dicomweb.example.org", "labeling": "labeling.example.org"},
    # ... with its images from this machine, one replica each (two cores), an S3-compatible object store.
    "orthanc": {"image": image("smoke-orthanc")},
    "objectStore": {"url": f"s3://{S3_BUCKET}/dicomlab", "region": "eu-west-1"},
    "services": {
        "proxy": {"image": image("proxy"), "autoscaling": {"enabled": False}, "replicaCount": 1},
        "manifest": {"image": image("manifest"), "env": S3_ENV},
        "labeling": {"image": image("labeling"), "replicaCount": 1, "env": S3_ENV},
    },
    "monitoring": {"pushgatewayUrl": ""},
}


def training_job(manifest_url: str) -> dict[str, Any]:
    """The Job `dicomlab train submit` renders for the exported manifest (the chart runs no training: it
    provides the ServiceAccount, Secret and NetworkPolicy that Job uses): CPU, one epoch, small images."""
    from dicomlab_training import launch

    training = image("training")
    spec = launch.spec_from({
        "name": "dicomlab-train-smoke", "image": f"{training['repository']}:{training['tag']}",
        "image_pull_policy": "Never", "gpus_per_node": 0, "cpu": "2", "memory": "4Gi", "shm_size": "256Mi",
        "tolerations": [], "active_deadline_seconds": 1200, "env": S3_ENV,
        "train_args": ["--manifest", manifest_url, "--out", f"s3://{S3_BUCKET}/dicomlab/runs/smoke",
                       "--epochs", "1", "--size", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu"],
    })
    (job,) = launch.build_training_job(spec)
    return job


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    from deploy_chart import render_values

    return render_values(values, "smoke").objects


def log(message: str) -> None:
    print(message, flush=True)


def aws_identity(pod: kubelet.Pod) -> dict[str, str]:
    """What EKS Pod Identity / IRSA would inject: credentials for the pods that use the object store."""
    if pod.labels.get("app.kubernetes.io/component") in ("manifest", "labeling", "training"):
        return {"AWS_ACCESS_KEY_ID": "smoke", "AWS_SECRET_ACCESS_KEY": "smoke-secret"}  # moto accepts any
    return {}


def start_s3(cluster: Cluster) -> str:
    """The bucket: moto's S3 server on the network (the test stand-in for AWS S3), bucket created."""
    podman("run", "-d", "--name", S3_HOST, "--network", NETWORK,
           "--label", f"{kubelet.LABEL}=1", "--pull", "never", "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", f"localhost/dicomlab-smoke-s3:{TAG}")
    out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", S3_HOST).stdout
    endpoint = f"http://{json.loads(out)[NETWORK]['IPAddress']}:5000"
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="smoke",
                      aws_secret_access_key="smoke-secret")  # noqa: S106 - moto's fake credentials
    for _ in range(60):
        try:
            s3.create_bucket(Bucket=S3_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            log(f"  s3 stand-in: bucket {S3_BUCKET} at {endpoint}")
            return endpoint
        except Exception:
            time.sleep(1)
    raise SmokeError("the S3 stand-in never answered")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--keep", action="store_true", help="leave the containers running (debugging)")
    parser.add_argument("--cleanup", action="store_true", help="only remove what an earlier run left")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--values", type=Path, help="extra values merged over the smoke's")
    args = parser.parse_args()

    kubelet.cleanup(NETWORK, WORKDIR, log)
    if args.cleanup:
        return 0
    # The driver stands where the Ingress hands requests on after terminating TLS: it speaks plain HTTP to
    # the Services, so the labeling session's Secure cookie must still be sent back (client-side only).
    http.cookiejar.DefaultCookiePolicy.return_ok_secure = lambda self, cookie, request: True  # type: ignore[method-assign]

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    values = SMOKE_VALUES if not args.values else merge(SMOKE_VALUES, yaml.safe_load(args.values.read_text()))
    ok = False
    try:
        WORKDIR.mkdir(parents=True, exist_ok=True)
        podman("network", "create", "--label", f"{kubelet.LABEL}=1", NETWORK)
        log("rendering the chart (helm-python-sdk)")
        objects = render(values)
        kinds: dict[str, int] = {}
        for obj in objects:
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        log(f"  {sum(kinds.values())} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        cluster = Cluster(objects, "dicomlab", NETWORK, WORKDIR, pod_env=aws_identity, log=log)
        s3_endpoint = start_s3(cluster)

        log("starting the workloads (as a kubelet would)")
        workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")]
        cluster.start_services("localhost/dicomlab-python:3.11-bookworm", REPO / "scripts/deploy_smoke/forwarder.py",
                               workloads)
        pods = [cluster.start(w) for w in workloads]
        for pod in sorted(pods, key=lambda p: p.kind != "StatefulSet"):
            cluster.wait_ready(pod)
        log(f"all {len(pods)} pods ready after {time.monotonic() - started:.0f} s")

        tests = [o for o in objects if o["kind"] == "Pod" and
                 o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        for test in tests:
            pod = cluster.start(test)
            code = cluster.wait_completed(pod, 120)
            log(f"  helm test {pod.name}: exit {code}\n{cluster.logs(pod)}")
            if code != 0:
                raise SmokeError(f"helm test pod {pod.name} failed")

        results = loop.run(cluster, s3_endpoint=s3_endpoint, bucket=S3_BUCKET, log=log)
        if not args.skip_training:
            results["training"] = loop.train(cluster, [training_job(results["manifestUri"])],
                                             s3_endpoint=s3_endpoint, bucket=S3_BUCKET, log=log)
        for pod in pods:
            state = cluster.state(pod)
            results.setdefault("restarts", {})[pod.name] = state.get("restarts", 0)
        results["seconds"] = round(time.monotonic() - started)
        log("deploy smoke passed:\n" + json.dumps(results, indent=2, default=str))
        ok = True
        return 0
    except (SmokeError, StackError, KeyboardInterrupt) as exc:
        log(f"deploy smoke FAILED: {exc}")
        return 1
    finally:
        if args.keep:
            log(f"--keep: containers left running (make deploy-smoke-clean removes them); ok={ok}")
        else:
            kubelet.cleanup(NETWORK, WORKDIR, log)


if __name__ == "__main__":
    sys.exit(main())
