# The node's link to the shared store: two psycopg connections run as one supervised part
# of the daemon. The publisher drains the outbox (fleet/outbox.py) into fleet_decisions in
# batches, one transaction each under an advisory lock, so sequence numbers commit in
# order; a retried batch is a no-op (UNIQUE (node, key)). The listener LISTENs, then reads
# every row after the last seq it took in (so a reconnect, a restart or a fresh node
# catches up from the table: NOTIFY is only the wake-up, it queues nothing for a listener
# that is away), judges each row (fleet/rules.py) and hands what it accepts to the daemon
# on the loop's thread. While the database is away both retry with a bounded backoff; the
# node keeps deciding and enforcing locally and its outbox grows (bounded, on disk).
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from sipdeflect.config import Fleet
from sipdeflect.decisions import Address, Decision, Level
from sipdeflect.errors import ConfigError
from sipdeflect.fleet.outbox import Outbox, Pending
from sipdeflect.fleet.rules import Refused, Row, Rules, judge, latest, to_share
from sipdeflect.fleet.schema import migrate

log = logging.getLogger("sipdeflect")
CHANNEL = "sipdeflect_fleet"
PUBLISH_LOCK = 0x5D_F1_EE_71  # pg_advisory_xact_lock key: one publishing transaction at a time
BATCH = 500  # rows per publishing transaction and per catch-up read
HEARTBEAT = 2.0  # seconds between fleet_nodes updates (and the listener's longest wait)
BACKOFF = (0.2, 5.0)  # reconnect delay: first, longest
CONNECT_TIMEOUT = 5
INSERT = (
    "INSERT INTO fleet_decisions (node, key, target, action, until, basis, reason, at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (node, key) DO NOTHING"
)
# A node that has read nothing yet starts from what is in force: each (node, target)'s
# latest row up to a sequence read in the same snapshot, releases left out.
IN_FORCE = (
    "SELECT * FROM (SELECT DISTINCT ON (node, target) seq, node, target, action, until, "
    "basis, reason, at, extract(epoch FROM stored_at)::float8 FROM fleet_decisions "
    "WHERE seq <= %s ORDER BY node, target, seq DESC) AS t WHERE action <> 'release' ORDER BY seq"
)
READ = (
    "SELECT seq, node, target, action, until, basis, reason, at, "
    "extract(epoch FROM stored_at)::float8 FROM fleet_decisions "
    "WHERE seq > %s ORDER BY seq LIMIT %s"
)
HEARTBEAT_SQL = (
    "INSERT INTO fleet_nodes (node, read_seq, lag_seconds, queued) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (node) DO UPDATE SET last_seen = now(), read_seq = excluded.read_seq, "
    "lag_seconds = excluded.lag_seconds, queued = excluded.queued"
)


# Retention of the shared log: a row older than the longest block any node accepts
# (max_ttl) can only hold a block that has lapsed everywhere, or a release of one, so
# deleting it changes nothing a reader would do. One node at a time (a try-lock), at most
# once per PRUNE_EVERY per node.
PRUNE_EVERY = 3600.0
PRUNE_LOCK = 0x5D_F1_EE_72
PRUNE = "DELETE FROM fleet_decisions WHERE stored_at < now() - make_interval(secs => %s)"


def _values(node: str, p: Pending) -> tuple[object, ...]:
    return (node, p.key, p.target, p.action, p.until, p.basis, p.reason, p.at)


def node_name(cfg: Fleet) -> str:
    return cfg.node or socket.gethostname().split(".")[0] or "node"


# A silent partition (packets dropped, no RST) must end a connection in seconds, not after
# the kernel's default retransmissions (~15 min): unacknowledged data for 10 s, or an idle
# link with 3 keepalives unanswered, closes it and the node goes on locally. (libpq
# keywords; ignored on unix sockets; the DSN or [fleet] tls may set others.)
LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


def conninfo(cfg: Fleet) -> str:
    """The DSN with liveness defaults, the password (from a file or the environment) and
    the TLS keywords."""
    given = conninfo_to_dict(cfg.dsn)
    extra: dict[str, Any] = {k: v for k, v in LIVENESS.items() if k not in given}
    extra.update(cfg.tls)
    if cfg.password_file:
        try:
            extra["password"] = Path(cfg.password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise ConfigError(f"fleet.password_file {cfg.password_file}: {exc}") from None
    elif cfg.password_env:
        pw = os.environ.get(cfg.password_env)
        if pw is None:
            raise ConfigError(f"fleet.password_env: ${cfg.password_env} is not set")
        extra["password"] = pw
    return make_conninfo(cfg.dsn, **extra)


async def connect(info: str, **kw: Any) -> psycopg.AsyncConnection[TupleRow]:
    return await psycopg.AsyncConnection.connect(
        info, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **kw
    )


class FleetLink:
    def __init__(
        self,
        info: str,
        rules: Rules,
        outbox: Outbox,
        deliver: Callable[[list[Decision]], object],
        *,
        clock: Callable[[], float] = time.time,
        keep: float | None = None,
    ) -> None:
        self.info, self.rules, self.outbox, self.deliver = info, rules, outbox, deliver
        self.keep = keep if keep is not None else rules.max_ttl + 86400.0  # see PRUNE
        self.clock = clock
        self._up = {"listen": False, "publish": False}
        self.published = 0  # rows written to the shared store by this process
        self.received = 0  # rows from other nodes taken in
        self.accepted = 0  # ...that became local decisions
        self.refused = 0  # ...that were refused as hostile/malformed
        self.lag: float | None = None  # stored -> taken in, of the last row from elsewhere
        self.behind = 0  # rows known to exist past read_seq at the last read
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._down_since: float | None = None
        self._loaded = False  # a fresh node's load of what is in force is done
        self._pruned = float("-inf")  # monotonic time of this node's last prune
        self.pruned = 0  # rows this node removed from the shared log

    @property
    def connected(self) -> bool:
        """Both connections are up (reading and publishing)."""
        return all(self._up.values())

    # -- called by the daemon on the loop's thread, right after the local commit ----------
    def offer(self, decisions: Sequence[Decision], levels: Mapping[Address, Level]) -> None:
        rows = []
        for d in decisions:
            level = levels.get(d.target.network_address) if d.target.num_addresses == 1 else None
            b = to_share(d, level, self.rules)
            if b is not None:
                rows.append((str(d.target), d.action.value, d.until, b, d.reason, d.at))
        if rows:
            dropped = self.outbox.put(rows)
            if dropped:
                log.warning("fleet: outbox full, %d oldest unpublished decisions dropped", dropped)
            self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "node": self.rules.node,
            "connected": self.connected,
            "queued": len(self.outbox),
            "dropped": self.outbox.dropped,
            "published": self.published,
            "received": self.received,
            "accepted": self.accepted,
            "refused": self.refused,
            "read_seq": self.outbox.read_seq,
            "lag": self.lag,
            "behind": self.behind,
        }

    # -- the supervised part --------------------------------------------------------------
    async def run(self, _daemon: object = None) -> None:
        await asyncio.gather(self._listening(), self._publishing())

    async def _retrying(self, what: str, body: Callable[[], Any]) -> None:
        delay = BACKOFF[0]
        while True:
            try:
                await body()
            except (psycopg.Error, OSError) as exc:
                if self._up[what]:
                    delay = BACKOFF[0]  # it was up: start the backoff over
                self._up[what] = False
                if self._down_since is None:
                    self._down_since = self.clock()
                    log.warning(
                        "fleet: shared store unreachable (%s: %s); deciding locally, "
                        "%d decisions queued",
                        what,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc),
                        len(self.outbox),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
            else:
                delay = BACKOFF[0]

    async def _listening(self) -> None:
        async def body() -> None:
            async with await connect(self.info) as conn:
                applied = await migrate(conn)
                if applied:
                    log.info("fleet: shared schema migrated: %s", ", ".join(applied))
                await conn.execute(f"LISTEN {CHANNEL}")  # before reading: nothing slips by
                self._ready.set()
                if self._down_since is not None:
                    log.info(
                        "fleet: shared store back after %.1fs", self.clock() - self._down_since
                    )
                    self._down_since = None
                self._up["listen"] = True
                while True:
                    await self._catch_up(conn)
                    await conn.execute(
                        HEARTBEAT_SQL,
                        (self.rules.node, self.outbox.read_seq, self.lag, len(self.outbox)),
                    )
                    await self.prune(conn)
                    async for _ in conn.notifies(timeout=HEARTBEAT, stop_after=1):
                        pass

        await self._retrying("listen", body)

    async def prune(self, conn: psycopg.AsyncConnection[TupleRow], *, now: bool = False) -> int:
        """Delete shared rows older than ``keep`` (see PRUNE); at most once per
        PRUNE_EVERY unless ``now``. Returns the rows removed."""
        if not now and time.monotonic() - self._pruned < PRUNE_EVERY:
            return 0
        self._pruned = time.monotonic()
        async with conn.transaction():
            got = await (
                await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
            ).fetchone()
            if not (got and got[0]):
                return 0  # another node is pruning right now
            cur = await conn.execute(PRUNE, (self.keep,))
        if cur.rowcount > 0:
            self.pruned += cur.rowcount
            log.info("fleet: pruned %d shared rows older than %.0fs", cur.rowcount, self.keep)
        return max(0, cur.rowcount)

    async def _load_in_force(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM fleet_decisions")
            top = await cur.fetchone()
            upto = int(top[0]) if top else 0
            cur = await conn.execute(IN_FORCE, (upto,))
            rows = await cur.fetchall()
        taken = self._take(rows)
        self.outbox.read_seq = upto
        log.info("fleet: fresh node: %d shared decisions in force taken (seq %d)", taken, upto)

    async def _catch_up(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        if self.outbox.read_seq == 0 and not self._loaded:
            await self._load_in_force(conn)
            self._loaded = True
        for _ in range(10_000):  # bounded: 5M rows per wake-up at most
            cur = await conn.execute(READ, (self.outbox.read_seq, BATCH))
            rows = await cur.fetchall()
            if not rows:
                self.behind = 0
                return
            self._take(rows)
            self.outbox.read_seq = int(rows[-1][0])
            self.behind = len(rows) if len(rows) == BATCH else 0
            if len(rows) < BATCH:
                return

    def _take(self, rows: list[TupleRow]) -> int:
        """Judge shared rows (others' only; each target's last) and deliver the accepted."""
        now = self.clock()
        theirs: list[Row] = []
        for r in rows:
            if r[1] == self.rules.node:
                continue
            theirs.append(Row(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]))
            self.lag = max(0.0, now - float(r[8]))
        self.received += len(theirs)
        accepted: list[Decision] = []
        for row in latest(theirs):
            verdict = judge(row, self.rules, now)
            if isinstance(verdict, Refused):
                self.refused += 1
                log.warning("%s", verdict.line())
            elif verdict is not None:
                accepted.append(verdict)
        if accepted:
            self.accepted += len(accepted)
            self.deliver(accepted)
        return len(accepted)

    async def _publishing(self) -> None:
        await self._ready.wait()  # the listener has migrated the schema

        async def body() -> None:
            async with await connect(self.info) as conn:
                self._up["publish"] = True
                while True:
                    self._wake.clear()
                    batch = self.outbox.peek(BATCH)
                    if not batch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), HEARTBEAT)
                        continue
                    node = self.rules.node
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
                        async with conn.cursor() as cur:
                            await cur.executemany(
                                INSERT,
                                [_values(node, p) for p in batch],
                            )
                    self.outbox.done(batch[-1].id)
                    self.published += len(batch)

        await self._retrying("publish", body)
