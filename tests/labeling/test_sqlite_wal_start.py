"""Two workers opening a new SQLite database at once: the WAL switch waits for the other, it does not fail.

Seen in the demo: one labeling worker migrated a new database while the other's ``PRAGMA
journal_mode=WAL`` got "database is locked" at once (SQLite's busy handler is not called there), the
worker failed to boot and gunicorn shut the service down.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dicomlab_labeling.workflow import db


class LockedAtFirst:
    """A cursor whose WAL pragma answers "database is locked" ``times`` times, then works."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left, self.message, self.calls = times, message, 0

    def execute(self, sql: str) -> Any:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)
        return None


def test_wal_switch_waits_while_another_process_holds_the_database() -> None:
    cursor = LockedAtFirst(times=3)
    db._enable_wal(cursor, deadline_s=5)
    assert cursor.calls == 4


def test_wal_switch_gives_up_after_the_busy_timeout_and_other_errors_are_not_retried() -> None:
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db._enable_wal(LockedAtFirst(times=10**6), deadline_s=0.05)
    cursor = LockedAtFirst(times=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        db._enable_wal(cursor, deadline_s=5)
    assert cursor.calls == 1


def test_a_new_database_ends_in_wal_mode(tmp_path: Path) -> None:
    database = db.Database(f"sqlite:///{tmp_path / 'labeling.db'}")
    try:
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        database.dispose()
