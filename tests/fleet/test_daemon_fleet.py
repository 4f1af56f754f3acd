"""The daemon's fleet wiring with a real FleetLink and outbox (not connected: what the
daemon queues, in which order, and what it does with decisions from the fleet). The
firewall is the recording Ledger of tests/test_daemon.py."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from sipdeflect.config import Config
from sipdeflect.daemon import Daemon
from sipdeflect.decisions import Action, Decision, Level, single
from sipdeflect.detect.events import Event, EventKind
from sipdeflect.fleet.link import FleetLink
from sipdeflect.fleet.outbox import Outbox
from sipdeflect.fleet.rules import Row, judge
from sipdeflect.store.sqlite import SqliteStore
from tests.test_daemon import Clock, Ledger

SCANNER = ipaddress.ip_address("203.0.113.66")
CUSTOMER = ipaddress.ip_address("198.51.100.20")
TRUSTED = ipaddress.ip_address("192.0.2.50")


LINK_RULES = Config.model_validate(
    {"fleet": {"enabled": True, "dsn": "dbname=x", "node": "me"}}
).fleet.rules("me")


def build(tmp: Path) -> tuple[Daemon, FleetLink, Ledger, Clock]:
    cfg = Config.model_validate(
        {
            "control": {"socket": str(tmp / "run" / "ctl.sock")},
            "store": {"path": str(tmp / "state.db")},
            "allow": {"addresses": [str(CUSTOMER)]},
            "fleet": {"enabled": True, "dsn": "host=/nonexistent dbname=x", "node": "me"},
        }
    )
    ledger, clock = Ledger(), Clock()
    d = Daemon(cfg, ledger, SqliteStore(cfg.store.path), own=[], dry_run=False, clock=clock)
    link = FleetLink(cfg.fleet.dsn, cfg.fleet.rules("me"), Outbox(tmp / "fleet.db"), print)
    d.fleet = link
    return d, link, ledger, clock


def shared(addr: ipaddress.IPv4Address, now: float, action: str = "block") -> Decision:
    until = None if action == "release" else now + 600
    got = judge(Row(1, "pbx1", f"{addr}/32", action, until, "attacker", "r", now), LINK_RULES, now)
    assert isinstance(got, Decision)
    return got


def test_the_daemon_queues_proven_decisions_after_the_local_commit(tmp_path: Path) -> None:
    d, link, _, clock = build(tmp_path)
    d.signal(SCANNER, Level.ATTACKER, "a failed login after a challenge")
    d.probe(ipaddress.ip_address("203.0.113.70"), "forgeable")  # a probe: stays local
    assert d.store.count_decisions() == 2  # both committed locally...
    queued = link.outbox.peek(10)
    assert [(p.target, p.action, p.basis) for p in queued] == [
        ("203.0.113.66/32", "deflect", "attacker")
    ]  # ...only the proven one is queued for the fleet
    clock.now += 20  # quiet in the decoy: blocked, and the block is queued after it
    d.tick()
    assert [p.action for p in link.outbox.peek(10)] == ["deflect", "block"]


def test_fleet_decisions_go_through_the_engine_and_local_protection_wins(
    tmp_path: Path,
) -> None:
    d, link, ledger, clock = build(tmp_path)
    now = clock.now
    # A customer whose login the PBX accepted is shielded here (not allowlisted).
    ok = Event(
        dt.datetime.fromtimestamp(now, dt.UTC),
        EventKind.AUTH_SUCCEEDED,
        TRUSTED,
        5060,
        "1001",
        "kamailio",
        "login accepted",
        verified=True,
    )
    d.event(ok)
    taken = d.fleet_decisions([shared(SCANNER, now), shared(CUSTOMER, now), shared(TRUSTED, now)])
    assert [(str(x.target), x.action) for x in taken] == [("203.0.113.66/32", Action.BLOCK)]
    d.wait_firewall()
    assert [x.target for x in ledger.enforced] == [single(SCANNER)]
    assert link.outbox.peek(10) == []  # never republished
    story = d.store.history(str(SCANNER))
    assert [(h.action, h.origin) for h in story] == [(Action.BLOCK, "fleet:pbx1")]
    # Its release undoes it; and it lapses by itself too (same until as the publisher's).
    assert [x.action for x in d.fleet_decisions([shared(SCANNER, now, "release")])] == [
        Action.RELEASE
    ]
    d.fleet_decisions([shared(SCANNER, now)])
    clock.now += 601
    assert [(x.action, x.origin) for x in d.tick()] == [(Action.RELEASE, "fleet:pbx1")]
    assert link.outbox.peek(10) == []


def test_fleet_status_and_lag_are_in_status_and_metrics(tmp_path: Path) -> None:
    d, link, _, _ = build(tmp_path)
    link.lag = 0.25
    d.tick()
    assert d.metrics.registry.get_sample_value("sipdeflect_fleet_lag_seconds") == 0.25
    assert d.fleet is not None
    assert d.fleet.status()["node"] == "me"


def last_for(ledger: Ledger, addr: ipaddress.IPv4Address) -> Decision:
    return [x for x in ledger.enforced if x.target == single(addr)][-1]


def test_a_fleet_release_leaves_the_engines_own_block_in_the_firewall(tmp_path: Path) -> None:
    d, _, ledger, clock = build(tmp_path)
    d.signal(SCANNER, Level.ATTACKER, "a failed login after a challenge")  # deflected here
    d.fleet_decisions([shared(SCANNER, clock.now)])  # and pbx1 says block
    clock.now += 20
    d.tick()  # quiet in the decoy: the engine's own block
    d.fleet_decisions([shared(SCANNER, clock.now, "release")])  # pbx1 lets it go
    d.wait_firewall()
    last = last_for(ledger, SCANNER)
    assert (last.action, last.origin) == (Action.BLOCK, "engine")  # still blocked here


def test_a_local_probe_does_not_downgrade_a_fleet_block_to_a_deflect(tmp_path: Path) -> None:
    d, _, ledger, clock = build(tmp_path)
    d.fleet_decisions([shared(SCANNER, clock.now)])
    d.probe(SCANNER, "forgeable")  # the engine probes (deflects) it on its own evidence
    clock.now += 60
    d.tick()  # the probe ends: released by the engine
    d.wait_firewall()
    last = last_for(ledger, SCANNER)
    assert (last.action, last.origin) == (Action.BLOCK, "fleet:pbx1")
