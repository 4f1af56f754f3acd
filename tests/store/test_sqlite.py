"""SQLite store: round trips, engine restore, sampling, retention, and kill -9 durability."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sipdeflect.decisions import Action, Level, parse_target
from sipdeflect.engine import Engine, Policy, State, address
from sipdeflect.store.sqlite import COARSE_AFTER, COARSE_BUCKET, TRAFFIC_BUCKET, SqliteStore

T0 = 1_750_000_000.0
A = address("203.0.113.66")


def test_engine_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    eng = Engine(Policy())
    store = SqliteStore(db)
    out = eng.signal(A, Level.ATTACKER, "svcrack", T0)
    store.commit(out, [eng.sources[A]])
    out = eng.tick(T0 + 100)
    store.commit(out, [eng.sources[A]])
    manual = eng.manual_decision(Action.BLOCK, parse_target("198.51.100.0/28"), T0, duration=600)
    store.commit(manual, [])
    allow = eng.manual_decision(Action.ALLOW, parse_target("192.0.2.77"), T0)
    store.commit(allow, [])
    store.close()

    again = SqliteStore(db)
    eng2 = Engine(Policy())
    eng2.restore(again.load_sources(), again.load_manual())
    assert eng2.sources[A].state is State.BLOCKED
    assert eng2.sources[A].until == eng.sources[A].until
    assert eng2.sources[A].reasons == eng.sources[A].reasons
    assert sorted(map(str, eng2.active())) == sorted(map(str, eng.active()))
    assert [d.action for d in again.history("203.0.113.66")] == [Action.DEFLECT, Action.BLOCK]
    # Released manual decisions disappear from the restored state.
    again.commit(eng2.manual_decision(Action.RELEASE, parse_target("198.51.100.0/28"), T0), [])
    assert [d.target for d in again.load_manual()] == [parse_target("192.0.2.77")]


def test_events_are_sampled_per_source_and_minute(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", events_per_minute=5)
    kept = [store.record_event(T0 + i / 100, "203.0.113.66", "register", "x") for i in range(500)]
    assert sum(kept) == 5
    assert store.record_event(T0 + 61, "203.0.113.66", "register", "next minute")
    assert store.record_event(T0, "203.0.113.67", "register", "another source")
    assert len(store.events("203.0.113.66")) == 6


def test_retention_prunes_history_but_not_current_blocks(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    eng = Engine(Policy(block_base=10 * 86400))
    store.commit(eng.signal(A, Level.ATTACKER, "x", T0), [eng.sources[A]])
    store.commit(eng.tick(T0 + 20), [eng.sources[A]])
    store.record_event(T0, str(A), "register", "old")
    removed = store.prune(T0 + 5 * 86400, retention=86400)
    assert removed == 3  # two decisions, one event
    assert store.load_sources()[0].state is State.BLOCKED


CHILD = textwrap.dedent("""
    import sys, ipaddress
    from sipdeflect.decisions import Level
    from sipdeflect.engine import Engine, Policy
    from sipdeflect.store.sqlite import COARSE_AFTER, COARSE_BUCKET, TRAFFIC_BUCKET, SqliteStore
    store = SqliteStore(sys.argv[1])
    eng = Engine(Policy(max_sources=10**7))
    i = 0
    while i < 10**6:
        addr = ipaddress.ip_address(0xCB007100 + i)
        out = eng.signal(addr, Level.ATTACKER, "flood", 1.0 + i)
        store.commit(out, [eng.sources[addr]])
        print(addr, flush=True)  # reported only after the commit returned
        i += 1
""")


def test_kill_9_loses_no_committed_decision(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported: list[str] = []
    deadline = time.monotonic() + 60
    while len(reported) < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:  # the child exited early: its stderr says why, below
            break
        reported.append(line.strip())
    child.send_signal(signal.SIGKILL)  # mid-stream, wherever it is
    child.wait(30)
    # Read the rest through the same file object: readline() may have buffered lines
    # ahead, which communicate() (reading the descriptor) would never see.
    rest = child.stdout.read()
    err = child.stderr.read() if child.stderr is not None else ""
    reported += [line for line in rest.splitlines() if line]
    assert len(reported) >= 300, err[-2000:]

    store = SqliteStore(db)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    sources = {str(s.address) for s in store.load_sources()}
    assert set(reported) <= sources
    # One deflect per source, never a duplicate.
    n_decisions = store.count_decisions()
    assert n_decisions == len(sources)
    assert len(sources) - len(reported) <= 1  # at most the one in flight when killed


def test_traffic_is_bucketed_and_summed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    rows = [("203.0.113.66", T0 + i, "decoy", 1, 400, 1) for i in range(150)]
    store.account(rows[:70])
    store.account(rows[70:])
    store.account([("203.0.113.66", T0 + 5, "pbx", 3, 1200, 0)])
    got = store.traffic(source="203.0.113.66")
    decoy = [r for r in got if r.place == "decoy"]
    assert sum(r.packets for r in decoy) == 150
    assert sum(r.bytes for r in decoy) == 60_000
    assert all(r.bucket % TRAFFIC_BUCKET == 0 for r in got)
    assert len(decoy) == len({int((T0 + i) // TRAFFIC_BUCKET) for i in range(150)})
    assert [r.packets for r in got if r.place == "pbx"] == [3]
    with pytest.raises(ValueError, match="place must be one of"):
        store.account([("x", T0, "nowhere", 1, 1, 0)])


def test_old_traffic_is_coarsened_not_lost(tmp_path: Path) -> None:
    """After COARSE_AFTER, 10 s rows merge into COARSE_BUCKET rows with the same sums; a
    second pass changes nothing; recent rows keep their resolution."""
    store = SqliteStore(tmp_path / "s.db")
    old = [("203.0.113.66", T0 + i * 7, "pbx", 2, 100, 1) for i in range(200)]  # ~23 min
    new = [("203.0.113.66", T0 + COARSE_AFTER + 4000 + i, "pbx", 1, 10, 0) for i in range(60)]
    store.account(old + new)
    before = store.traffic()
    now = T0 + COARSE_AFTER + 4000 + 60
    removed = store.prune(now, retention=30 * 86400)
    after = store.traffic()
    assert removed == len(before) - len(after) > 0
    olds = [r for r in after if r.bucket < T0 + COARSE_AFTER]
    assert all(r.bucket % COARSE_BUCKET == 0 for r in olds)
    assert len(olds) == len({int((T0 + i * 7) // COARSE_BUCKET) for i in range(200)})
    assert sum(r.packets for r in olds) == 400
    assert sum(r.bytes for r in olds) == 20_000
    assert sum(r.replies for r in olds) == 200
    recent = [r for r in after if r.bucket >= T0 + COARSE_AFTER]
    assert len(recent) == len(
        {int((T0 + COARSE_AFTER + 4000 + i) // TRAFFIC_BUCKET) for i in range(60)}
    )
    assert store.prune(now, retention=30 * 86400) == 0
    assert store.traffic() == after


def test_events_have_a_global_cap_and_are_written_in_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", events_per_minute=5, events_cap=100)
    kept = sum(
        store.record_event(T0 + i / 10_000, f"198.51.{i // 256}.{i % 256}", "flood", "x")
        for i in range(5000)
    )  # 5000 spoofed sources
    assert kept == 100
    assert store.events_dropped == 4900
    count = store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count == 0  # buffered, not yet written
    assert store.flush_events() == 100
    assert len(store.events()) == 100
    assert store.record_event(T0 + 60, "203.0.113.66", "flood", "next minute")


def test_a_store_from_a_newer_sipdeflect_is_refused_not_written(tmp_path: Path) -> None:
    import sqlite3

    from sipdeflect.errors import StoreError
    from sipdeflect.store.sqlite import SCHEMA_VERSION, SqliteStore

    path = tmp_path / "state.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(int(SCHEMA_VERSION) + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer sipdeflect"):
        SqliteStore(path)
    SqliteStore(tmp_path / "other.db").close()  # a fresh one is fine
