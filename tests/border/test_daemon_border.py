"""The daemon's border wiring, without a network: a real Announcer whose ExaBGP is not
started (starting it would open a BGP session; the namespace lab test does that), so the
lines it would send go nowhere and what we check is the border's own state and status.
The firewall side is the daemon tests' Ledger (tests/test_daemon.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sipdeflect.border.announcer import Announcer
from sipdeflect.config import Config
from sipdeflect.daemon import Daemon
from sipdeflect.decisions import Level
from sipdeflect.engine import address
from sipdeflect.store.sqlite import SqliteStore
from tests.test_daemon import Clock, Ledger

SCANNER = "203.0.113.66"


def _config(tmp: Path, allow: list[str]) -> Config:
    return Config.model_validate(
        {
            "control": {"socket": str(tmp / "run" / "ctl.sock")},
            "store": {"path": str(tmp / "state.db")},
            "allow": {"addresses": allow},
            "policy": {"quiet_after": "5s"},
            "border": {
                "enabled": True,
                "peer": "192.0.2.2",
                "peer_as": 64513,
                "local_address": "192.0.2.1",
                "local_as": 64512,
                "workdir": str(tmp / "border"),
            },
        }
    )


def test_a_quiet_scanner_is_announced_and_a_reload_that_allowlists_it_withdraws(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path, [])
    clock = Clock()
    announcer = Announcer(cfg)
    d = Daemon(cfg, Ledger(), SqliteStore(cfg.store.path), clock=clock, border=announcer)
    d.restore()
    d.signal(address(SCANNER), Level.ATTACKER, "failed login logged by the PBX")
    d.wait_firewall()
    assert announcer.border.announced == {}  # deflected: the decoy needs its packets
    clock.now += 6
    d.tick()
    d.wait_firewall()
    assert [str(t) for t in announcer.border.announced] == [f"{SCANNER}/32"]
    status = asyncio.run(d._border({}))
    assert status["announced"][0]["evidence"] == "quiet"
    assert status["running"] is False  # (its speaker was never started here)

    d.reload(_config(tmp_path, ["203.0.113.0/24"]))
    d.wait_firewall()
    assert announcer.border.announced == {}


def test_restart_rebuilds_the_announcements_from_the_store(tmp_path: Path) -> None:
    cfg = _config(tmp_path, [])
    clock = Clock()
    first = Daemon(cfg, Ledger(), SqliteStore(cfg.store.path), clock=clock)
    first.restore()
    first.signal(address(SCANNER), Level.ATTACKER, "failed login logged by the PBX")
    clock.now += 6
    first.tick()
    first.wait_firewall()
    first.store.close()
    announcer = Announcer(cfg)
    second = Daemon(cfg, Ledger(), SqliteStore(cfg.store.path), clock=clock, border=announcer)
    second.restore()
    assert [str(t) for t in announcer.border.announced] == [f"{SCANNER}/32"]
