"""Benchmark: do slow-header clients (slowloris) delay ``/healthz`` and ordinary requests?

Starts a real Orthanc and the proxy under gunicorn with the shared config
(``dicomlab_core.gunicorn_conf``: 2 workers x 16 threads), all on loopback, then for each worker class
(ours, ``dicomlab_core.gthread_worker.HeadFirstThreadWorker``, and gunicorn's stock ``gthread``) times
``/healthz`` and an authorised QIDO request through the proxy to Orthanc, on fresh connections,
first without load, then while ``--slow`` connections from 127.0.0.1 trickle their request heads one
byte a second (slowloris), then while as many trickle a small request body (a STOW-RS POST declaring
60,000 bytes; STOW is enabled so the app would read it). The goal (issue 14 §4): 500 slow connections
delay the others by at most 1 s.

    .venv/bin/python benchmarks/bench_slow_clients.py [--slow 500] [--seconds 15] [--write]

Prints the figures; ``--write`` also stores them in ``benchmarks/results/slow_clients.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core"))

from slow_clients import SlowClients, raise_fd_limit, timed_get

from dicomlab_cli.processes import GunicornService, OrthancServer
from dicomlab_core.tokens import KeyRing

RESULTS = Path(__file__).resolve().parent / "results" / "slow_clients.json"
OURS = "dicomlab_core.gthread_worker.HeadFirstThreadWorker"
STOCK = "gthread"
PROBE_TIMEOUT = 10.0
SERVICE_TOKEN = "bench-service-token-0123456789abcdef"


def summary(samples: list[float], failures: int) -> dict[str, Any]:
    ordered = sorted(samples)
    if not ordered:
        return {"answered": 0, "failed": failures}
    return {"answered": len(ordered), "failed": failures,
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def probe(service: GunicornService, seconds: float) -> dict[str, Any]:
    """Alternate ``/healthz`` and a QIDO request for ``seconds``; latency of each on a fresh connection."""
    results: dict[str, tuple[list[float], int]] = {"healthz": ([], 0), "qido": ([], 0)}
    deadline = time.monotonic() + seconds
    for _ in range(10_000):
        if time.monotonic() >= deadline:
            break
        for name, url, headers in (("healthz", f"{service.url}/healthz", {}),
                                   ("qido", f"{service.url}/dicom-web/studies?limit=1",
                                    {"Authorization": f"Bearer {SERVICE_TOKEN}"})):
            took, response = timed_get(url, PROBE_TIMEOUT, headers=headers)
            samples, failed = results[name]
            if response is not None and response.status_code in (200, 204):
                samples.append(took)
            else:
                results[name] = (samples, failed + 1)
        time.sleep(0.2)
    return {name: summary(samples, failed) for name, (samples, failed) in results.items()}


def body_opening() -> bytes:
    return (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n"
            "Content-Type: multipart/related\r\nContent-Length: 60000\r\n\r\n").encode()


def run(worker_class: str, orthanc: OrthancServer, directory: Path, slow: int, seconds: float) -> dict[str, Any]:
    env = {"DICOMLAB_PROXY__ORTHANC__URL": orthanc.url, "DICOMLAB_PROXY__ORTHANC__USERNAME": orthanc.username,
           "DICOMLAB_PROXY__ORTHANC__PASSWORD": orthanc.password.reveal(),
           "DICOMLAB_PROXY__TOKEN_KEYS": KeyRing.generate_entry("b1"),
           "DICOMLAB_PROXY__SERVICE_TOKENS": SERVICE_TOKEN,
           "DICOMLAB_PROXY__RATE_LIMIT_PER_SECOND": "1000", "DICOMLAB_PROXY__STOW_ENABLED": "true",
           "GUNICORN_CMD_ARGS": f"--worker-class {worker_class}"}
    directory.mkdir()
    service = GunicornService("proxy", "dicomlab_proxy.app:create_app()", directory, env=env).start()
    results: dict[str, Any] = {}
    try:
        results["idle"] = probe(service, min(5.0, seconds))
        for phase, opening in (("slow_heads", b""), ("slow_bodies", body_opening())):
            with SlowClients(service.port, slow, opening=opening) as clients:
                time.sleep(2.0)  # let the server take them all in
                loaded = probe(service, seconds)
                loaded["slow_connections_opened"] = clients.opened
                loaded["slow_connections_closed_by_server"] = clients.closed_by_server
            results[phase] = loaded
            time.sleep(1.0)
    finally:
        service.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=500, help="slow-header connections (default 500)")
    parser.add_argument("--seconds", type=float, default=15.0, help="probe time under load, per worker class")
    parser.add_argument("--only", choices=["ours", "stock"], help="measure one worker class only")
    parser.add_argument("--write", action="store_true", help=f"store the results in {RESULTS}")
    args = parser.parse_args()
    fd_limit = raise_fd_limit(2 * args.slow + 512)
    classes = {"ours": OURS, "stock": STOCK}
    if args.only:
        classes = {args.only: classes[args.only]}
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        orthanc = OrthancServer(Path(tmp) / "orthanc").start()
        try:
            figures = {name: run(cls, orthanc, Path(tmp) / name, args.slow, args.seconds)
                       for name, cls in classes.items()}
        finally:
            orthanc.stop()
    report = {"slow_connections": args.slow, "seconds_under_load": args.seconds, "probe_timeout_s": PROBE_TIMEOUT,
              "gunicorn": "2 workers x 16 threads (dicomlab_core.gunicorn_conf)", "worker_classes": classes,
              "results": figures, "fd_soft_limit": fd_limit,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
              "note": "load generator, Orthanc and gunicorn share the machine's CPUs; latencies include that"}
    print(json.dumps(report, indent=2))
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
