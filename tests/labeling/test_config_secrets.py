"""The labeling service's start-up log shows its configuration without any secret."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from selfhosted_support import make_config

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.config import Secret
from dicomlab_core.logging import configure_logging
from dicomlab_labeling.app import create_app


def test_startup_log_masks_database_password_and_keys(tmp_path: Path, orthanc: OrthancServer) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", orthanc)
    db_password = "db-pa55-word-xyz"
    config = type(config)(**{**config.__dict__,
                             "database_url": Secret(f"postgresql+psycopg://lab:{db_password}@db:5432/labeling")})
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        create_app(config)  # the database is only reached on first use, so this succeeds
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_dicomlab", False)]:
            root.removeHandler(handler)
    text = stream.getvalue()
    assert "labeling service configured" in text
    for secret in (db_password, config.token_keys[0].reveal().split(":")[1], config.session_secret.reveal(),
                   orthanc.password.reveal()):
        assert secret not in text
