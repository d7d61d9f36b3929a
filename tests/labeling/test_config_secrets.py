"""The labeling service's start-up log shows its configuration without any secret."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from selfhosted_support import make_config

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_core.logging import configure_logging
from dicomlab_labeling.app import create_app


def test_startup_log_masks_database_password_and_keys(tmp_path: Path, orthanc: OrthancServer,
                                                      postgres: PostgresServer) -> None:
    postgres.create_database("lab_secrets")
    config = make_config(tmp_path, postgres.dsn("lab_secrets"), orthanc)
    db_password = postgres.password.reveal()
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        create_app(config)  # connects and migrates the real database
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_dicomlab", False)]:
            root.removeHandler(handler)
    text = stream.getvalue()
    assert "labeling service configured" in text
    for secret in (db_password, config.token_keys[0].reveal().split(":")[1], config.session_secret.reveal(),
                   orthanc.password.reveal()):
        assert secret not in text
