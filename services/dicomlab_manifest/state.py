"""Durable state of one build, so that a crashed or interrupted build resumes without duplicates or gaps.

A job directory holds:

- ``spec.json``: the fingerprint of the spec the state belongs to (a different spec never resumes this state);
- ``part.tsv``: the selected lines so far, one ``<sample hash hex>\\t<manifest line>`` per line;
- ``state.sqlite``: the progress (phase, cursor, counts, the valid length of ``part.tsv``), the SOP
  Instance UIDs already seen (de-duplication) and the exclusion keys, on disk rather than in memory.

A checkpoint first fsyncs ``part.tsv`` and then commits the progress and the page's de-duplication rows
in one SQLite transaction. On resume, ``part.tsv`` is cut back to the committed length, so lines
written after the last checkpoint are dropped together with their de-duplication rows: the rerun
produces them again, exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from dicomlab_core.errors import Conflict

logger = logging.getLogger(__name__)

SQL_CHUNK = 500
"""Values per ``IN (...)`` query (SQLite allows 999 parameters in older builds)."""
RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
"""Whether this SQLite has ``INSERT ... RETURNING`` (3.35, 2021)."""
_CLAIM = "INSERT OR IGNORE INTO seen (sop_uid) VALUES {} RETURNING sop_uid"
CACHE_KIB = 32 * 1024
"""SQLite page cache of the state database: the de-duplication index of ~4 x 10^5 UIDs stays in memory."""


@dataclass
class Progress:
    """Where a build is. ``phase``: init → listing → catchup → scanned → done (or init → changes → ...)."""

    phase: str = "init"
    cursor: int = 0
    low: int = 0
    high: int = 0
    part_bytes: int = 0
    truncated: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def skip(self, reason: str, amount: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + amount


class JobState:
    """The state directory of one build; use from one thread."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        spec_path = directory / "spec.json"
        if spec_path.exists():
            if spec_path.read_text() != fingerprint:
                raise Conflict(f"job state in {directory.name} belongs to a different selection spec")
        else:
            tmp = directory / ".spec.json.tmp"
            tmp.write_text(fingerprint)
            os.replace(tmp, spec_path)
        self.db = sqlite3.connect(directory / "state.sqlite")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS seen (sop_uid TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS excluded (key TEXT PRIMARY KEY) WITHOUT ROWID;
        """)
        self.db.commit()
        self.progress = self._load_progress()
        self.part_path = directory / "part.tsv"
        self._part: IO[bytes] = self._open_part()
        self.has_exclusions = self.db.execute("SELECT 1 FROM excluded LIMIT 1").fetchone() is not None

    def _load_progress(self) -> Progress:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'progress'").fetchone()
        return Progress(**json.loads(row[0])) if row else Progress()

    def _open_part(self) -> IO[bytes]:
        handle = self.part_path.open("a+b")
        handle.truncate(self.progress.part_bytes)
        handle.seek(0, os.SEEK_END)
        return handle

    @property
    def resumed(self) -> bool:
        return self.progress.phase != "init"

    # ------------------------------------------------------------------ exclusions and de-duplication

    def load_exclusions(self, keys: Iterable[str]) -> int:
        """Replace the exclusion keys (``sop:<uid>`` / ``oid:<orthanc id>``); committed at the next checkpoint."""
        self.db.execute("DELETE FROM excluded")
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO excluded (key) VALUES (?)", ((k,) for k in keys))
        count = self.db.total_changes - before
        self.has_exclusions = count > 0
        return count

    def _among(self, query: str, values: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(values), SQL_CHUNK):
            chunk = values[start:start + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self.db.execute(query.format(marks), chunk))
        return found

    def excluded_among(self, keys: list[str]) -> set[str]:
        """Which of these exclusion keys (``sop:<uid>`` / ``oid:<id>``) are excluded."""
        if not self.has_exclusions:
            return set()
        return self._among("SELECT key FROM excluded WHERE key IN ({})", keys)

    def seen_among(self, sop_uids: list[str]) -> set[str]:
        """Which of these SOP Instance UIDs were selected before (de-duplication)."""
        return self._among("SELECT sop_uid FROM seen WHERE sop_uid IN ({})", sop_uids)

    def mark_seen(self, sop_uids: list[str]) -> None:
        """Record SOP Instance UIDs as selected; committed with the next checkpoint."""
        self.db.executemany("INSERT OR IGNORE INTO seen (sop_uid) VALUES (?)", ((uid,) for uid in sop_uids))

    def claim_new(self, sop_uids: list[str]) -> set[str]:
        """Record SOP Instance UIDs as selected (committed with the next checkpoint); returns those not recorded before.

        One ``INSERT OR IGNORE ... RETURNING`` per :data:`SQL_CHUNK` values looks up and inserts in one
        pass of the index (~8 us per UID at 10^5 rows, against ~12 us for a ``SELECT ... IN`` then an insert).
        """
        if not RETURNING:
            seen = self.seen_among(sop_uids)
            new = {uid for uid in sop_uids if uid not in seen}
            self.mark_seen(sorted(new))
            return new
        found: set[str] = set()
        for start in range(0, len(sop_uids), SQL_CHUNK):
            chunk = sop_uids[start:start + SQL_CHUNK]
            rows = ",".join(["(?)"] * len(chunk))  # placeholders only: the values are bound
            found.update(row[0] for row in self.db.execute(_CLAIM.format(rows), chunk))
        return found

    # ------------------------------------------------------------------ lines and checkpoints

    def append(self, lines: list[tuple[int, str]]) -> None:
        """Spool (sample hash, manifest line) pairs."""
        if lines:
            self._part.write("".join(f"{digest:x}\t{line}\n" for digest, line in lines).encode())

    def checkpoint(self) -> None:
        """Make everything so far durable: the lines first, then progress and de-duplication rows."""
        self._part.flush()
        os.fsync(self._part.fileno())
        self.progress.part_bytes = self._part.tell()
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('progress', ?)",
                        (json.dumps(asdict(self.progress)),))
        self.db.commit()

    def _committed(self) -> Iterator[bytes]:
        """The raw spool lines up to the last checkpoint (``hash<TAB>line``)."""
        self._part.flush()
        with self.part_path.open("rb") as handle:
            remaining = self.progress.part_bytes
            for raw in handle:
                remaining -= len(raw)
                if remaining < 0:
                    break
                yield raw

    def part_lines(self) -> Iterator[tuple[int, bytes]]:
        """The committed lines as (sample hash, line bytes without the newline's prefix)."""
        for raw in self._committed():
            digest, _, line = raw.partition(b"\t")
            yield int(digest, 16), line

    def part_lines_only(self) -> Iterator[bytes]:
        """The committed lines without their sample hashes (no number parsed: the unsampled final write)."""
        for raw in self._committed():
            yield raw[raw.index(b"\t") + 1:]

    def save_result(self, result: dict[str, object]) -> None:
        tmp = self.directory / ".result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
        os.replace(tmp, self.directory / "result.json")

    def load_result(self) -> dict[str, object] | None:
        path = self.directory / "result.json"
        return json.loads(path.read_text()) if path.exists() else None  # type: ignore[no-any-return]

    def close(self) -> None:
        self._part.close()
        self.db.close()
