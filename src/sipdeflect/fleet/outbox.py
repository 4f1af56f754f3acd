# The node's fleet bookkeeping on local disk (SQLite, WAL): an outbox of decisions not yet
# in the shared store, in the order they were committed locally, bounded (the oldest go
# first, counted), and how far this node has read the shared sequence. A decision enters
# the outbox right after the local commit, so a partition or a crash loses nothing that
# was decided; each carries a key unique to this outbox file (a random incarnation plus
# its row id), so publishing it twice is a no-op in the shared store.
from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, action TEXT NOT NULL,
    until REAL, basis TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    key: str  # unique over every outbox ever: incarnation:id
    target: str
    action: str
    until: float | None
    basis: str
    reason: str
    at: float


class Outbox:
    def __init__(self, path: str | Path, max_queue: int = 100_000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('incarnation', ?)", (uuid.uuid4().hex[:16],)
        )
        self.incarnation = self._meta("incarnation") or ""
        self.max_queue = max_queue
        self.dropped = 0
        self._size = int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, rows: list[tuple[str, str, float | None, str, str, float]]) -> int:
        """Queue (target, action, until, basis, reason, at) rows; returns how many of the
        oldest were dropped to stay within max_queue."""
        if not rows:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO outbox (target, action, until, basis, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._size += len(rows)
            over = self._size - self.max_queue
            if over > 0:
                self.db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                    (over,),
                )
                self._size -= over
                self.dropped += over
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return max(0, over)

    def peek(self, limit: int) -> list[Pending]:
        rows = self.db.execute(
            "SELECT id, target, action, until, basis, reason, at FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [Pending(i, f"{self.incarnation}:{i}", *rest) for i, *rest in rows]

    def done(self, upto: int) -> None:
        """Forget every queued row up to id ``upto`` (now in the shared store)."""
        n = self.db.execute("DELETE FROM outbox WHERE id <= ?", (upto,)).rowcount
        self._size = max(0, self._size - n)

    def __len__(self) -> int:
        return self._size

    @property
    def read_seq(self) -> int:
        """The last shared sequence number this node has taken in (0: none yet)."""
        return int(self._meta("read_seq") or 0)

    @read_seq.setter
    def read_seq(self, seq: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('read_seq', ?)", (str(seq),))

    def close(self) -> None:
        self.db.close()
