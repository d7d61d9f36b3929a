"""Every service's app factory has one shape (dicomlab_core.appfactory): a required secret missing from the
environment stops start-up with a ConfigError naming its variable, the local stack sets every one of them,
and the labeling service, started from the environment, logs JSON lines with its masked config."""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from types import ModuleType

import pytest

from dicomlab_cli.stack import load_credentials
from dicomlab_cli.wiring import LocalContext, stack_env
from dicomlab_core.config import env_name
from dicomlab_core.errors import ConfigError

SERVICES = {"proxy": "DICOMLAB_PROXY", "manifest": "DICOMLAB_MANIFEST", "labeling": "DICOMLAB_LABELING"}


def _stack(tmp_path: Path) -> LocalContext:
    (tmp_path / "store").mkdir(exist_ok=True)
    creds = load_credentials(tmp_path)
    return LocalContext(run_dir=tmp_path, orthanc_url="http://127.0.0.1:9", orthanc_username=creds["orthanc_username"],
                        orthanc_password=creds["orthanc_password"],
                        ports={"orthanc": 9, "proxy": 8081, "manifest": 8082, "labeling": 8083},
                        credentials=creds, store_url=f"file://{tmp_path / 'store'}")


def _app_module(service: str) -> ModuleType:
    return importlib.import_module(f"dicomlab_{service}.app")


def _use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("DICOMLAB_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_missing_required_secret_stops_start_up_naming_its_variable(
        service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _app_module(service)
    env = stack_env(_stack(tmp_path), service)
    required = [env_name(SERVICES[service], *path) for path in module.REQUIRED_SECRETS]
    assert required and all(env.get(name) for name in required), "the local stack must set every required secret"
    for name in required:
        _use_env(monkeypatch, {k: v for k, v in env.items() if k != name})
        with pytest.raises(ConfigError, match=re.escape(name)):
            module.create_app()
        _use_env(monkeypatch, {**env, name: ""})  # set but empty counts as missing
        with pytest.raises(ConfigError, match=re.escape(name)):
            module.create_app()


def test_labeling_started_from_the_environment_logs_json_with_its_config_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = _stack(tmp_path)
    env = stack_env(ctx, "labeling")
    _use_env(monkeypatch, env)
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        app = _app_module("labeling").create_app()  # SQLite under the run directory; Orthanc is not called
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_dicomlab", False) and h not in before[0]]:
            root.removeHandler(handler)
        root.setLevel(before[1])
    assert app.test_client().get("/healthz").status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    configured = [r for r in lines if r.get("msg") == "labeling service configured"]
    assert configured and configured[0].get("service") == "labeling"
    text = json.dumps(configured[0])
    for name in ("DICOMLAB_LABELING__SESSION_SECRET", "DICOMLAB_LABELING__ORTHANC__PASSWORD",
                 "DICOMLAB_LABELING__AUTH__ADMIN_PASSWORD", "DICOMLAB_LABELING__GT__SERVICE_TOKEN"):
        assert env[name] not in text
    assert env["DICOMLAB_LABELING__TOKEN_KEYS"].split(":", 1)[1] not in text
