"""Real server processes for the local stack, the tests and the benchmarks.

:class:`OrthancServer` runs the Debian Orthanc binary with the DICOMweb plugin (and the PostgreSQL
index plugin when asked) from a generated JSON config, authentication always on.
:class:`PostgresServer` runs a throw-away PostgreSQL cluster from the Debian package.
:class:`GunicornService` runs one of our Flask services under gunicorn.

Each process gets its own session (process group) so that stopping it stops its children too, logs
to a file in its directory, and has a health check with a timeout; a port that is already taken
or a binary that is not installed is reported with what to do about it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from dicomlab_cli import dicom_policy
from dicomlab_cli.dicom_policy import DicomModality
from dicomlab_core.config import Secret
from dicomlab_core.orthanc import OrthancClient, OrthancSettings

logger = logging.getLogger(__name__)

ORTHANC_BINARY = Path(os.environ.get("DICOMLAB_ORTHANC_BINARY", "/usr/sbin/Orthanc"))
ORTHANC_PLUGINS = Path(os.environ.get("DICOMLAB_ORTHANC_PLUGINS", "/usr/share/orthanc/plugins"))
POSTGRES_BIN = Path(os.environ.get("DICOMLAB_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A local process could not be started or checked; the message says what to do."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_port(port: int, what: str) -> None:
    if port_in_use(port):
        raise StackError(f"port {port} (for {what}) is already in use on {LOOPBACK}: stop whatever listens "
                         f"there (`ss -ltnp 'sport = :{port}'`) or choose another port")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_pid(pid: int, *, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, wait, then SIGKILL what is left."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _spawn(argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
           cwd: Path | None = None, user: str | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs["user"] = user
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
        start_new_session=True, **kwargs)
    return proc


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------- PostgreSQL

@dataclass
class PostgresServer:
    """A PostgreSQL cluster in ``directory`` on a loopback port, with one password-protected role."""

    directory: Path
    port: int = 0
    user: str = "dicomlab"
    password: Secret = field(default_factory=lambda: Secret(secrets.token_urlsafe(18)))
    database: str = "dicomlab"
    pid: int | None = None
    durable: bool = True
    """False for a throw-away cluster (the tests'): no fsync, no synchronous commit, no full-page writes,
    so creating a database or committing does not wait for the disk; a crash may lose the cluster."""

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def dsn(self, database: str | None = None, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL for ``database`` (the password is in it: never log it)."""
        return f"{driver}://{self.user}:{self.password.reveal()}@{LOOPBACK}:{self.port}/{database or self.database}"

    def _run_as(self) -> str | None:
        """PostgreSQL refuses to run as root: use the Debian package's ``postgres`` account then."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError("running as root needs the 'postgres' system user (apt-get install postgresql)") from None
        return "postgres"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if not (POSTGRES_BIN / "postgres").exists():
            raise StackError(f"PostgreSQL is not installed ({POSTGRES_BIN}/postgres missing): "
                             "apt-get install postgresql, or run `make deps`")
        self.port = self.port or free_port()
        require_free_port(self.port, "PostgreSQL")
        user = self._run_as()
        self.directory.mkdir(parents=True, exist_ok=True)
        socket_dir = self.directory / "socket"
        socket_dir.mkdir(exist_ok=True)
        if user is not None:
            shutil.chown(self.directory, user)
            shutil.chown(socket_dir, user)
            self.directory.chmod(0o700)
            reachable = subprocess.run(["test", "-x", str(self.directory)], user=user, check=False)
            if reachable.returncode != 0:
                raise StackError(f"PostgreSQL runs as '{user}', which cannot reach {self.directory} (a parent "
                                 "folder is private): use a run directory it can reach, e.g. "
                                 "DICOMLAB_RUN_DIR=/var/tmp/dicomlab-run")
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.directory / ".pwfile"
            pwfile.write_text(self.password.reveal() + "\n")
            pwfile.chmod(0o600)
            if user is not None:
                shutil.chown(pwfile, user)
            try:
                subprocess.run([str(POSTGRES_BIN / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                                f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                               check=True, capture_output=True, user=user, timeout=120)
            except subprocess.CalledProcessError as exc:
                raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace')[-500:]}") from exc
            finally:
                pwfile.unlink(missing_ok=True)
        argv = [str(POSTGRES_BIN / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={socket_dir}",
                "-c", f"fsync={'on' if self.durable else 'off'}", "-c", "max_connections=200",
                "-c", "shared_buffers=128MB"]
        if not self.durable:
            argv += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        proc = _spawn(argv, self.log_path, user=user)
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"PostgreSQL exited at start-up:\n{_log_tail(self.log_path)}")
            ready = subprocess.run([str(POSTGRES_BIN / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                self._ensure_database()
                return self
            time.sleep(0.2)
        self.stop()
        raise StackError(f"PostgreSQL did not become ready within {timeout:g} s:\n{_log_tail(self.log_path)}")

    def _ensure_database(self) -> None:
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist."""
        env = {**os.environ, "PGPASSWORD": self.password.reveal()}
        base = ["psql", "-h", LOOPBACK, "-p", str(self.port), "-U", self.user, "-d", "postgres", "-tAc"]
        if not name.replace("_", "").isalnum():
            raise StackError(f"invalid database name {name!r}")
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"  # noqa: S608 - name checked above
        exists = subprocess.run([*base, query],
                                capture_output=True, text=True, env=env, check=True)
        if exists.stdout.strip() != "1":
            subprocess.run([*base, f'CREATE DATABASE "{name}"'], capture_output=True, env=env, check=True)

    def stop(self) -> None:
        if self.pid is not None:
            # SIGINT = PostgreSQL's "fast" shutdown; then the generic group stop.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and pid_alive(self.pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, os.WNOHANG)
                time.sleep(0.1)
            stop_pid(self.pid)
            self.pid = None


# --------------------------------------------------------------------------------------- Orthanc

@dataclass
class OrthancServer:
    """A real Orthanc with the DICOMweb plugin, authentication on, on loopback ports."""

    directory: Path
    http_port: int = 0
    dicom_port: int = 0
    username: str = "dicomlab"
    password: Secret = field(default_factory=lambda: Secret(secrets.token_urlsafe(18)))
    postgres: PostgresServer | None = None
    postgres_database: str = "orthanc"
    pid: int | None = None
    extra_config: dict[str, object] = field(default_factory=dict)
    dicom_modalities: tuple[DicomModality, ...] = ()
    """Who may C-ECHO/C-STORE (see :mod:`dicomlab_cli.dicom_policy`); none: the DICOM port stays closed."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "orthanc.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "orthanc.json"

    def settings(self, **overrides: object) -> OrthancSettings:
        values: dict[str, object] = {"url": self.url, "username": self.username, "password": self.password}
        values.update(overrides)
        return OrthancSettings(**values)  # type: ignore[arg-type]

    def client(self, **overrides: object) -> OrthancClient:
        return OrthancClient(self.settings(**overrides))

    def write_config(self) -> None:
        plugins = [str(ORTHANC_PLUGINS / "libOrthancDicomWeb.so")]
        config: dict[str, object] = {
            "Name": "dicomlab-orthanc",
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "DICOMLAB",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password.reveal()},
            "HttpCompressionEnabled": False,
            "HttpThreadsCount": 50,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "StableAge": 2,
            "SaveJobs": False,
            "StorageCompression": False,
            "OverwriteInstances": False,
            "HttpRequestTimeout": 60,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                         "Ssl": False, "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
            **dicom_policy.orthanc_settings(self.dicom_modalities),
        }
        if self.postgres is not None:
            plugins.append(str(ORTHANC_PLUGINS / "libOrthancPostgreSQLIndex.so"))
            self.postgres.create_database(self.postgres_database)
            config["PostgreSQL"] = {
                "EnableIndex": True, "EnableStorage": False, "Host": LOOPBACK, "Port": self.postgres.port,
                "Database": self.postgres_database, "Username": self.postgres.user,
                "Password": self.postgres.password.reveal(), "Lock": False, "EnableSsl": False,
            }
        config.update(self.extra_config)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        self.config_path.chmod(0o600)

    def start(self, timeout: float = 60.0) -> OrthancServer:
        if not ORTHANC_BINARY.exists():
            raise StackError(f"Orthanc is not installed ({ORTHANC_BINARY} missing): "
                             "apt-get install orthanc orthanc-dicomweb orthanc-postgresql, or run `make deps`")
        if not (ORTHANC_PLUGINS / "libOrthancDicomWeb.so").exists():
            raise StackError("the Orthanc DICOMweb plugin is not installed: apt-get install orthanc-dicomweb")
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        require_free_port(self.http_port, "Orthanc HTTP")
        require_free_port(self.dicom_port, "Orthanc DICOM")
        self.write_config()
        proc = _spawn([str(ORTHANC_BINARY), str(self.config_path)], self.log_path, cwd=self.directory)
        self.pid = proc.pid
        self.wait_ready(timeout, proc)
        return self

    def wait_ready(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        auth = (self.username, self.password.reveal())
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise StackError(f"Orthanc exited at start-up (code {proc.returncode}):\n{_log_tail(self.log_path)}")
            try:
                response = requests.get(f"{self.url}/system", auth=auth, timeout=2)
                if response.status_code == 200 and self._dicomweb_ready(auth):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise StackError(f"Orthanc did not answer on {self.url} within {timeout:g} s:\n{_log_tail(self.log_path)}")

    def _dicomweb_ready(self, auth: tuple[str, str]) -> bool:
        response = requests.get(f"{self.url}/dicom-web/studies?limit=1", auth=auth, timeout=2)
        return response.status_code in (200, 204)

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, timeout=20)
            self.pid = None


# --------------------------------------------------------------------------------------- gunicorn

@dataclass
class GunicornService:
    """One of our Flask services under gunicorn on a loopback port."""

    name: str
    app: str
    directory: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 2
    threads: int = 16
    pid: int | None = None
    metrics_port: int = 0
    """The port that serves ``/metrics`` (and nothing else); a free one when 0."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> GunicornService:
        self.port = self.port or free_port()
        require_free_port(self.port, f"the {self.name} service")
        self.metrics_port = self.metrics_port or free_port()
        require_free_port(self.metrics_port, f"the {self.name} service's metrics")
        metrics_dir = self.directory / f"prometheus-{self.name}"
        env = {**os.environ, **self.env,
               "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
               "DICOMLAB_BIND": f"{LOOPBACK}:{self.port}", "DICOMLAB_METRICS_PORT": str(self.metrics_port),
               "DICOMLAB_WORKERS": str(self.workers), "DICOMLAB_THREADS": str(self.threads)}
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:dicomlab_core.gunicorn_conf", self.app]
        proc = _spawn(argv, self.log_path, env=env)
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited at start-up:\n{_log_tail(self.log_path)}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise StackError(f"{self.name} did not answer on {self.url} within {timeout:g} s:\n{_log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid)
            self.pid = None
