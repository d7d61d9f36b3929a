"""Local monitoring for ``dicomlab stack up --monitoring`` (Prometheus + Pushgateway on loopback).

Debian's ``prometheus`` scrapes the local services (``/metrics`` on each one's metrics port) and Orthanc
(``/tools/metrics-prometheus``, with the stack's credentials from a 0600 password file) and loads
the very rule file the Helm chart wraps into its PrometheusRule (``charts/dicomlab/rules/``), so an
alert behaves the same on a laptop and in the cluster. Targets carry the labels the chart's
ServiceMonitor sets by relabeling (``part_of="dicomlab"``, ``component=<name>``). Debian's
``prometheus-pushgateway`` receives the training metrics. Everything lives in ``<run dir>/monitoring``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from dicomlab_cli.processes import (
    LOOPBACK,
    StackError,
    _log_tail,
    _spawn,
    free_port,
    port_in_use,
    stop_pid,
)

logger = logging.getLogger(__name__)

PROMETHEUS_BINARY = Path(os.environ.get("DICOMLAB_PROMETHEUS_BINARY", "/usr/bin/prometheus"))
PUSHGATEWAY_BINARY = Path(os.environ.get("DICOMLAB_PUSHGATEWAY_BINARY", "/usr/bin/prometheus-pushgateway"))
PROMTOOL_BINARY = Path(os.environ.get("DICOMLAB_PROMTOOL_BINARY", "/usr/bin/promtool"))
RULES_FILE = Path(__file__).resolve().parents[2] / "charts" / "dicomlab" / "rules" / "dicomlab.rules.yaml"
"""The chart's rule file (one source of truth for alerts)."""

SCRAPED_SERVICES = ("proxy", "manifest", "labeling")
"""Our services with a ``/metrics`` endpoint, by their stack names (= the chart's component names)."""

DEFAULT_PORTS = {"prometheus": 9090, "pushgateway": 9091}
SCRAPE_INTERVAL = "15s"
TRAINING_PUSH_JOB = "dicomlab_training"
"""The Pushgateway job name the training package pushes under (the rules and dashboard select on it)."""


def _port(name: str, ports: dict[str, int]) -> int:
    """The wanted port (stack state, ``DICOMLAB_PORT_<NAME>``, default); a free one if that is taken."""
    wanted = ports.get(name) or int(os.environ.get(f"DICOMLAB_PORT_{name.upper()}", str(DEFAULT_PORTS[name])))
    if port_in_use(wanted):
        chosen = free_port()
        logger.warning("port taken, using another", extra={"component": name, "wanted": wanted, "port": chosen})
        return chosen
    return wanted


def prometheus_config(ports: dict[str, int], *, pushgateway_port: int, rules_file: Path = RULES_FILE,
                      orthanc_username: str | None = None, orthanc_password_file: Path | None = None
                      ) -> dict[str, Any]:
    """The Prometheus configuration for the local stack (a pure function, so tests can inspect it)."""
    def labels(component: str) -> dict[str, str]:
        return {"part_of": "dicomlab", "component": component}

    jobs: list[dict[str, Any]] = []
    for name in SCRAPED_SERVICES:
        port = ports.get(f"{name}_metrics")  # /metrics is served on its own port, not the public one
        if port:
            jobs.append({"job_name": f"dicomlab-{name}", "metrics_path": "/metrics",
                         "static_configs": [{"targets": [f"{LOOPBACK}:{port}"], "labels": labels(name)}]})
    if "orthanc" in ports:
        orthanc: dict[str, Any] = {
            "job_name": "dicomlab-orthanc", "metrics_path": "/tools/metrics-prometheus",
            "static_configs": [{"targets": [f"{LOOPBACK}:{ports['orthanc']}"], "labels": labels("orthanc")}],
        }
        if orthanc_username is not None and orthanc_password_file is not None:
            orthanc["basic_auth"] = {"username": orthanc_username, "password_file": str(orthanc_password_file)}
        jobs.append(orthanc)
    jobs.append({"job_name": "pushgateway", "honor_labels": True,
                 "static_configs": [{"targets": [f"{LOOPBACK}:{pushgateway_port}"]}]})
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "external_labels": {"stack": "local"}},
        "rule_files": [str(rules_file)],
        "scrape_configs": jobs,
    }


def _require(binary: Path, package: str) -> None:
    if not binary.exists():
        raise StackError(f"{binary} is missing: apt-get install {package} (or `make deps`) for local monitoring")


def _wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited at start-up (code {proc.returncode}):\n{_log_tail(log_path)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_pid(proc.pid)
    raise StackError(f"{name} did not become ready on {url} within {timeout:g} s:\n{_log_tail(log_path)}")


def _orthanc_credentials(directory: Path) -> tuple[str, str] | None:
    """Orthanc's credentials from the stack's ``credentials.json`` (written by ``stack up`` before us)."""
    path = directory / "credentials.json"
    if not path.exists():
        return None
    creds = json.loads(path.read_text())
    return str(creds["orthanc_username"]), str(creds["orthanc_password"])


def start(directory: Path, ports: dict[str, int], *, timeout: float = 60.0) -> dict[str, tuple[int, int]]:
    """Start Prometheus and a Pushgateway; returns ``{name: (pid, port)}``."""
    _require(PROMETHEUS_BINARY, "prometheus")
    _require(PUSHGATEWAY_BINARY, "prometheus-pushgateway")
    if not RULES_FILE.exists():
        raise StackError(f"the alert rules ({RULES_FILE}) are missing: local monitoring runs from a source checkout")
    home = directory / "monitoring"
    home.mkdir(parents=True, exist_ok=True)
    started: dict[str, tuple[int, int]] = {}
    try:
        push_port = _port("pushgateway", ports)
        push_log = home / "pushgateway.log"
        push = _spawn([str(PUSHGATEWAY_BINARY), f"--web.listen-address={LOOPBACK}:{push_port}",
                       f"--persistence.file={home / 'pushgateway.data'}"], push_log)
        started["pushgateway"] = (push.pid, push_port)
        _wait_ready("the Pushgateway", push, f"http://{LOOPBACK}:{push_port}/-/ready", push_log, timeout)

        password_file: Path | None = None
        username: str | None = None
        creds = _orthanc_credentials(directory)
        if creds is not None:
            username = creds[0]
            password_file = home / "orthanc-password"
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(creds[1])
        config = prometheus_config(ports, pushgateway_port=push_port, orthanc_username=username,
                                   orthanc_password_file=password_file)
        config_path = home / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if PROMTOOL_BINARY.exists():
            check = subprocess.run([str(PROMTOOL_BINARY), "check", "config", str(config_path)],
                                   capture_output=True, text=True, check=False)
            if check.returncode != 0:
                raise StackError(f"the generated Prometheus configuration is invalid:\n{check.stdout}{check.stderr}")

        prom_port = _port("prometheus", ports)
        prom_log = home / "prometheus.log"
        data = home / "prometheus-data"
        if data.exists():
            shutil.rmtree(data)  # a throw-away local TSDB: a stale lock from a killed run would block start-up
        prom = _spawn([str(PROMETHEUS_BINARY), f"--config.file={config_path}", f"--storage.tsdb.path={data}",
                       f"--web.listen-address={LOOPBACK}:{prom_port}", "--storage.tsdb.retention.time=7d",
                       "--web.enable-lifecycle"], prom_log)
        started["prometheus"] = (prom.pid, prom_port)
        _wait_ready("Prometheus", prom, f"http://{LOOPBACK}:{prom_port}/-/ready", prom_log, timeout)
    except BaseException:
        for pid, _port_number in started.values():
            stop_pid(pid)
        raise
    logger.info("monitoring started", extra={"prometheus": started["prometheus"][1],
                                             "pushgateway": started["pushgateway"][1]})
    return started
