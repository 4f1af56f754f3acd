# `sipdeflect fleet status`, read straight from the shared store (no daemon needed): every
# node that heartbeats or published, when it was last seen, how far behind the shared
# sequence it reads, its last lag, what it has queued and what it contributed.
from __future__ import annotations

from typing import Any

import psycopg

NODES = (
    "SELECT node, extract(epoch FROM last_seen)::float8, read_seq, lag_seconds, queued "
    "FROM fleet_nodes"
)
CONTRIBUTED = "SELECT node, action, count(*) FROM fleet_decisions GROUP BY node, action"


def fleet_status(info: str) -> dict[str, Any]:
    with psycopg.connect(info, connect_timeout=5) as conn:
        top = conn.execute("SELECT coalesce(max(seq), 0) FROM fleet_decisions").fetchone()
        now = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
        seq = int(top[0]) if top else 0
        nodes: dict[str, dict[str, Any]] = {}
        for node, seen, read, lag, queued in conn.execute(NODES).fetchall():
            nodes[node] = {
                "node": node,
                "last_seen": seen,
                "read_seq": int(read),
                "behind": max(0, seq - int(read)),
                "lag": lag,
                "queued": int(queued),
                "contributed": {},
            }
        for node, action, n in conn.execute(CONTRIBUTED).fetchall():
            entry = nodes.setdefault(
                node,
                {
                    "node": node,
                    "last_seen": None,
                    "read_seq": None,
                    "behind": None,
                    "lag": None,
                    "queued": None,
                    "contributed": {},
                },
            )
            entry["contributed"][action] = int(n)
    return {
        "seq": seq,
        "now": now[0] if now else None,
        "nodes": [nodes[k] for k in sorted(nodes)],
    }
