"""The labeling database: one engine and session factory for SQLite (local default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers never both read a free task
and then race to claim it (SQLite's own deferred upgrade would fail one of them with "database is
locked" halfway). PostgreSQL uses READ COMMITTED with ``SELECT ... FOR UPDATE SKIP LOCKED`` in the
queue, and ``pool_pre_ping`` so a database restart costs the next request a reconnect, not an error.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dicomlab_core.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

SQLITE_BEGIN_OPTION = "dicomlab_sqlite_begin"
"""Execution option naming how a SQLite transaction begins: IMMEDIATE (default) or DEFERRED (read-only)."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the write lock before failing (milliseconds)."""


class Database:
    """An engine plus a session factory; ``with db.session() as s:`` commits on success."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size * 4
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size * 2
            kwargs["pool_timeout"] = 30
        self.engine: Engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _install_sqlite_pragmas(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on an exception.

        ``readonly=True`` starts a deferred transaction on SQLite (readers do not queue behind the
        write lock; WAL gives them a consistent snapshot). Database connection failures become
        :class:`ServiceUnavailable` (503): the client may retry, and nothing was acknowledged.
        """
        session = self.sessions()
        if readonly and self.dialect == "sqlite":
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
        try:
            yield session
            session.commit()
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if getattr(exc, "connection_invalidated", False) or isinstance(exc, OperationalError):
                raise ServiceUnavailable("the labeling database is unavailable; retry in a moment") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _enable_wal(cursor: Any, deadline_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """Put the database in WAL mode, waiting while another process holds it.

    Two gunicorn workers opening a new database at once (one of them migrating it) can get "database is
    locked" from this pragma at once, without SQLite's busy handler being called: try again until the
    busy timeout has passed.
    """
    deadline = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged submission survives a power cut
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")
