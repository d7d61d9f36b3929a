"""Checkov policy scan of the rendered chart (every ci scenario, images pinned by digest) and of the
Dockerfiles, with the exceptions documented in checkov-skips.yaml.

Checkov has heavy dependencies, so it lives in its own virtualenv (``.venv-checkov``), created on
first use with the pinned version below (about a minute from a PyPI mirror). No network: checkov's
guideline download is switched off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_chart import REPO, SCENARIOS, render_values, scenario_values

CHECKOV_VERSION = "3.3.30"
VENV = REPO / ".venv-checkov"
CHECKOV = VENV / "bin" / "checkov"
SKIPS = yaml.safe_load((Path(__file__).with_name("checkov-skips.yaml")).read_text())
DIGEST = "sha256:" + "0123456789abcdef" * 4


def ensure_checkov() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    python = "python3.11"
    try:
        subprocess.run([python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"], check=True,
                       capture_output=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        pytest.skip(f"could not install checkov into {VENV}: {exc}")
    return CHECKOV


def with_digests(values: dict[str, Any]) -> dict[str, Any]:
    """Production-like: every image pinned by digest (skaffold and releases set real ones)."""
    values = json.loads(json.dumps(values))
    for name in ("proxy", "manifest", "labeling"):
        values.setdefault("services", {}).setdefault(name, {}).setdefault("image", {})["digest"] = DIGEST
    values.setdefault("orthanc", {}).setdefault("image", {})["digest"] = DIGEST
    pg = values.setdefault("postgresql", {})
    pg.setdefault("internal", {}).setdefault("image", {})["digest"] = DIGEST
    return values


def run_checkov(target: Path) -> list[dict[str, Any]]:
    """One checkov run (its start-up dominates) over manifests and Dockerfiles; the failed checks."""
    checkov = ensure_checkov()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    skips = [check for checks in SKIPS.values() for check in checks]
    result = subprocess.run(
        [str(checkov), "-d", str(target), "--framework", "kubernetes", "dockerfile", "--skip-download", "--quiet",
         "--compact", "-o", "json", "--skip-check", ",".join(skips)],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.stdout.strip(), f"checkov produced no report:\n{result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    checked = {r.get("check_type") for r in reports if r.get("summary", {}).get("passed", 0) > 0}
    assert checked == {"kubernetes", "dockerfile"}, f"checkov checked only {checked}"
    return [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]


def test_skips_are_documented() -> None:
    for framework, checks in SKIPS.items():
        assert framework in ("kubernetes", "dockerfile")
        for check, reason in checks.items():
            assert check.startswith("CKV_") and len(reason) > 40, check


@pytest.mark.slow
def test_rendered_chart_and_dockerfiles_pass_checkov(tmp_path: Path) -> None:
    # gateway and monitoring-off render subsets of these kinds (HTTPRoute is not a checkov kind)
    for scenario in sorted(set(SCENARIOS) - {"gateway", "monitoring-off"}):
        rendered = render_values(with_digests(scenario_values(scenario)), scenario)
        (tmp_path / f"{scenario}.yaml").write_text(yaml.safe_dump_all(rendered.objects, sort_keys=False))
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        (tmp_path / dockerfile.name).write_text(dockerfile.read_text())
    failed = run_checkov(tmp_path)
    summary = sorted({f"{f['check_id']} {f['resource']} ({f['file_path']})" for f in failed})
    assert not failed, "\n".join(summary)


if __name__ == "__main__":  # `python tests/deploy/test_checkov.py` installs checkov ahead of a test run
    print(ensure_checkov())
    sys.exit(0)
