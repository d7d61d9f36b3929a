"""Migrations 0002 (login throttles), 0003 (gold images), 0004 (AI assistance) 0005 (drafts) and 0006 (default finding state) upgrade and downgrade cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from selfhosted_support import database_url
from sqlalchemy import inspect, text

from dicomlab_cli.processes import PostgresServer
from dicomlab_labeling.workflow.db import Database
from dicomlab_labeling.workflow.migrate import alembic_config, current_revision, upgrade

HEAD = "0006"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0002_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    db = Database(database_url(kind, tmp_path, postgres))
    try:
        assert upgrade(db) == HEAD
        tables = set(inspect(db.engine).get_table_names())
        assert "login_throttles" in tables and "login_failures" not in tables
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        assert current_revision(db) == "0001"
        tables = set(inspect(db.engine).get_table_names())
        assert "login_failures" in tables and "login_throttles" not in tables
        assert upgrade(db) == HEAD
    finally:
        db.dispose()


def _columns(db: Database, table: str) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns(table)}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0003_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    db = Database(database_url(kind, tmp_path, postgres))
    try:
        assert upgrade(db) == HEAD
        assert "gold" in _columns(db, "tasks") and "gold_uri" in _columns(db, "jobs")
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
        assert current_revision(db) == "0002"
        assert "gold" not in _columns(db, "tasks") and "gold_uri" not in _columns(db, "jobs")
        assert upgrade(db) == HEAD
        assert "gold" in _columns(db, "tasks")
    finally:
        db.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0004_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    db = Database(database_url(kind, tmp_path, postgres))
    try:
        with db.engine.begin() as connection:  # a job made before 0004 reads as "off" afterwards
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            connection.execute(text("INSERT INTO jobs (name, status, manifest_uri, labels, readers_per_image, "
                                    "instructions, allow_patient_identifiers, strategy, lease_seconds, created_at) "
                                    "VALUES ('old', 'active', 'm', '[]', 1, '', false, 'in-order', 60, "
                                    "CURRENT_TIMESTAMP)"))
        assert upgrade(db) == HEAD
        assert "ai_assistance" in _columns(db, "jobs")
        assert {"first_answer", "first_answer_at"} <= _columns(db, "assignments")
        assert "assistance" in _columns(db, "submissions")
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT ai_assistance FROM jobs WHERE name = 'old'")).scalar() == "off"
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        assert current_revision(db) == "0003"
        assert "ai_assistance" not in _columns(db, "jobs") and "first_answer" not in _columns(db, "assignments")
        assert "assistance" not in _columns(db, "submissions")
        assert upgrade(db) == HEAD
        assert "ai_assistance" in _columns(db, "jobs")
    finally:
        db.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0005_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    db = Database(database_url(kind, tmp_path, postgres))
    try:
        assert upgrade(db) == HEAD
        assert {"assignment_id", "user_id", "answer", "updated_at"} <= _columns(db, "drafts")
        assert "window_presets" in _columns(db, "jobs")
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        assert current_revision(db) == "0004"
        assert "drafts" not in set(inspect(db.engine).get_table_names())
        assert "window_presets" not in _columns(db, "jobs")
        assert upgrade(db) == HEAD
        assert "drafts" in set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0006_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if kind == "postgres" else None
    db = Database(database_url(kind, tmp_path, postgres))
    try:
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
            connection.execute(text("INSERT INTO jobs (name, status, manifest_uri, labels, readers_per_image, "
                                    "instructions, allow_patient_identifiers, strategy, lease_seconds, "
                                    "ai_assistance, created_at) VALUES ('old', 'active', 'm', '[]', 1, '', "
                                    "false, 'in-order', 900, 'off', CURRENT_TIMESTAMP)"))
        assert upgrade(db) == HEAD
        with db.engine.connect() as connection:
            # A job older than the option keeps starting its findings absent.
            assert connection.execute(text("SELECT default_finding_state FROM jobs")).scalar_one() == "absent"
        with db.engine.begin() as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            command.downgrade(config, "0005")
        assert "default_finding_state" not in _columns(db, "jobs")
        assert upgrade(db) == HEAD
        assert "default_finding_state" in _columns(db, "jobs")
    finally:
        db.dispose()
