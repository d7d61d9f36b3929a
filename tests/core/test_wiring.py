"""The local stack's wiring: one function in the CLI turns a stack into every package's environment,
and the packages below the CLI run without it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomlab_cli.wiring import PACKAGES, LocalContext, stack_env
from dicomlab_core.config import load_config
from dicomlab_core.orthanc import OrthancSettings


@pytest.fixture
def ctx(tmp_path: Path) -> LocalContext:
    key = "k1:" + base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
    creds = {"token_key": key, "service_token": "s" * 32, "patient_key_secret": "p" * 24,
             "session_secret": "x" * 32, "admin_username": "admin", "admin_password": "a" * 16,
             "postgres_password": "pg-pw"}
    return LocalContext(run_dir=tmp_path, orthanc_url="http://127.0.0.1:18042", orthanc_username="lab",
                        orthanc_password="orthanc-pw", ports={"proxy": 18081, "manifest": 18082, "labeling": 18083},
                        credentials=creds, store_url=f"file://{tmp_path / 'store'}")


def test_every_package_gets_the_same_orthanc_in_one_style(ctx: LocalContext) -> None:
    """Each package's config loads from its variables and reaches the stack's Orthanc with its credentials."""
    from dicomlab_labeling.config import ENV_PREFIX as LABELING
    from dicomlab_labeling.config import LabelingConfig
    from dicomlab_manifest.config import PREFIX as MANIFEST
    from dicomlab_manifest.config import Config as ManifestConfig
    from dicomlab_proxy.config import PREFIX as PROXY
    from dicomlab_proxy.config import Config as ProxyConfig
    from dicomlab_training.config import load_train_config

    configs = {
        "proxy": load_config(ProxyConfig, PROXY, stack_env(ctx, "proxy")).orthanc,
        "manifest": load_config(ManifestConfig, MANIFEST, stack_env(ctx, "manifest")).orthanc,
        "labeling": load_config(LabelingConfig, LABELING, stack_env(ctx, "labeling")).orthanc,
        "train": load_train_config(environ=stack_env(ctx, "train")).orthanc,
        "synth": load_config(OrthancSettings, "DICOMLAB_SYNTH__ORTHANC", stack_env(ctx, "synth")),
    }
    assert set(configs) == set(PACKAGES)
    for package, orthanc in configs.items():
        assert (orthanc.url, orthanc.username, orthanc.password.reveal()) == (
            "http://127.0.0.1:18042", "lab", "orthanc-pw"), package
        prefix = PACKAGES[package][0]
        assert all(name.startswith(prefix + "__") and name == name.upper() for name in stack_env(ctx, package))


def test_labeling_uses_the_stacks_postgresql_only_when_it_runs(ctx: LocalContext) -> None:
    assert "DICOMLAB_LABELING__DATABASE_URL" not in stack_env(ctx, "labeling")
    with_pg = LocalContext(**{**ctx.__dict__, "ports": {**ctx.ports, "postgres": 15432}})
    assert stack_env(with_pg, "labeling")["DICOMLAB_LABELING__DATABASE_URL"] == (
        "postgresql+psycopg://dicomlab:pg-pw@127.0.0.1:15432/labeling")


def test_unknown_package_is_refused(ctx: LocalContext) -> None:
    with pytest.raises(KeyError, match="no local-stack wiring for 'viewer'"):
        stack_env(ctx, "viewer")


RUN_TRAINING = """
import contextlib, io, json, sys
from dicomlab_training.__main__ import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
cli = sorted(m for m in sys.modules if m.startswith("dicomlab_cli"))
print(json.dumps({"results": results, "cli_modules": cli}))
"""


def test_training_entry_point_runs_without_the_cli(tmp_path: Path) -> None:
    """``python -m dicomlab_training`` parses and runs ``train`` actions without importing the CLI, and
    says that ``--local-stack`` belongs to the ``dicomlab`` command (one process for both, to save start-up)."""
    manifest = str(tmp_path / "m.manifest")
    runs = [["run", "--manifest", manifest, "--size", "64", "--print-config"],
            ["run", "--manifest", manifest, "--local-stack"]]
    done = subprocess.run([sys.executable, "-c", RUN_TRAINING, json.dumps(runs)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["cli_modules"] == []
    printed, refused = answer["results"]
    assert printed["code"] == 0 and json.loads(printed["out"])["pixels"]["size"] == 64
    assert refused["code"] == 2
    assert "no local stack here" in refused["err"] and "DICOMLAB_TRAIN__" in refused["err"]
