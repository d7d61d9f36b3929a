"""``dicomlab labeling user add`` / ``job create`` work without the token signing key (they sign no
token); commands that do need the full service configuration still name the missing variable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import PASSWORD, make_config, write_manifest

from dicomlab_cli.main import main
from dicomlab_cli.processes import OrthancServer


def test_user_add_and_job_create_without_token_keys(tmp_path: Path, orthanc: OrthancServer,
                                                    synthetic_set: list[dict[str, Any]],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", orthanc)
    monkeypatch.delenv("DICOMLAB_LABELING__TOKEN_KEYS", raising=False)
    for name, value in {"DICOMLAB_LABELING__DATABASE_URL": config.database_url.reveal(),
                        "DICOMLAB_LABELING__STORE_URL": config.store_url,
                        "DICOMLAB_LABELING__ORTHANC__URL": orthanc.url,
                        "DICOMLAB_LABELING__ORTHANC__PASSWORD": orthanc.password.reveal(),
                        "DICOMLAB_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, value)
    key = write_manifest(tmp_path, synthetic_set[:2])
    assert main(["labeling", "user", "add", "--username", "ann", "--role", "reviewer"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "reviewer"
    assert main(["labeling", "job", "create", "--name", "no-key-job", "--manifest", key, "--readers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["images"] == 2
    # Export (and the service itself) still refuses to run without the key, naming it.
    assert main(["labeling", "job", "export", "--name", "no-key-job"]) == 2
    assert "DICOMLAB_LABELING__TOKEN_KEYS" in capsys.readouterr().err
