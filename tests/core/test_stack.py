"""``dicomlab stack up | status | down`` as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dicomlab_cli.processes import free_port, pid_alive
from dicomlab_cli.stack import DEFAULT_PORTS


def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomlab_cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "DICOMLAB_RUN_DIR": str(tmp_path / "run")}
    for name in DEFAULT_PORTS:
        env[f"DICOMLAB_PORT_{name.upper()}"] = str(free_port())
    return env


def test_up_status_down(stack_env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    try:
        up = run_cli(stack_env, "stack", "up")
        assert up.returncode == 0, up.stderr
        assert "orthanc" in up.stdout
        status = run_cli(stack_env, "stack", "status", "--json")
        assert status.returncode == 0, status.stdout
        state = json.loads(status.stdout)
        assert state["orthanc"]["health"] == "up"
        assert state["orthanc"]["port"] == int(stack_env["DICOMLAB_PORT_ORTHANC"])
        creds = run_dir / "credentials.json"
        assert creds.stat().st_mode & 0o077 == 0
        _store_one_image(state["orthanc"]["port"], json.loads(creds.read_text()))
        _assert_private(run_dir / "orthanc", expect=("storage", "index"))  # Orthanc's storage and index
        _assert_private(run_dir / "labeling", expect=("labeling.db",))     # the labeling database
        password = json.loads(creds.read_text())["orthanc_password"]
        assert password not in up.stdout + status.stdout
        # Orthanc refuses anonymous requests: authentication is on.
        import requests

        anonymous = requests.get(f"http://127.0.0.1:{state['orthanc']['port']}/system", timeout=5)
        assert anonymous.status_code == 401
        # Running `up` again is safe: the same processes keep running.
        again = run_cli(stack_env, "stack", "up")
        assert again.returncode == 0, again.stderr
        assert json.loads(run_cli(stack_env, "stack", "status", "--json").stdout) == state
    finally:
        down = run_cli(stack_env, "stack", "down")
    assert down.returncode == 0
    assert "orthanc" in down.stdout
    assert not any(pid_alive(item["pid"]) for item in state.values())
    status = run_cli(stack_env, "stack", "status")
    assert status.returncode == 1
    assert "not running" in status.stdout


def _store_one_image(port: int, creds: dict[str, str]) -> None:
    import requests
    from pydicom.data import get_testdata_file

    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    stored = requests.post(f"http://127.0.0.1:{port}/instances", data=data, timeout=30,
                           auth=(creds["orthanc_username"], creds["orthanc_password"]))
    assert stored.status_code == 200, stored.text


def _assert_private(folder: Path, *, expect: tuple[str, ...]) -> None:
    """``folder`` and everything below it is owner-only (0700 folders, 0600 files): patient data lives there."""
    assert folder.stat().st_mode & 0o777 == 0o700
    found = {p.relative_to(folder).parts[0] for p in folder.rglob("*")}
    assert set(expect) <= found, found
    loose = [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in folder.rglob("*")
             if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert not loose, loose
    assert any(p.is_file() for p in (folder / expect[0]).rglob("*")) or (folder / expect[0]).is_file()


def test_demo_truth_file_is_private(orthanc: Any, tmp_path: Path) -> None:
    from dicomlab_cli import demo, stack

    ctx = stack.LocalContext(run_dir=tmp_path, orthanc_url=orthanc.url, orthanc_username=orthanc.username,
                             orthanc_password=orthanc.password.reveal(), ports={}, credentials={},
                             store_url=f"file://{tmp_path / 'store'}")
    options = demo.DemoOptions(patients=2, size=64, train_size=32, epochs=1, seed=4242, readers_per_image=1)
    previous = os.umask(0o022)  # a permissive umask: the file must be private anyway
    try:
        work = stack.private_dir(tmp_path / "demo")
        records = demo.load_images(ctx, options, work)
    finally:
        os.umask(previous)
    truth = next(work.glob("truth-*.json"))
    assert records and truth.stat().st_mode & 0o777 == 0o600
    assert work.stat().st_mode & 0o777 == 0o700


def test_port_taken_gives_a_clear_message(stack_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        stack_env["DICOMLAB_PORT_ORTHANC"] = str(port)
        result = run_cli(stack_env, "stack", "up", timeout=60)
    assert result.returncode == 2
    assert f"port {port} (for Orthanc HTTP) is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_postgres_serves_labeling_from_postgresql(stack_env: dict[str, str]) -> None:
    """``--postgres``: Orthanc's index and the labeling database on a real PostgreSQL, workers racing at start."""
    import shutil
    import tempfile

    import requests

    # As root PostgreSQL runs as 'postgres', which cannot enter pytest's private temp folders.
    tmp_path = Path(tempfile.mkdtemp(prefix="dicomlab-stack-pg-"))
    tmp_path.chmod(0o755)
    stack_env["DICOMLAB_RUN_DIR"] = str(tmp_path / "run")
    try:
        up = run_cli(stack_env, "stack", "up", "--postgres")
        assert up.returncode == 0, up.stderr
        state = json.loads(run_cli(stack_env, "stack", "status", "--json").stdout)
        assert {"postgres", "orthanc", "labeling"} <= set(state)
        assert all(item["health"] == "up" for item in state.values()), state
        creds = json.loads((tmp_path / "run" / "credentials.json").read_text())
        login = requests.post(f"http://127.0.0.1:{state['labeling']['port']}/api/auth/login", timeout=10,
                              json={"username": creds["admin_username"], "password": creds["admin_password"]})
        assert login.status_code == 200, login.text
        env = {**os.environ, "PGPASSWORD": creds["postgres_password"]}
        users = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(state["postgres"]["port"]), "-U", "dicomlab",
                                "-d", "labeling", "-tAc", "SELECT count(*) FROM users"],
                               env=env, capture_output=True, text=True, check=True)
        assert users.stdout.strip() == "1"
        assert "postgresql-index" in (tmp_path / "run" / "orthanc" / "orthanc.log").read_text()
    finally:
        run_cli(stack_env, "stack", "down")
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_postgres_in_a_private_folder_gives_a_clear_message(stack_env: dict[str, str], tmp_path: Path) -> None:
    import os as _os

    if _os.geteuid() != 0:
        pytest.skip("only root hands PostgreSQL to the 'postgres' account")
    result = run_cli(stack_env, "stack", "up", "--postgres", timeout=60)
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and "DICOMLAB_RUN_DIR" in result.stderr


def test_run_dir_is_found_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``DICOMLAB_RUN_DIR`` wins; else ``.run`` in the project root, also from a sub-folder or from outside it."""
    from dicomlab_cli import stack

    checkout = tmp_path / "checkout"
    (checkout / "services" / "dicomlab_cli").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname = 'dicomlab'\n")
    (checkout / "benchmarks" / "deep").mkdir(parents=True)
    monkeypatch.delenv("DICOMLAB_RUN_DIR", raising=False)
    monkeypatch.chdir(checkout / "benchmarks" / "deep")
    assert stack.run_dir() == checkout / ".run"
    monkeypatch.setenv("DICOMLAB_RUN_DIR", str(tmp_path / "elsewhere"))
    assert stack.run_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DICOMLAB_RUN_DIR")
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)  # not in a checkout: the checkout this package is installed from
    this_checkout = Path(stack.__file__).resolve().parents[2]
    assert stack.run_dir() == this_checkout / ".run"
