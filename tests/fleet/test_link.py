"""FleetLink against a real PostgreSQL (no namespaces): publish, push, catch-up after an
outage without duplicates or resurrected releases, hostile rows refused, a fresh node
loading what is in force, idempotent migrations. Each node's received decisions go into a
real Engine, whose active() is what that node's firewall would hold."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from sipdeflect.decisions import Action, Decision, Level, single
from sipdeflect.engine import Engine
from sipdeflect.fleet.link import FleetLink
from sipdeflect.fleet.outbox import Outbox
from sipdeflect.fleet.rules import Rules
from sipdeflect.fleet.schema import migrate
from sipdeflect.lab.postgres import Postgres

pytestmark = pytest.mark.timeout(120)


class Node:
    def __init__(self, name: str, pg: Postgres, tmp: Path) -> None:
        self.engine = Engine()
        self.got: list[Decision] = []
        self.link = FleetLink(pg.dsn, Rules(node=name), Outbox(tmp / f"{name}.db"), self.deliver)

    def deliver(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.got += self.engine.remote_decision(d, time.time())

    def blocked(self) -> set[str]:
        return {str(d.target) for d in self.engine.active() if d.action is Action.BLOCK}

    def decide(self, action: Action, addr: str, reason: str = "quiet: went quiet") -> None:
        now = time.time()
        until = None if action is Action.RELEASE else now + 3600
        d = Decision(single(ipaddress.ip_address(addr)), action, until, "engine", reason, now)
        self.link.offer([d], {d.target.network_address: Level.ATTACKER})


async def until(cond: Callable[[], bool], seconds: float = 15.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def run_nodes(pg: Postgres, tmp: Path, names: list[str], body: Callable[..., object]) -> None:
    async def main() -> None:
        nodes = [Node(n, pg, tmp) for n in names]
        tasks = [asyncio.create_task(n.link.run()) for n in nodes]
        try:
            await body(*nodes)  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    asyncio.run(main())


def rows_for(pg: Postgres, target: str) -> list[tuple[str, str]]:
    with psycopg.connect(pg.dsn) as c:
        cur = c.execute(
            "SELECT node, action FROM fleet_decisions WHERE target = %s ORDER BY seq", (target,)
        )
        return [(str(n), str(a)) for n, a in cur.fetchall()]


def test_a_block_reaches_the_others_once_and_its_release_follows(
    pg: Postgres, tmp_path: Path
) -> None:
    async def body(n1: Node, n2: Node, n3: Node) -> None:
        assert await until(lambda: n1.link.connected and n2.link.connected and n3.link.connected)
        n1.decide(Action.BLOCK, "203.0.113.10")
        assert await until(lambda: "203.0.113.10/32" in n2.blocked() & n3.blocked())
        assert "203.0.113.10/32" not in n1.blocked()  # its own row is not taken back in
        n1.decide(Action.RELEASE, "203.0.113.10", "expired: block expired")
        assert await until(lambda: not n2.blocked() and not n3.blocked())
        assert [d.action for d in n2.got] == [Action.BLOCK, Action.RELEASE]
        assert n2.got[0].origin == "fleet:n1"

    run_nodes(pg, tmp_path, ["n1", "n2", "n3"], body)
    assert rows_for(pg, "203.0.113.10/32") == [("n1", "block"), ("n1", "release")]


def test_outage_queues_then_delivers_once_and_a_release_made_meanwhile_stays(
    pg: Postgres, tmp_path: Path
) -> None:
    async def body(n1: Node, n2: Node) -> None:
        assert await until(lambda: n1.link.connected and n2.link.connected)
        n1.decide(Action.BLOCK, "203.0.113.20")
        assert await until(lambda: "203.0.113.20/32" in n2.blocked())
        await asyncio.to_thread(pg.kill)
        assert await until(lambda: not n1.link.connected and not n2.link.connected)
        n1.decide(Action.BLOCK, "203.0.113.21")  # decided during the outage: queued
        n1.decide(Action.RELEASE, "203.0.113.20", "cli: released by operator")
        assert len(n1.link.outbox) == 2
        assert "203.0.113.20/32" in n2.blocked()  # n2 keeps what it had
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg.start)
        assert await until(lambda: "203.0.113.21/32" in n2.blocked(), 30)
        assert await until(lambda: "203.0.113.20/32" not in n2.blocked())
        assert await until(lambda: len(n1.link.outbox) == 0)
        await asyncio.sleep(2.5)  # a heartbeat and another catch-up: nothing comes twice
        assert [str(d.target) for d in n2.got].count("203.0.113.21/32") == 1
        assert n2.blocked() == {"203.0.113.21/32"}

    run_nodes(pg, tmp_path, ["o1", "o2"], body)
    assert rows_for(pg, "203.0.113.21/32") == [("o1", "block")]
    assert rows_for(pg, "203.0.113.20/32") == [("o1", "block"), ("o1", "release")]


def test_hostile_rows_are_refused_with_a_log_line(
    pg: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = [
        ("0.0.0.0/0", time.time() + 60),
        ("203.0.113.300", time.time() + 60),
        ("203.0.113.30/32", time.time() + 100 * 365 * 86400),
    ]

    async def body(h: Node) -> None:
        assert await until(lambda: h.link.connected)
        with psycopg.connect(pg.dsn, autocommit=True) as c:
            for i, (target, until_) in enumerate(hostile):
                c.execute(
                    "INSERT INTO fleet_decisions (node, key, target, action, until, basis, "
                    "reason, at) VALUES ('mallory', %s, %s, 'block', %s, 'attacker', 'x', %s)",
                    (f"k{i}", target, until_, time.time()),
                )
        assert await until(lambda: h.link.refused >= 3)
        # (what earlier tests left in force, 203.0.113.21, is loaded; nothing hostile is)
        assert h.blocked() <= {"203.0.113.21/32"}
        assert {str(d.target) for d in h.got} <= {"203.0.113.21/32"}

    with caplog.at_level(logging.WARNING, logger="sipdeflect"):
        run_nodes(pg, tmp_path, ["h1"], body)
    lines = [r.getMessage() for r in caplog.records if "refused row" in r.getMessage()]
    assert any("wider than /24" in ln for ln in lines), lines
    assert any("malformed address" in ln for ln in lines), lines
    assert any("beyond max_ttl" in ln for ln in lines), lines


def test_a_fresh_node_loads_what_is_in_force(pg: Postgres, tmp_path: Path) -> None:
    async def body(f1: Node) -> None:
        # Earlier tests left 203.0.113.21 blocked (by o1) and .10/.20 released.
        assert await until(lambda: "203.0.113.21/32" in f1.blocked())
        assert not {"203.0.113.10/32", "203.0.113.20/32", "203.0.113.30/32"} & f1.blocked()

    run_nodes(pg, tmp_path, ["f1"], body)


def test_migrations_are_idempotent(pg: Postgres) -> None:
    async def twice() -> list[str]:
        async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as c:
            await migrate(c)
            return await migrate(c)

    assert asyncio.run(twice()) == []
    with psycopg.connect(pg.dsn) as c:
        versions = [r[0] for r in c.execute("SELECT version FROM fleet_schema").fetchall()]
    assert versions == [1]


def test_rows_older_than_the_longest_block_are_pruned_and_nothing_else(
    pg: Postgres, tmp_path: Path
) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO fleet_decisions (node, key, target, action, until, basis, reason, at, "
            "stored_at) VALUES ('old', 'k1', '203.0.113.40/32', 'block', 1.0, 'attacker', "
            "'x', 0.5, now() - interval '40 days')"
        )
        before = c.execute("SELECT count(*) FROM fleet_decisions").fetchone()

    async def body(p1: Node) -> None:
        assert p1.link.keep == 31 * 86400.0  # max_ttl (30 d) and a day
        assert await until(lambda: p1.link.pruned >= 1)  # on its first heartbeat
        await asyncio.sleep(0.5)
        assert p1.link.pruned == 1

    run_nodes(pg, tmp_path, ["p1"], body)
    assert rows_for(pg, "203.0.113.40/32") == []
    with psycopg.connect(pg.dsn) as c:
        after = c.execute("SELECT count(*) FROM fleet_decisions").fetchone()
    assert before is not None
    assert after is not None
    assert after[0] == before[0] - 1
