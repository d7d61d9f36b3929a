"""Schema migrations, run programmatically: at start-up (``create_app``) and by ``dicomlab labeling db upgrade``.

Several gunicorn workers may start at once: on PostgreSQL the upgrade runs under an advisory lock,
on SQLite inside one ``BEGIN IMMEDIATE`` transaction, so exactly one of them migrates and the others
find the schema at head.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from dicomlab_labeling.workflow.db import Database

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
ADVISORY_LOCK_ID = 0x64636D6C  # "dcml": one constant key for the migration lock


def alembic_config(database: Database) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database.url.replace("%", "%%"))
    return config


def head_revision(database: Database) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(database: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision`` (default head); returns the revision now in place."""
    config = alembic_config(database)
    with database.engine.begin() as connection:
        if database.is_postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    now = current_revision(database)
    logger.info("labeling database at revision %s", now)
    return now


def main() -> int:
    """``python -m dicomlab_labeling.workflow.migrate``: migrate the configured database to head and exit.

    The Helm chart runs this as a pre-upgrade hook Job with the labeling Deployment's environment, so
    the schema is expanded before new pods start (migrations stay backward compatible with the
    previous release: expand first, contract in a later release). It needs only the service's own
    configuration, not the ``dicomlab`` CLI (whose training commands need torch).
    """
    import os

    from dicomlab_core.logging import configure_logging
    from dicomlab_labeling.config import load

    configure_logging(os.environ.get("DICOMLAB_LOG_LEVEL", "INFO"), service="labeling-migrate")
    config = load()
    database = Database(config.sqlalchemy_url)
    try:
        revision = upgrade(database)
    finally:
        database.dispose()
    print(revision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
