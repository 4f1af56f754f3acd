# Versioned, idempotent schema migrations for the shared store: plain numbered SQL files
# (migrations/NNN_name.sql), each applied once in its own transaction and recorded in
# fleet_schema; an advisory lock makes nodes starting together take turns. Each file is
# written to be re-runnable as well (IF NOT EXISTS), so a half-known state converges.
from __future__ import annotations

from importlib import resources

import psycopg
from psycopg.rows import TupleRow

MIGRATION_LOCK = 0x5D_F1_EE_70  # pg_advisory_xact_lock key for migrations


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migrations/NNN_*.sql, in version order."""
    out = []
    for entry in resources.files("sipdeflect.fleet").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), name, entry.read_text()))
    return sorted(out)


async def migrate(conn: psycopg.AsyncConnection[TupleRow]) -> list[str]:
    """Bring the shared schema up to date; returns the names of the files applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS fleet_schema (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM fleet_schema")
        have = {int(r[0]) for r in await cur.fetchall()}
        for version, name, sql in migrations():
            if version in have:
                continue
            await conn.execute(sql.encode())
            await conn.execute(
                "INSERT INTO fleet_schema (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(name)
    return applied
