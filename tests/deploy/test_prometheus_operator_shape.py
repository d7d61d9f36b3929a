"""A real Prometheus (Debian's) scrapes a running proxy the way the Prometheus Operator would.

The scrape job is built from the chart's rendered ServiceMonitor: its endpoint (the `metrics` port,
``/metrics``) and its relabelings (``part_of``, ``component``), plus the target labels the Operator
itself sets from Kubernetes service discovery (job = the Service's name, namespace, service, pod,
container, endpoint; instance from the address), given here as static target labels with
``honor_labels: false`` as the Operator uses. The proxy runs under gunicorn in front of an Orthanc
address nobody listens on, so its requests fail with 502 and count as upstream errors. The rule file
the chart ships is loaded as is. Then:

- no scraped series carries an ``exported_*`` label (no label of ours collides with the Operator's);
- the series carry both the Operator's labels and ``dicomlab_service``;
- the recording rule returns data per namespace, and DicomlabHigh5xxRatio is pending for the proxy,
  with the Operator-shaped labels, which it never was with the old ``service`` label.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from deploy_chart import render_scenario

from dicomlab_cli import monitoring
from dicomlab_cli.processes import GunicornService, _spawn, free_port, stop_pid
from dicomlab_cli.stack import LocalContext, load_credentials
from dicomlab_cli.wiring import stack_env

NAMESPACE = "dicomlab"
POD = "dicomlab-proxy-6d8f9c7b5-x2x9q"


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def operator_scrape_config(metrics_port: int) -> dict[str, Any]:
    """The scrape job the Operator would generate from the chart's ServiceMonitor, for one proxy pod."""
    monitor = render_scenario("defaults").get("ServiceMonitor", "dicomlab-services")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    service = render_scenario("defaults").get("Service", "dicomlab-proxy")
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    discovered = {  # what kubernetes_sd + the Operator's own relabeling put on the target
        "job": service["metadata"]["name"], "namespace": NAMESPACE, "service": service["metadata"]["name"],
        "pod": POD, "container": "proxy", "endpoint": endpoint["port"],
        "__meta_kubernetes_service_label_app_kubernetes_io_component":
            service["metadata"]["labels"]["app.kubernetes.io/component"],
    }
    relabel = [{_snake(k): v for k, v in rule.items()} for rule in endpoint["relabelings"]]
    return {"job_name": f"serviceMonitor/{NAMESPACE}/{monitor['metadata']['name']}/0", "honor_labels": False,
            "metrics_path": endpoint["path"], "scrape_interval": "1s", "scrape_timeout": "1s",
            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"], "labels": discovered}],
            "relabel_configs": relabel}


@pytest.fixture(scope="module")
def scraped_proxy() -> Iterator[str]:
    if not monitoring.PROMETHEUS_BINARY.exists():
        pytest.skip("Debian's prometheus is not installed")
    home = Path(tempfile.mkdtemp(prefix="dicomlab-operator-shape-"))
    creds = load_credentials(home)
    dead_orthanc = free_port()  # nothing listens: every upstream request fails fast with 502
    ctx = LocalContext(run_dir=home, orthanc_url=f"http://127.0.0.1:{dead_orthanc}", orthanc_username="u",
                       orthanc_password="p", ports={"proxy": free_port(), "labeling": free_port()},
                       credentials=creds, store_url=f"file://{home}")
    proxy = GunicornService("proxy", "dicomlab_proxy.app:create_app()", home, port=ctx.ports["proxy"],
                            env=stack_env(ctx, "proxy"), workers=1, threads=4).start()
    prom_port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(monitoring.RULES_FILE)],
              "scrape_configs": [operator_scrape_config(proxy.metrics_port)]}
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = _spawn([str(monitoring.PROMETHEUS_BINARY), f"--config.file={home / 'prometheus.yml'}",
                   f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                  home / "prometheus.log")
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        headers = {"Authorization": f"Bearer {creds['service_token']}"}
        # one request, then wait until Prometheus holds its series: increases are counted from there on
        assert requests.get(f"{proxy.url}/dicom-web/studies", headers=headers, timeout=30).status_code >= 500
        assert query(url, "dicomlab_proxy_upstream_errors_total", timeout=90), "Prometheus never scraped the proxy"
        for _ in range(12):  # spread over several scrapes, so rate() sees the counters grow
            for _ in range(8):
                assert requests.get(f"{proxy.url}/dicom-web/studies", headers=headers, timeout=30).status_code >= 500
            time.sleep(0.5)
        yield url
    finally:
        stop_pid(prom.pid)
        proxy.stop()
        shutil.rmtree(home, ignore_errors=True)


def query(url: str, expr: str, *, wait_for_data: bool = True, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        if result or not wait_for_data or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_no_series_arrives_with_an_exported_label(scraped_proxy: str) -> None:
    series = query(scraped_proxy, '{__name__=~"dicomlab_.+"}')
    assert series
    for item in series:
        labels = item["metric"]
        assert not [k for k in labels if k.startswith("exported_")], labels
        assert labels["namespace"] == NAMESPACE and labels["pod"] == POD and labels["job"] == "dicomlab-proxy"
        assert labels["part_of"] == "dicomlab" and labels["component"] == "proxy"
    requests_total = [s["metric"] for s in series if s["metric"]["__name__"] == "dicomlab_http_requests_total"]
    assert requests_total and {m["dicomlab_service"] for m in requests_total} == {"proxy"}
    assert {m["service"] for m in requests_total} == {"dicomlab-proxy"}, "the Operator's service label is intact"


def test_rules_return_data_on_operator_shaped_series(scraped_proxy: str) -> None:
    assert query(scraped_proxy, 'up{part_of="dicomlab", component="proxy"} == 1')
    (p99,) = query(scraped_proxy, "dicomlab:proxy_request_duration_seconds:p99_5m")
    assert p99["metric"] == {"__name__": "dicomlab:proxy_request_duration_seconds:p99_5m", "namespace": NAMESPACE}
    errors = query(scraped_proxy, 'sum by (namespace) (rate(dicomlab_proxy_upstream_errors_total[5m])) > 0')
    assert [e["metric"] for e in errors] == [{"namespace": NAMESPACE}]
    deadline = time.monotonic() + 60
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pending:
        alerts = requests.get(f"{scraped_proxy}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        pending = [a for a in alerts if a["labels"]["alertname"] == "DicomlabHigh5xxRatio"]
        time.sleep(0.5)
    assert pending, "the 5xx alert must match the proxy's series as the Operator labels them"
    assert pending[0]["labels"]["dicomlab_service"] == "proxy" and pending[0]["labels"]["namespace"] == NAMESPACE
    assert pending[0]["state"] == "pending"  # `for: 10m` has not elapsed
