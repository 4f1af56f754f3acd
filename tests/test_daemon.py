"""The daemon's core through its real control socket.

The firewall side is a recording enforcer here: it stands in for the firewall backends
(tested for real in tests/firewall) so these tests check what the daemon asks for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipdeflect.config import Config
from sipdeflect.control import ControlClient, ControlError
from sipdeflect.daemon import Daemon
from sipdeflect.decisions import Action, Decision, Level, parse_target
from sipdeflect.engine import address
from sipdeflect.firewall.model import Listed, SetName
from sipdeflect.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(60)


class Ledger:
    def __init__(self) -> None:
        self.enforced: list[Decision] = []
        self.reconciled: list[list[Decision]] = []
        self.drops: list[Listed] = []  # what counters() reports, as a kernel would
        self.reads = 0

    def counters(self) -> list[Listed]:
        self.reads += 1
        return list(self.drops)

    def enforce(self, decisions: Any) -> None:
        self.enforced += decisions

    def reconcile(self, active: Any) -> None:
        self.reconciled.append(list(active))


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def _config(tmp: Path) -> Config:
    return Config.model_validate(
        {
            "control": {"socket": str(tmp / "run" / "ctl.sock")},
            "metrics": {"listen": "127.0.0.1:0"},
            "store": {"path": str(tmp / "state.db")},
            "allow": {"addresses": ["198.51.100.0/24"]},
        }
    )


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            task = asyncio.create_task(self.daemon.run(handle_signals=False))
            while not self.daemon.control.path.exists():
                await asyncio.sleep(0.01)
            self.ready.set()
            await task

        self.loop.run_until_complete(main())

    def call(self, fn: Any, *args: Any) -> Any:
        fut = asyncio.run_coroutine_threadsafe(_wrap(fn, *args), self.loop)
        return fut.result(10)

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.daemon.stop)
        self.thread.join(10)


async def _wrap(fn: Any, *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Config, Ledger, Clock]:
    return _config(tmp_path), Ledger(), Clock()


def test_detection_to_block_and_control(parts: tuple[Config, Ledger, Clock]) -> None:
    cfg, ledger, clock = parts
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), own=[address("192.0.2.10")], clock=clock)
    atk = address("203.0.113.66")
    with Running(d) as r:
        c = ControlClient(cfg.control.socket)
        out = r.call(d.signal, atk, Level.ATTACKER, "svcrack: 3 failed auths after challenge")
        assert [x.action for x in out] == [Action.DEFLECT]
        d.wait_firewall()  # applied on the firewall thread, after the store commit
        assert [x.action for x in ledger.enforced] == [Action.DEFLECT]
        clock.now += 20  # the scanner went quiet in the decoy
        r.call(d.tick)
        d.wait_firewall()
        assert [x.action for x in ledger.enforced] == [Action.DEFLECT, Action.BLOCK]
        st = c.call("status")
        assert st["sources"]["blocked"] == 1
        assert st["active"] == {"deflect": 0, "block": 1, "allow": 1}
        shown = c.call("show", address="203.0.113.66")
        assert shown["source"]["state"] == "blocked"
        assert [h["action"] for h in shown["history"]] == ["deflect", "block"]
        # Manual commands: refused for own and allowlisted targets, with nothing changed.
        for target in ("192.0.2.10", "198.51.100.9"):
            with pytest.raises(ControlError, match="refusing"):
                c.call("block", target=target)
        got = c.call("deflect", target="203.0.113.0/28", duration="10m")
        assert got["decisions"][0]["remaining"] == 600
        listed = {(x["target"], x["action"]) for x in c.call("list")["decisions"]}
        assert ("203.0.113.66/32", "block") in listed
        assert ("203.0.113.0/28", "deflect") in listed
        with pytest.raises(ControlError, match="not an IP"):
            c.call("block", target="pbx.example")
        # Metrics, read back over HTTP and parsed with prometheus_client's own parser.
        assert d.metrics.address is not None
        port = d.metrics.address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        assert (
            samples[("sipdeflect_decisions_total", (("action", "deflect"), ("origin", "engine")))]
            == 1
        )
        assert (
            samples[("sipdeflect_decisions_total", (("action", "deflect"), ("origin", "cli")))] == 1
        )
        assert samples[("sipdeflect_sources_quit_total", ())] == 1
        assert samples[("sipdeflect_active_elements", (("set", "block"),))] == 1
        assert samples[("sipdeflect_active_elements", (("set", "deflect"),))] == 1
        # The CLI over the same socket: JSON for scripts, readable text for people.
        cli = [sys.executable, "-m", "sipdeflect"]
        sock = ["--socket", cfg.control.socket]
        res = subprocess.run([*cli, "status", *sock, "--json"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["sources"]["blocked"] == 1
        res = subprocess.run([*cli, "show", "203.0.113.66", *sock], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "state blocked" in res.stdout
        assert "svcrack: 3 failed auths after challenge" in res.stdout
        res = subprocess.run(
            [*cli, "status", "--socket", "/nonexistent/x.sock"], capture_output=True, text=True
        )
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1
        assert "not reachable" in res.stderr


def test_restart_restores_and_reconciles_without_duplicates(
    parts: tuple[Config, Ledger, Clock],
) -> None:
    cfg, ledger, clock = parts
    d1 = Daemon(cfg, ledger, SqliteStore(cfg.store.path), clock=clock)
    atk = address("203.0.113.66")
    d1.signal(atk, Level.ATTACKER, "flood")
    manual = d1.engine.manual_decision(
        Action.BLOCK, parse_target("203.0.113.78"), clock.now, duration=3600
    )
    d1.store.commit(manual, [])
    # A decision the engine made but that never reached the store must not come back.
    d1.engine.manual_decision(Action.BLOCK, parse_target("203.0.113.77"), clock.now)
    d1.store.close()  # as if killed: nothing else is written on the way out

    ledger2 = Ledger()
    d2 = Daemon(cfg, ledger2, SqliteStore(cfg.store.path), clock=clock)
    d2.restore()
    (active,) = ledger2.reconciled
    got = sorted((str(x.target), x.action.value) for x in active)
    # What was durable, plus the config allowlist (the kernel allow set holds it too).
    assert got == [
        ("198.51.100.0/24", "allow"),
        ("203.0.113.66/32", "deflect"),
        ("203.0.113.78/32", "block"),
    ]

    assert len(got) == len(set(got))


def test_dry_run_decides_but_never_enforces(parts: tuple[Config, Ledger, Clock]) -> None:
    cfg, ledger, clock = parts
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), clock=clock, dry_run=True)
    out = d.signal(address("203.0.113.66"), Level.ATTACKER, "x")
    assert [x.action for x in out] == [Action.DEFLECT]
    d.restore()
    d.wait_firewall()
    assert ledger.enforced == []
    assert ledger.reconciled == []


def test_retention_is_applied_by_the_tick(parts: tuple[Config, Ledger, Clock]) -> None:
    cfg, ledger, clock = parts
    cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"retention": 3600.0})})
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), clock=clock)
    d.store.record_event(clock.now - 7200, "203.0.113.9", "sip", "old")
    d.store.record_event(clock.now, "203.0.113.9", "sip", "new")
    d.tick()
    assert [e.detail for e in d.store.events("203.0.113.9")] == ["new"]


def test_traffic_accounting_from_wire_decoy_and_firewall_counters(
    parts: tuple[Config, Ledger, Clock],
) -> None:
    """What reached the PBX (wire rows), the decoy and the block set's counters all end up
    in the store's traffic history and the metrics; the host's own address is no source."""
    cfg, ledger, clock = parts
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), own=[address("192.0.2.10")], clock=clock)
    atk = address("203.0.113.66")
    net = parse_target("203.0.113.66")
    with Running(d) as r:
        t0 = clock.now
        r.call(
            d.account,
            [
                ("203.0.113.66", t0, "pbx", 3, 1200, 2),
                ("192.0.2.10", t0, "pbx", 9, 900, 0),  # the PBX to its trunk: not a source
            ],
        )
        r.call(d.signal, atk, Level.ATTACKER, "svcrack")
        assert atk.packed in d.diverted  # the wire capture now skips it
        clock.now += 20
        r.call(d.tick)  # quiet in the decoy: blocked
        d.wait_firewall()
        assert atk.packed in d.diverted
        d.wait_counters()  # the first reading (at start) was the baseline: nothing in it
        assert ledger.reads >= 1
        reads = ledger.reads
        ledger.drops = [Listed(SetName.BLOCK, net, packets=5, bytes=500)]
        clock.now += cfg.store.counters_every
        r.call(d.tick)
        d.wait_counters()
        assert ledger.reads == reads + 1
        ledger.drops = [Listed(SetName.BLOCK, net, packets=12, bytes=1200)]
        r.call(d.tick)  # too soon: no second reading
        d.wait_counters()
        assert ledger.reads == reads + 1
        clock.now += cfg.store.counters_every
        r.call(d.tick)
        d.wait_counters()
        r.call(d.tick)  # the reading hops back to the loop, then the tick writes it
        assert ledger.reads == reads + 2
        rows = d.store.traffic()
        by_place: dict[str, list[int]] = {}
        for row in rows:
            assert row.source == "203.0.113.66"
            acc = by_place.setdefault(row.place, [0, 0, 0])
            acc[0] += row.packets
            acc[1] += row.bytes
            acc[2] += row.replies
        assert by_place == {"pbx": [3, 1200, 2], "dropped": [12, 1200, 0]}
        assert d.metrics.dropped_packets._value.get() == 12
        assert d.metrics.dropped_bytes._value.get() == 1200
        # Released by hand: no longer diverted, so the wire counts it again.
        ControlClient(cfg.control.socket).call("release", target="203.0.113.66")
        assert atk.packed not in d.diverted


def test_a_restart_does_not_count_old_drops_again(parts: tuple[Config, Ledger, Clock]) -> None:
    """The kernel's counters survive a restart; what they held then was accounted by the
    previous run, so the first reading is only a baseline."""
    cfg, ledger, clock = parts
    net = parse_target("203.0.113.66")
    ledger.drops = [Listed(SetName.BLOCK, net, packets=100, bytes=10_000)]
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), clock=clock)
    with Running(d) as r:
        d.wait_counters()
        r.call(d.tick)
        assert ledger.reads >= 1
        ledger.drops = [Listed(SetName.BLOCK, net, packets=103, bytes=10_300)]
        clock.now += cfg.store.counters_every
        r.call(d.tick)
        d.wait_counters()
        r.call(d.tick)
    dropped = [(t.packets, t.bytes) for t in d.store.traffic() if t.place == "dropped"]
    assert dropped == [(3, 300)]
