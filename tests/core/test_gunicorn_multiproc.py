"""gunicorn starts as a non-root user on a Prometheus multiprocess directory it cannot remove.

In a pod, ``PROMETHEUS_MULTIPROC_DIR`` is a mounted emptyDir: the container's user (10001) may
delete the files in it (left there by the previous container of the same pod after a restart) but
may not remove or recreate the mount point itself. This test builds that situation on the local
file system (a world-writable directory inside a root-owned parent) and starts the real gunicorn with
our shared configuration as ``nobody``; removing the directory (the old behaviour) makes the master
exit with PermissionError.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dicomlab_cli.processes import free_port, stop_pid

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


@pytest.fixture
def root_owned_tree() -> Iterator[Path]:
    """A root-owned 0755 directory (readable by anyone, writable by root only), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to start gunicorn as another user")
    top = Path(tempfile.mkdtemp(prefix="dicomlab-multiproc-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_gunicorn_as_non_root_empties_but_keeps_a_mounted_multiproc_dir(root_owned_tree: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    (root_owned_tree / "app.py").write_text(APP)
    mount = root_owned_tree / "prometheus-multiproc"  # stands for the emptyDir mount point
    mount.mkdir()
    mount.chmod(0o777)  # an emptyDir is world-writable
    stale = [mount / "counter_123.db", mount / "gauge_livesum_456.db"]
    for path in stale:
        path.write_bytes(b"stale")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)  # written by the previous container (same user)
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mount), "DICOMLAB_BIND": f"127.0.0.1:{port}",
           "DICOMLAB_METRICS_PORT": str(metrics_port), "DICOMLAB_WORKERS": "1", "DICOMLAB_THREADS": "2",
           "HOME": "/nonexistent"}
    log = root_owned_tree / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
             sys.executable, "-m", "gunicorn", "-c", "python:dicomlab_core.gunicorn_conf", "--chdir",
             str(root_owned_tree), "app:app"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root_owned_tree, start_new_session=True)
    try:
        answered = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/", timeout=2).text == "ok"
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert answered, f"gunicorn did not start as nobody (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
        assert "PermissionError" not in log.read_text()
        assert mount.is_dir(), "the mount point itself must stay"
        assert not any(path.exists() for path in stale), "stale files of a previous container must go"
        assert os.stat(f"/proc/{proc.pid}").st_uid == nobody.pw_uid
    finally:
        stop_pid(proc.pid)
