# Embedded store: SQLite in WAL mode. Decisions are an append-only log written (and
# committed) before the firewall is touched, and sources that ever acted are upserted in the
# same transaction, so a kill -9 at any moment loses no decision; on start the engine is
# rebuilt from the sources table and the firewall reconciled from the engine in one
# transaction, which leaves no duplicates. WAL with synchronous=NORMAL survives process
# crashes (not power loss, which would cost the last transactions only). Events are
# sampled per source and minute so floods cannot grow the file; retention prunes history.
from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sipdeflect.decisions import Action, Decision, Level, Network
from sipdeflect.engine import Source, State
from sipdeflect.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, target TEXT NOT NULL, action TEXT NOT NULL,
    until REAL, origin TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_target ON decisions (target, at);
CREATE TABLE IF NOT EXISTS sources (
    address TEXT PRIMARY KEY, state TEXT NOT NULL, level INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, since REAL NOT NULL, until REAL,
    offences INTEGER NOT NULL, reasons TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manual (
    target TEXT PRIMARY KEY, action TEXT NOT NULL, until REAL, origin TEXT NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, account TEXT, user_agent TEXT, port INTEGER);
CREATE INDEX IF NOT EXISTS events_source ON events (source, at);
CREATE TABLE IF NOT EXISTS traffic (
    source TEXT NOT NULL, bucket INTEGER NOT NULL, place TEXT NOT NULL,
    packets INTEGER NOT NULL, bytes INTEGER NOT NULL, replies INTEGER NOT NULL,
    PRIMARY KEY (source, bucket, place)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traffic_bucket ON traffic (bucket);
"""
# Traffic is kept in 10 s buckets for a day, then in 5 min buckets until the retention
# ends: a busy source costs at most 8,640 rows for its first day and 288 a day after.
TRAFFIC_BUCKET = 10  # seconds: the resolution recent traffic is kept at
COARSE_BUCKET = 300  # seconds: the resolution of traffic older than COARSE_AFTER
COARSE_AFTER = 86400.0
PLACES = ("pbx", "decoy", "dropped")  # where a source's packets went
SCHEMA_VERSION = "1"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    at: float
    source: str
    kind: str
    detail: str
    account: str | None = None
    user_agent: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficRow:
    source: str
    bucket: int  # epoch seconds, a multiple of TRAFFIC_BUCKET
    place: str  # one of PLACES
    packets: int
    bytes: int
    replies: int


class StoreProtocol(Protocol):
    def commit(self, decisions: Iterable[Decision], sources: Iterable[Source]) -> None: ...
    def load_sources(self) -> list[Source]: ...
    def load_manual(self) -> list[Decision]: ...
    def history(self, target: str) -> list[Decision]: ...
    def close(self) -> None: ...


class SqliteStore:
    def __init__(
        self, path: str | Path, *, events_per_minute: int = 20, events_cap: int = 20_000
    ) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        (found,) = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if not str(found).isdigit() or int(found) > int(SCHEMA_VERSION):
            # A downgrade must not write rows a newer schema reads differently.
            self.db.close()
            raise StoreError(
                f"{path} was written by a newer sipdeflect (store schema {found}, this one "
                f"knows up to {SCHEMA_VERSION}): upgrade sipdeflect, or restore the backup "
                "taken before the upgrade"
            )
        self.events_per_minute = events_per_minute
        self.events_cap = events_cap  # events kept per minute over all sources
        self._sampled: dict[tuple[str, int], int] = {}
        self._minute_total: tuple[int, int] = (0, 0)  # (minute, events kept in it)
        self._pending: list[tuple[float, str, str, str, str | None, str | None, int | None]] = []
        self.events_dropped = 0  # sampled away or over the cap

    def close(self) -> None:
        self.flush_events()
        self.db.close()

    # -- decisions and sources -------------------------------------------------------------
    def commit(self, decisions: Iterable[Decision], sources: Iterable[Source]) -> None:
        """Append decisions and upsert the sources they concern, in one transaction."""
        decisions = list(decisions)
        with self._tx() as db:
            db.executemany(
                "INSERT INTO decisions (at, target, action, until, origin, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (d.at, str(d.target), d.action.value, d.until, d.origin, d.reason)
                    for d in decisions
                ],
            )
            db.executemany(
                "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(address) DO "
                "UPDATE SET state=excluded.state, level=excluded.level, "
                "last_seen=excluded.last_seen, since=excluded.since, until=excluded.until, "
                "offences=excluded.offences, reasons=excluded.reasons",
                [
                    (
                        str(s.address),
                        s.state.value,
                        int(s.level),
                        s.first_seen,
                        s.last_seen,
                        s.since,
                        s.until,
                        s.offences,
                        json.dumps(s.reasons),
                    )
                    for s in sources
                ],
            )
            for d in decisions:
                if d.origin == "engine":
                    continue
                if d.action in (Action.BLOCK, Action.DEFLECT, Action.ALLOW):
                    db.execute(
                        "INSERT OR REPLACE INTO manual VALUES (?, ?, ?, ?, ?, ?)",
                        (str(d.target), d.action.value, d.until, d.origin, d.reason, d.at),
                    )
                elif d.action is Action.RELEASE:
                    db.execute("DELETE FROM manual WHERE target = ?", (str(d.target),))

    def load_sources(self) -> list[Source]:
        rows = self.db.execute(
            "SELECT address, state, level, first_seen, last_seen, since, until, offences, "
            "reasons FROM sources"
        ).fetchall()
        return [
            Source(
                ipaddress.ip_address(a),
                State(st),
                Level(lv),
                fs,
                ls,
                since,
                until,
                off,
                reasons=json.loads(rs),
            )
            for a, st, lv, fs, ls, since, until, off, rs in rows
        ]

    def load_manual(self) -> list[Decision]:
        rows = self.db.execute("SELECT target, action, until, origin, reason, at FROM manual")
        return [Decision(_net(t), Action(a), u, o, r, at) for t, a, u, o, r, at in rows]

    def history(self, target: str) -> list[Decision]:
        rows = self.db.execute(
            "SELECT target, action, until, origin, reason, at FROM decisions "
            "WHERE target = ? ORDER BY id",
            (str(_net(target)),),
        )
        return [Decision(_net(t), Action(a), u, o, r, at) for t, a, u, o, r, at in rows]

    def count_decisions(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM decisions").fetchone()[0])

    # -- events ------------------------------------------------------------------------------
    def record_event(
        self,
        at: float,
        source: str,
        kind: str,
        detail: str,
        *,
        account: str | None = None,
        user_agent: str | None = None,
        port: int | None = None,
    ) -> bool:
        """Keep at most events_per_minute events per source and minute and events_cap per
        minute in all (a flood from many spoofed sources must not become a flood of
        writes); True if kept. Kept events are buffered and written in one transaction by
        flush_events() (the daemon calls it every tick; reads flush first)."""
        minute = int(at // 60)
        key = (source, minute)
        n = self._sampled.get(key, 0)
        m, total = self._minute_total
        if m != minute:
            if minute > m:  # a new minute: the old ones' counts are done with
                self._sampled = {k: v for k, v in self._sampled.items() if k[1] >= minute}
            m, total = minute, 0
        if n >= self.events_per_minute or total >= self.events_cap:
            self.events_dropped += 1
            return False
        if len(self._sampled) > 100_000:  # (out-of-order minutes: still bounded)
            self._sampled = {k: v for k, v in self._sampled.items() if k[1] >= minute}
        self._sampled[key] = n + 1
        self._minute_total = (m, total + 1)
        self._pending.append((at, source, kind, detail, account, user_agent, port))
        return True

    def flush_events(self) -> int:
        """Write buffered events in one transaction; returns how many."""
        pending, self._pending = self._pending, []
        if pending:
            with self._tx() as db:
                db.executemany(
                    "INSERT INTO events (at, source, kind, detail, account, user_agent, port) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    pending,
                )
        return len(pending)

    def events(self, source: str | None = None, since: float = 0.0) -> list[StoredEvent]:
        """Events of one source (or all), oldest first."""
        self.flush_events()

        cols = "SELECT at, source, kind, detail, account, user_agent, port FROM events"

        if source is None:
            rows = self.db.execute(f"{cols} WHERE at >= ? ORDER BY at, id", (since,))
        else:
            rows = self.db.execute(
                f"{cols} WHERE source = ? AND at >= ? ORDER BY at, id", (source, since)
            )
        return [StoredEvent(*r) for r in rows]

    # -- traffic -----------------------------------------------------------------------------
    def account(self, rows: Iterable[tuple[str, float, str, int, int, int]]) -> None:
        """Add (source, time, place, packets, bytes, replies) into TRAFFIC_BUCKET buckets."""
        data = []
        for source, at, place, packets, nbytes, replies in rows:
            if place not in PLACES:
                raise ValueError(f"place must be one of {PLACES}, not {place!r}")
            data.append(
                (
                    source,
                    int(at // TRAFFIC_BUCKET) * TRAFFIC_BUCKET,
                    place,
                    packets,
                    nbytes,
                    replies,
                )
            )
        with self._tx() as db:
            db.executemany(
                "INSERT INTO traffic VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "packets = packets + excluded.packets, bytes = bytes + excluded.bytes, "
                "replies = replies + excluded.replies",
                data,
            )

    def traffic(self, since: float = 0.0, source: str | None = None) -> list[TrafficRow]:
        cols = "SELECT source, bucket, place, packets, bytes, replies FROM traffic"
        if source is None:
            rows = self.db.execute(f"{cols} WHERE bucket >= ? ORDER BY bucket", (since,))
        else:
            rows = self.db.execute(
                f"{cols} WHERE source = ? AND bucket >= ? ORDER BY bucket", (source, since)
            )
        return [TrafficRow(*r) for r in rows]

    def decisions(self, since: float = 0.0) -> list[Decision]:
        rows = self.db.execute(
            "SELECT target, action, until, origin, reason, at FROM decisions "
            "WHERE at >= ? ORDER BY id",
            (since,),
        )
        return [Decision(_net(t), Action(a), u, o, r, at) for t, a, u, o, r, at in rows]

    def prune(self, now: float, retention: float) -> int:
        """Delete history older than retention (never the current state); rows removed."""
        self.flush_events()
        cutoff = now - retention

        with self._tx() as db:
            n = db.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM traffic WHERE bucket < ?", (cutoff,)).rowcount
            n += _coarsen(db, now - COARSE_AFTER)

            n += db.execute("DELETE FROM decisions WHERE at < ?", (cutoff,)).rowcount
            n += db.execute(
                "DELETE FROM sources WHERE state IN ('released', 'watched') AND last_seen < ?",
                (cutoff,),
            ).rowcount
        return n

    def _tx(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, et: object, e: object, tb: object) -> None:
        self.db.execute("COMMIT" if et is None else "ROLLBACK")


def _net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


def _coarsen(db: sqlite3.Connection, before: float) -> int:
    """Merge traffic rows older than ``before`` into COARSE_BUCKET buckets; rows removed.
    Idempotent: merging rows that are already coarse leaves their sums unchanged."""
    edge = int(before) // COARSE_BUCKET * COARSE_BUCKET
    fine = db.execute(
        "SELECT count(*) FROM traffic WHERE bucket < ? AND bucket % ? != 0", (edge, COARSE_BUCKET)
    ).fetchone()[0]
    if not fine:
        return 0
    merged = db.execute(
        "SELECT source, bucket - bucket % ?1 AS b, place, sum(packets), sum(bytes), sum(replies) "
        "FROM traffic WHERE bucket < ?2 GROUP BY source, b, place",
        (COARSE_BUCKET, edge),
    ).fetchall()
    before_rows = db.execute("DELETE FROM traffic WHERE bucket < ?", (edge,)).rowcount
    db.executemany("INSERT INTO traffic VALUES (?, ?, ?, ?, ?, ?)", merged)
    return int(before_rows - len(merged))
