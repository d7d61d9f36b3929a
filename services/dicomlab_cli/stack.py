"""The local stack: ``dicomlab stack up | down | status``.

Everything lives in one run directory (``DICOMLAB_RUN_DIR``, else ``.run`` in the project root, found from
wherever the command runs):

- ``credentials.json`` (mode 0600): generated once and reused — Orthanc's password, the token
  signing key shared by the proxy and the labeling service, the patient-key secret, the demo logins;
- ``stack.json``: ports and process IDs (no secrets);
- ``orthanc/``, ``postgres/``, ``<service>.log``, ``store/`` (the ``file://`` object store).

The folders holding patient data (``orthanc/``, ``labeling/``, ``demo/``) are 0700, and the stack
starts its processes under umask 077, so Orthanc's storage and index and the labeling database are
created 0600/0700.

Each service starts with its environment from :func:`dicomlab_cli.wiring.stack_env` (the one place
that turns the stack into ``DICOMLAB_<SERVICE>__*``). ``up`` is idempotent: a healthy running stack is
left as it is.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from dicomlab_cli.dicom_policy import DicomModality, ModalityError, modalities_from_env
from dicomlab_cli.processes import (
    LOOPBACK,
    GunicornService,
    OrthancServer,
    PostgresServer,
    StackError,
    pid_alive,
    stop_pid,
)
from dicomlab_cli.wiring import LocalContext as LocalContext  # re-exported: the stack's context
from dicomlab_cli.wiring import stack_env
from dicomlab_core.config import Secret

logger = logging.getLogger(__name__)

SERVICE_NAMES = ("proxy", "manifest", "labeling")
"""Our Flask services, in start order (the proxy first: the labeling UI points browsers at it)."""

DEFAULT_PORTS = {"orthanc": 8042, "orthanc_dicom": 4242, "proxy": 8081, "manifest": 8082, "labeling": 8083,
                 "proxy_metrics": 9181, "manifest_metrics": 9182, "labeling_metrics": 9183,
                 "prometheus": 9090, "pushgateway": 9091}
"""Loopback ports of the local stack (override with ``DICOMLAB_PORT_<NAME>``); ``<service>_metrics`` is the
port that service serves ``/metrics`` on (its public port answers 404 there)."""


HEALTH_PATHS = {"orthanc": "/system", "prometheus": "/-/healthy", "pushgateway": "/-/healthy"}
"""Health endpoints of the components that are not our Flask services (those answer ``/healthz``)."""


PRIVATE_DIRS = ("orthanc", "labeling", "demo")
"""Folders of the run directory that hold patient data (Orthanc's storage and index, the labeling
database, the demo's truth file): mode 0700, their files 0600."""

PRIVATE_UMASK = 0o077
"""The umask while the stack starts: everything created by us or the processes we start is 0600/0700."""


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile, also by child processes started meanwhile, are owner-only."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: Path) -> Path:
    """``path`` as an owner-only folder (0700), created if missing, tightened if it exists from before."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def project_root() -> Path | None:
    """The dicomlab checkout: the nearest folder holding its ``pyproject.toml`` and ``services/dicomlab_cli``,
    above the working directory, else above this module (an editable install); ``None`` when neither is."""
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "services" / "dicomlab_cli").is_dir():
                return folder
    return None


def run_dir() -> Path:
    """``DICOMLAB_RUN_DIR``, else ``.run`` in the project root, wherever the command is called from
    (``./.run`` outside any checkout)."""
    if os.environ.get("DICOMLAB_RUN_DIR"):
        return Path(os.environ["DICOMLAB_RUN_DIR"]).resolve()
    return ((project_root() or Path.cwd()) / ".run").resolve()


def port_for(name: str) -> int:
    return int(os.environ.get(f"DICOMLAB_PORT_{name.upper()}", DEFAULT_PORTS[name]))


def load_credentials(directory: Path) -> dict[str, str]:
    """The stack's generated secrets, created on first use with mode 0600."""
    path = directory / "credentials.json"
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
    else:
        data = {}
    defaults = {
        "orthanc_username": "dicomlab",
        "orthanc_password": secrets.token_urlsafe(18),
        "token_key": "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
        "service_token": secrets.token_urlsafe(24),
        "patient_key_secret": secrets.token_urlsafe(24),
        "session_secret": secrets.token_urlsafe(32),
        "admin_username": "admin",
        "admin_password": secrets.token_urlsafe(12),
        "postgres_password": secrets.token_urlsafe(18),
    }
    changed = False
    for key, value in defaults.items():
        if key not in data:
            data[key] = value
            changed = True
    if changed:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
    path.chmod(0o600)
    return data


@dataclass
class StackState:
    """What is running (persisted in ``stack.json``; no secrets)."""

    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    postgres: bool = False

    @classmethod
    def load(cls, directory: Path) -> StackState:
        path = directory / "stack.json"
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / ".stack.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(directory / "stack.json")


def context(directory: Path, creds: dict[str, str], ports: dict[str, int]) -> LocalContext:
    store = directory / "store"
    store.mkdir(parents=True, exist_ok=True)
    return LocalContext(run_dir=directory, orthanc_url=f"http://{LOOPBACK}:{ports['orthanc']}",
                        orthanc_username=creds["orthanc_username"], orthanc_password=creds["orthanc_password"],
                        ports=ports, credentials=creds, store_url=f"file://{store}")


def status(directory: Path | None = None) -> dict[str, Any]:
    """Each component's pid, port and health (``up``/``down``/``unhealthy``)."""
    directory = directory or run_dir()
    state = StackState.load(directory)
    result: dict[str, Any] = {}
    for name, pid in state.pids.items():
        port = state.ports.get(name)
        health = "down"
        if pid_alive(pid):
            health = "unhealthy"
            try:
                path = HEALTH_PATHS.get(name, "/healthz")
                if name == "postgres":
                    health = "up"
                else:
                    creds = load_credentials(directory) if name == "orthanc" else {}
                    auth = (creds["orthanc_username"], creds["orthanc_password"]) if creds else None
                    response = requests.get(f"http://{LOOPBACK}:{port}{path}", auth=auth, timeout=3)
                    health = "up" if response.status_code == 200 else "unhealthy"
            except requests.RequestException:
                pass
        result[name] = {"pid": pid, "port": port, "health": health}
    return result


def up(directory: Path | None = None, *, postgres: bool = False, services: tuple[str, ...] = SERVICE_NAMES,
       monitoring: bool = False) -> dict[str, Any]:
    """Start Orthanc (and PostgreSQL when asked) and every landed service; idempotent."""
    directory = directory or run_dir()
    try:
        modalities = modalities_from_env()  # checked before anything starts
    except ModalityError as exc:
        raise StackError(str(exc)) from exc
    current = status(directory)
    if current and all(c["health"] == "up" for c in current.values()):
        logger.info("stack already running", extra={"run_dir": str(directory)})
        return current
    down(directory)
    creds = load_credentials(directory)
    # The run directory itself stays reachable (PostgreSQL may run as another account below it); the
    # folders with patient data are owner-only, and so is whatever the started processes create.
    for name in PRIVATE_DIRS:
        private_dir(directory / name)
    with private_umask():
        return _start(directory, creds, postgres=postgres, services=services, monitoring=monitoring,
                      modalities=modalities)


def _start(directory: Path, creds: dict[str, str], *, postgres: bool, services: tuple[str, ...],
           monitoring: bool, modalities: tuple[DicomModality, ...]) -> dict[str, Any]:
    state = StackState(postgres=postgres)
    try:
        pg: PostgresServer | None = None
        if postgres:
            pg = PostgresServer(directory / "postgres", user="dicomlab",
                                password=Secret(creds["postgres_password"])).start()
            pg.create_database("labeling")  # the labeling service's database on this cluster
            state.pids["postgres"] = pg.pid or 0
            state.ports["postgres"] = pg.port
            state.save(directory)
        orthanc = OrthancServer(directory / "orthanc", http_port=port_for("orthanc"),
                                dicom_port=port_for("orthanc_dicom"), username=creds["orthanc_username"],
                                password=Secret(creds["orthanc_password"]), postgres=pg,
                                dicom_modalities=modalities)
        orthanc.start()
        state.pids["orthanc"] = orthanc.pid or 0
        state.ports["orthanc"] = orthanc.http_port
        state.save(directory)
        ports = {"orthanc": orthanc.http_port, **{name: port_for(name) for name in SERVICE_NAMES}}
        if pg is not None:
            ports["postgres"] = pg.port
        ctx = context(directory, creds, ports)
        _start_services(directory, state, [
            GunicornService(name, f"dicomlab_{name}.app:create_app()", directory, port=ports[name],
                            env=stack_env(ctx, name), metrics_port=port_for(f"{name}_metrics"))
            for name in services])
        if monitoring:
            from dicomlab_cli.monitoring import start as start_monitoring

            for name, (pid, port) in start_monitoring(directory, state.ports).items():
                state.pids[name] = pid
                state.ports[name] = port
            state.save(directory)
    except BaseException:
        state.save(directory)
        down(directory)
        raise
    return status(directory)


def _start_services(directory: Path, state: StackState, services: list[GunicornService]) -> None:
    """Start the services side by side (each one's start-up is mostly imports and waiting for /healthz);
    every one that answered is recorded in ``state``, so a failure of another still lets ``down`` stop it."""
    with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
        futures = [pool.submit(service.start) for service in services]
        wait(futures)
    failed = [error for future in futures if (error := future.exception()) is not None]
    for service, future in zip(services, futures, strict=True):
        if future.exception() is None:
            state.pids[service.name] = service.pid or 0
            state.ports[service.name] = service.port
            state.ports[f"{service.name}_metrics"] = service.metrics_port
    state.save(directory)
    if failed:
        raise failed[0]


def down(directory: Path | None = None) -> list[str]:
    """Stop everything the run directory knows about, services first; returns what was stopped."""
    directory = directory or run_dir()
    state = StackState.load(directory)
    stopped = []
    order = [n for n in state.pids if n not in ("orthanc", "postgres")] + ["orthanc", "postgres"]
    for name in order[:-2]:  # the services get SIGTERM together: each takes its shutdown time in parallel
        pid = state.pids.get(name)
        if pid and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
    for name in order:
        pid = state.pids.get(name)
        if pid and pid_alive(pid):
            if name == "postgres":
                PostgresServer(directory / "postgres", pid=pid).stop()
            else:
                stop_pid(pid)
            stopped.append(name)
    if (directory / "stack.json").exists():
        StackState().save(directory)
    return stopped


def require_running(directory: Path | None = None) -> tuple[LocalContext, dict[str, Any]]:
    """The context of a running stack, or a :class:`StackError` telling the user to start it."""
    directory = directory or run_dir()
    current = status(directory)
    if current.get("orthanc", {}).get("health") != "up":
        raise StackError("the local stack is not running: start it with `dicomlab stack up`")
    state = StackState.load(directory)
    creds = load_credentials(directory)
    ports = {**{name: port_for(name) for name in SERVICE_NAMES}, **state.ports}
    return context(directory, creds, ports), current


def running_env(package: str) -> dict[str, str]:
    """``DICOMLAB_<PACKAGE>__*`` of the running stack (a :data:`dicomlab_core.localenv.LocalEnv`)."""
    ctx, _ = require_running()
    return stack_env(ctx, package)
