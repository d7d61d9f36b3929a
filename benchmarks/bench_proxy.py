"""Benchmark: Orthanc directly vs the dicomlab proxy (gunicorn) vs the reference sample's NGINX.

Run: ``.venv/bin/python benchmarks/bench_proxy.py [--seconds 6] [--clients 4]``. Starts its own Orthanc,
the proxy under gunicorn (gthread) and two Debian nginx on free loopback ports — the reference sample's
configuration (default proxy buffering) and one tuned for streaming (buffering off, 1 MiB buffers,
upstream keep-alive), which shows what one more hop costs on this machine with no Python in it. It
uploads an ~8 MB DICOM and a small study, then for each target measures throughput with a pool of
client threads (urllib3, keep-alive) for an 8 MB ``/instances/{id}/file``, the same object via
WADO-RS, and a small QIDO JSON, plus single-client median latency of the QIDO request, and finally the
same QIDO load on gunicorn with an empty app and with a trivial Flask app (``wsgi_floor.py``), which
says how much of the proxy's cost per request is the framework. Results, with
the machine's details, go to ``benchmarks/results/proxy.json`` with ``--write``. The load generator shares the CPU
with the servers, so the figures are lower bounds for all of them and the ratios are what to read —
with the CPU each process spent per request (from ``/proc``), which says why: on a machine where
every process competes for the same cores, throughput follows the sum of those costs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "proxy"))

from proxy_helpers import make_dicom, upload

from dicomlab_cli.processes import GunicornService, OrthancServer, free_port, stop_pid
from dicomlab_core.tokens import KeyRing, Scope, signer_from_entries

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "proxy.json"


def start_nginx(tmp: Path, orthanc: OrthancServer, template: str) -> tuple[subprocess.Popen[bytes], str]:
    tmp.mkdir()
    port = free_port()
    basic = base64.b64encode(f"{orthanc.username}:{orthanc.password.reveal()}".encode()).decode()
    conf = Template((HERE / template).read_text()).substitute(
        tmp=str(tmp), port=port, basic=basic, orthanc=orthanc.url, orthanc_host=urlsplit(orthanc.url).netloc)
    (tmp / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["/usr/sbin/nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/system", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"nginx did not start: {(tmp / 'error.log').read_text()}")


def _pool(url: str) -> urllib3.HTTPConnectionPool:
    return urllib3.connection_from_url(url, maxsize=1, block=True)  # type: ignore[return-value]


def _path(url: str) -> str:
    """The origin-form target: Orthanc drops connections that send an absolute-form request line."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def _headers(headers: dict[str, str], auth: tuple[str, str] | None) -> dict[str, str]:
    if auth is None:
        return dict(headers)
    return {**headers, **urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}")}


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its direct children (gunicorn/nginx workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def load(url: str, headers: dict[str, str], auth: tuple[str, str] | None, clients: int, seconds: float,
         expect: int, servers: dict[str, int] | None = None) -> dict[str, Any]:
    """Requests, bytes and CPU seconds of ``clients`` keep-alive connections busy for ``seconds`` (one slice).

    The client is urllib3 reading each body in one call: ``requests``' default 10 KiB
    ``iter_content`` would make the load generator, not the servers, the bottleneck. ``servers``
    (name -> pid) adds the CPU each server spent, and the load generator's own.
    """
    counts = [0] * clients
    sizes = [0] * clients
    errors = [0] * clients
    sent = _headers(headers, auth)
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        pool = _pool(url)
        path = _path(url)
        while time.perf_counter() < deadline:
            response = pool.request("GET", path, headers=sent, retries=urllib3.Retry(1, redirect=0))
            if response.status != 200 or (expect and len(response.data) != expect):
                errors[index] += 1
                continue
            counts[index] += 1
            sizes[index] += len(response.data)
        pool.close()

    servers = servers or {}
    cpu_before = {name: tree_cpu_seconds(pid) for name, pid in servers.items()}
    own_before = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu = {name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in servers.items()}
    cpu["load_generator"] = time.process_time() - own_before
    return {"requests": sum(counts), "bytes": sum(sizes), "errors": sum(errors), "seconds": elapsed, "cpu": cpu}


def rates(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput and CPU milliseconds per request over all of a target's slices."""
    requests = sum(s["requests"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)
    done = max(requests, 1)
    cpu = {name: round(sum(s["cpu"][name] for s in slices) * 1000 / done, 3) for name in slices[0]["cpu"]}
    return {"requests_per_s": round(requests / seconds, 1),
            "mb_per_s": round(sum(s["bytes"] for s in slices) / seconds / 1e6, 1),
            "requests": requests, "errors": sum(s["errors"] for s in slices), "cpu_ms_per_request": cpu}


def latency(targets: dict[str, tuple[str, dict[str, str], tuple[str, str] | None]], path: str,
            n: int) -> dict[str, dict[str, float]]:
    """Single-client latency of ``path`` per target, the targets interleaved so drift hits all alike."""
    pools = {name: (_pool(base), path, _headers(headers, auth))
             for name, (base, headers, auth) in targets.items()}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for i in range(n + 20):
        for name, (pool, url, headers) in pools.items():
            started = time.perf_counter()
            response = pool.request("GET", url, headers=headers)
            elapsed = time.perf_counter() - started
            assert response.status == 200
            if i >= 20:
                samples[name].append(elapsed)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {"median_ms": round(statistics.median(values) * 1000, 3),
                     "p90_ms": round(values[int(0.9 * len(values))] * 1000, 3)}
    return out


def floors(tmp: Path, path: str, args: argparse.Namespace) -> dict[str, Any]:
    """CPU per request and round trip of gunicorn (same settings as the proxy) with an empty app and a
    trivial Flask app (``wsgi_floor.py``): the part of the proxy's cost that is the framework, not the work."""
    found: dict[str, Any] = {}
    for name, spec in (("gunicorn_empty_app", "wsgi_floor:raw"), ("gunicorn_trivial_flask", "wsgi_floor:flask_app")):
        service = GunicornService(name, spec, tmp, workers=args.workers, threads=args.threads,
                                  env={"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
                                  ).start()
        try:
            figures = rates([load(service.url + path, {}, None, args.clients, args.seconds / 2, 0, {name: service.pid})])
            figures["latency"] = latency({name: (service.url, {}, None)}, path, args.latency_samples)[name]
            found[name] = figures
        finally:
            service.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per target and scenario")
    parser.add_argument("--rounds", type=int, default=3, help="slices the seconds are split into, targets alternating")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--chunk-bytes", type=int, default=1024 * 1024, help="the proxy's upstream read size")
    parser.add_argument("--scenarios", default="large_file,large_wado_rs,large_file_one_client,small_qido,floors")
    parser.add_argument("--write", action="store_true", help="write results/proxy.json (without it: print only)")
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmpdir:
        tmp = Path(tmpdir)
        orthanc = OrthancServer(tmp / "orthanc").start()
        nginx = tuned = proxy = None
        try:
            client = orthanc.client()
            big = upload(client, make_dicom("CT_small.dcm", big_bytes=8 * 1024 * 1024))
            small = upload(client, make_dicom("MR_small.dcm"))
            client.close()
            key = KeyRing.generate_entry("b1")
            proxy = GunicornService("proxy", "dicomlab_proxy.app:create_app()", tmp, workers=args.workers,
                                    threads=args.threads, env={
                                        "DICOMLAB_PROXY__ORTHANC__URL": orthanc.url,
                                        "DICOMLAB_PROXY__ORTHANC__USERNAME": orthanc.username,
                                        "DICOMLAB_PROXY__ORTHANC__PASSWORD": orthanc.password.reveal(),
                                        "DICOMLAB_PROXY__ORTHANC__POOL_SIZE": str(args.threads),
                                        "DICOMLAB_PROXY__TOKEN_KEYS": key,
                                        "DICOMLAB_PROXY__RATE_LIMIT_PER_SECOND": "0",
                                        "DICOMLAB_PROXY__CHUNK_BYTES": str(args.chunk_bytes),
                                        "DICOMLAB_PROXY__LOG_LEVEL": "WARNING"}).start()
            nginx, nginx_url = start_nginx(tmp / "nginx", orthanc, "nginx_reference.conf.template")
            tuned, tuned_url = start_nginx(tmp / "nginx_tuned", orthanc, "nginx_tuned.conf.template")
            token = signer_from_entries([key]).issue(
                Scope(studies=(big.study, small.study), orthanc_ids=(big.orthanc_id,)), subject="bench",
                ttl_seconds=3600)
            targets: dict[str, tuple[str, dict[str, str], tuple[str, str] | None]] = {
                "direct": (orthanc.url, {}, (orthanc.username, orthanc.password.reveal())),
                "proxy": (proxy.url, {"Authorization": f"Bearer {token}"}, None),
                "nginx": (nginx_url, {}, None),
                "nginx_tuned": (tuned_url, {}, None),
            }
            pids = {"proxy": proxy.pid, "nginx": nginx.pid, "nginx_tuned": tuned.pid}
            wado = f"/dicom-web/studies/{big.study}/series/{big.series}/instances/{big.sop}"
            wado_len = len(requests.get(orthanc.url + wado, auth=targets["direct"][2]).content)
            qido = f"/dicom-web/studies?StudyInstanceUID={small.study}"
            file_path = f"/instances/{big.orthanc_id}/file"
            scenarios = {"large_file": (file_path, len(big.data), args.clients),
                         "large_wado_rs": (wado, wado_len, args.clients),
                         "large_file_one_client": (file_path, len(big.data), 1),
                         "small_qido": (qido, 0, args.clients)}
            results: dict[str, Any] = {}
            for scenario, (path, size, clients) in scenarios.items():
                if scenario not in args.scenarios.split(","):
                    continue
                # The targets take turns in short slices, so that drift (Orthanc's own cost varies from
                # one minute to the next, and so does other work on the machine) hits all of them alike.
                slices: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, (base, headers, auth) in targets.items():
                        servers = {"orthanc": orthanc.pid, **({name: pids[name]} if name in pids else {})}
                        slices[name].append(load(base + path, headers, auth, clients, args.seconds / args.rounds,
                                                 size, servers))
                results[scenario] = {name: rates(found) for name, found in slices.items()}
                for name, figures in results[scenario].items():
                    print(scenario, name, figures, flush=True)
            lat = latency(targets, qido, args.latency_samples) if "small_qido" in results else {}
            print("latency", lat, flush=True)
            if "floors" in args.scenarios.split(","):
                results["floors"] = floors(tmp, qido, args)
                print("floors", results["floors"], flush=True)
        finally:
            if proxy is not None:
                proxy.stop()
            for server in (nginx, tuned):
                if server is not None:
                    stop_pid(server.pid)
            orthanc.stop()

    if not args.write:
        return

    def ratio(scenario: str, a: str, b: str, key: str = "mb_per_s") -> float:
        return round(float(results[scenario][a][key]) / max(float(results[scenario][b][key]), 1e-9), 3)

    summary = {
        "large_file_proxy_vs_direct": ratio("large_file", "proxy", "direct"),
        "large_file_proxy_vs_nginx": ratio("large_file", "proxy", "nginx"),
        "large_wado_rs_proxy_vs_direct": ratio("large_wado_rs", "proxy", "direct"),
        "large_wado_rs_proxy_vs_nginx": ratio("large_wado_rs", "proxy", "nginx"),
        "large_file_one_client_proxy_vs_direct": ratio("large_file_one_client", "proxy", "direct"),
        "large_file_one_client_proxy_vs_nginx": ratio("large_file_one_client", "proxy", "nginx"),
        "small_qido_proxy_vs_direct": ratio("small_qido", "proxy", "direct", "requests_per_s"),
        "small_qido_proxy_vs_nginx": ratio("small_qido", "proxy", "nginx", "requests_per_s"),
        # The floor of one more hop on this machine: a C proxy tuned for streaming, against direct Orthanc.
        "large_file_nginx_tuned_vs_direct": ratio("large_file", "nginx_tuned", "direct"),
        "large_file_one_client_nginx_tuned_vs_direct": ratio("large_file_one_client", "nginx_tuned", "direct"),
        "large_wado_rs_nginx_tuned_vs_direct": ratio("large_wado_rs", "nginx_tuned", "direct"),
        "large_wado_rs_direct_vs_nginx": ratio("large_wado_rs", "direct", "nginx"),
        "large_file_proxy_vs_nginx_tuned": ratio("large_file", "proxy", "nginx_tuned"),
        "added_median_latency_ms": round(lat["proxy"]["median_ms"] - lat["direct"]["median_ms"], 3),
        "nginx_tuned_added_median_latency_ms": round(lat["nginx_tuned"]["median_ms"] - lat["direct"]["median_ms"], 3),
        "proxy_cpu_ms_per_large_file": results["large_file"]["proxy"]["cpu_ms_per_request"]["proxy"],
        "orthanc_cpu_ms_per_large_file": results["large_file"]["direct"]["cpu_ms_per_request"]["orthanc"],
        "nginx_cpu_ms_per_large_file": results["large_file"]["nginx"]["cpu_ms_per_request"]["nginx"],
        "proxy_cpu_ms_per_small_qido": results["small_qido"]["proxy"]["cpu_ms_per_request"]["proxy"],
    }
    if "floors" in results:
        empty, flask = results["floors"]["gunicorn_empty_app"], results["floors"]["gunicorn_trivial_flask"]
        summary["gunicorn_empty_app_cpu_ms_per_request"] = empty["cpu_ms_per_request"]["gunicorn_empty_app"]
        summary["flask_added_cpu_ms_per_request"] = round(
            flask["cpu_ms_per_request"]["gunicorn_trivial_flask"] - summary["gunicorn_empty_app_cpu_ms_per_request"], 3)
        summary["gunicorn_empty_app_round_trip_median_ms"] = empty["latency"]["median_ms"]
    targets_met = {
        "large >= 0.8x direct": min(summary["large_file_proxy_vs_direct"], summary["large_wado_rs_proxy_vs_direct"]) >= 0.8,
        "large >= 1.5x nginx": min(summary["large_file_proxy_vs_nginx"], summary["large_wado_rs_proxy_vs_nginx"]) >= 1.5,
        "small >= 0.5x direct": summary["small_qido_proxy_vs_direct"] >= 0.5,
        "added median latency <= 2 ms": summary["added_median_latency_ms"] <= 2.0,
    }
    machine: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "cpu_model": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                                  if line.startswith("model name")), "unknown"),
               "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
               "note": "load generator, Orthanc, proxy and nginx share these CPUs with other work; figures are noisy"}
    output = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
              "parameters": vars(args), "results": results, "latency": lat, "summary": summary,
              "targets_met": targets_met}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps({"summary": summary, "targets_met": targets_met}, indent=2))


if __name__ == "__main__":
    main()
