"""gunicorn's master empties PROMETHEUS_MULTIPROC_DIR at start without removing the directory itself.

In Kubernetes the directory is an emptyDir mount point: the service's non-root user (uid 10001) may write
into it but cannot remove it. The test reproduces that with a parent the user cannot write to; run as
root, the reset runs in a forked child that has dropped to `nobody` (root could remove it anyway).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomlab_core.metrics import reset_multiprocess_dir

NOBODY = 65534


@pytest.fixture
def mount_point() -> Iterator[Path]:
    """<base>/run/prometheus-multiproc with stale files; run/ is not writable by the service user."""
    with tempfile.TemporaryDirectory(dir="/tmp") as base:  # a path `nobody` can traverse
        os.chmod(base, 0o755)  # noqa: S103 - the point: another user must reach it
        parent = Path(base) / "run"
        directory = parent / "prometheus-multiproc"
        (directory / "stale").mkdir(parents=True)
        for path in (directory / "counter_123.db", directory / "stale" / "gauge_livesum_7.db"):
            path.write_bytes(b"x")
            path.chmod(0o666)
        directory.chmod(0o777)  # what the kubelet makes of an emptyDir
        (directory / "stale").chmod(0o777)
        parent.chmod(0o555)
        try:
            yield directory
        finally:
            parent.chmod(0o755)


def _reset_unprivileged(directory: Path) -> int:
    """Exit status of reset_multiprocess_dir() run by a user who may not remove ``directory``."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
            reset_multiprocess_dir()
            status = 0
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def test_reset_empties_a_mount_point_it_cannot_remove(mount_point: Path) -> None:
    assert _reset_unprivileged(mount_point) == 0
    assert mount_point.is_dir()
    assert list(mount_point.iterdir()) == []


def test_reset_creates_a_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "multiproc"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    reset_multiprocess_dir()
    assert directory.is_dir()
