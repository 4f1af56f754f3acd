"""The engine as a pure state machine: time is a parameter, so nothing here sleeps."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from sipdeflect.decisions import Action, Level, parse_target
from sipdeflect.engine import TRANSITIONS, Engine, Policy, State, Trigger, address
from sipdeflect.errors import UsageError

A = address("203.0.113.66")
T0 = 1_750_000_000.0


def test_full_story_of_one_scanner() -> None:
    p = Policy()
    eng = Engine(p)
    assert eng.signal(A, Level.SUSPECT, "scanner user-agent", T0) == []
    (d,) = eng.signal(A, Level.ATTACKER, "3 failed auths after challenge", T0 + 1)
    assert (d.action, d.target, d.origin) == (Action.DEFLECT, ipaddress.ip_network(A), "engine")
    assert d.until == T0 + 1 + p.deflect_ttl()
    # The decoy keeps hearing it for a while: no block yet.
    for t in range(2, 10):
        eng.decoy_seen(A, T0 + t)
        assert eng.tick(T0 + t) == []
    # Then it gives up: quiet_after later it is blocked for about block_base.
    (b,) = eng.tick(T0 + 9 + p.quiet_after)
    assert b.action is Action.BLOCK
    assert b.until is not None
    ttl = b.until - b.at
    assert p.block_base * (1 - p.spread) <= ttl <= p.block_base * (1 + p.spread)
    assert eng.sources[A].state is State.BLOCKED
    assert eng.tick(b.until - 1) == []
    (r,) = eng.tick(b.until)
    assert r.action is Action.RELEASE
    # Second offence: deflected again, and the next block is block_factor times longer.
    (d2,) = eng.signal(A, Level.ATTACKER, "again", b.until + 100)
    assert d2.action is Action.DEFLECT
    (b2,) = eng.tick(b.until + 100 + p.quiet_after)
    assert b2.until is not None
    ttl2 = b2.until - b2.at
    base2 = p.block_base * p.block_factor
    assert base2 * (1 - p.spread) <= ttl2 <= base2 * (1 + p.spread)


def test_a_scanner_that_never_stops_is_blocked_after_max_deflect() -> None:
    p = Policy(quiet_after=10, max_deflect=60)
    eng = Engine(p)
    eng.signal(A, Level.ATTACKER, "flood", T0)
    out = []
    t = T0
    while not out and t < T0 + 1000:
        t += 1
        eng.decoy_seen(A, t)
        out = eng.tick(t)
    assert [d.action for d in out] == [Action.BLOCK]
    assert t == T0 + 60
    assert "kept sending" in out[0].reason


def test_below_threshold_only_watches() -> None:
    eng = Engine()
    for lvl in (Level.WATCH, Level.SUSPECT):
        assert eng.signal(A, lvl, "x", T0) == []
    assert eng.sources[A].state is State.WATCHED
    assert eng.sources[A].level is Level.SUSPECT
    assert list(eng.active()) == []


@pytest.mark.parametrize(
    "who",
    ["192.0.2.10", "198.51.100.7", "127.0.0.1", "::1", "224.0.0.1", "0.0.0.0", "2001:db8:1::5"],
)
def test_protected_addresses_are_never_acted_on(who: str) -> None:
    eng = Engine(
        allow=[parse_target("198.51.100.0/24"), parse_target("2001:db8:1::/48")],
        own=[address("192.0.2.10")],
    )
    assert eng.signal(address(who), Level.ATTACKER, "forged", T0) == []
    assert eng.tick(T0 + 10_000) == []
    assert [d for d in eng.active() if d.action is not Action.ALLOW] == []


def test_manual_decisions_refuse_protected_targets_and_change_nothing() -> None:
    eng = Engine(allow=[parse_target("198.51.100.0/24")], own=[address("192.0.2.10")])
    before = list(eng.active())
    for target in ("198.51.100.7", "198.51.0.0/16", "192.0.2.0/24"):
        with pytest.raises(UsageError, match="refusing"):
            eng.manual_decision(Action.BLOCK, parse_target(target), T0)
    assert list(eng.active()) == before
    with pytest.raises(UsageError, match="wider than"):
        parse_target("0.0.0.0/0")
    with pytest.raises(UsageError, match="not an IP"):
        parse_target("example.com")


def test_manual_block_expires_and_allow_releases_engine_state() -> None:
    eng = Engine()
    (d,) = eng.manual_decision(Action.BLOCK, parse_target("203.0.113.0/28"), T0, duration=60)
    assert d.until == T0 + 60
    assert any(x.action is Action.BLOCK for x in eng.active())
    (r,) = eng.tick(T0 + 60)
    assert (r.action, r.target) == (Action.RELEASE, parse_target("203.0.113.0/28"))
    eng.signal(A, Level.ATTACKER, "x", T0)
    out = eng.manual_decision(Action.ALLOW, parse_target("203.0.113.66"), T0 + 1)
    assert [x.action for x in out] == [Action.ALLOW, Action.RELEASE]
    assert eng.signal(A, Level.ATTACKER, "again", T0 + 2) == []


def test_mass_bans_do_not_lapse_together() -> None:
    p = Policy()
    eng = Engine(p)
    n = 10_000
    for i in range(n):
        eng.signal(ipaddress.ip_address(0xCB007100 + i * 7919 % 2**16), Level.ATTACKER, "x", T0)
    blocks = [d for d in eng.tick(T0 + p.quiet_after) if d.action is Action.BLOCK]
    assert len(blocks) == n
    # 40 buckets across +-spread: a uniform spread puts n/40 in each; none gets twice that.
    lo = p.block_base * (1 - p.spread)
    width = 2 * p.spread * p.block_base / 40
    buckets = Counter(int((d.until - d.at - lo) // width) for d in blocks if d.until)
    assert set(buckets) <= set(range(41))
    assert max(buckets.values()) < 2 * n / 40


def test_memory_is_bounded_and_never_forgets_active_sources() -> None:
    p = Policy(max_sources=1000)
    eng = Engine(p)
    eng.signal(A, Level.ATTACKER, "real attacker", T0)
    for i in range(50_000):  # a spoofed flood of distinct sources, each seen once
        eng.signal(ipaddress.ip_address(0xC6336400 + i), Level.WATCH, "spoofed", T0 + i / 1000)
    assert len(eng.sources) <= p.max_sources
    assert eng.sources[A].state is State.DEFLECTED


def test_transition_table_is_the_only_path() -> None:
    # Every (state, trigger) pair not in the table leaves the source unchanged.
    eng = Engine()
    eng.signal(A, Level.ATTACKER, "x", T0)
    assert (State.DEFLECTED, Trigger.DETECTED) not in TRANSITIONS
    assert eng.signal(A, Level.ATTACKER, "again", T0 + 1) == []
    assert eng.sources[A].offences == 1


def test_a_probe_that_quits_on_the_decoys_answer_is_blocked() -> None:
    """The write-up's flooder on forgeable evidence: deflected briefly; it gets its 200 from
    the decoy and stops, which only the real sender can do: blocked."""
    p = Policy()
    eng = Engine(p)
    (d,) = eng.probe(A, "forgeable evidence", T0)
    assert d.action is Action.DEFLECT
    assert d.until is not None
    assert d.until - T0 < p.deflect_ttl()  # a short deflect, not an offence yet
    assert eng.sources[A].state is State.PROBING
    assert eng.sources[A].offences == 0
    eng.decoy_seen(A, T0 + 0.1)  # its REGISTER gets the decoy's 401
    eng.decoy_seen(A, T0 + 0.12, closes=True)  # the repeat gets the 200 it wanted
    assert eng.tick(T0 + 0.12 + p.probe_quiet - 0.01) == []
    (b,) = eng.tick(T0 + 0.12 + p.probe_quiet)
    assert b.action is Action.BLOCK
    assert b.reason.startswith("quit:")
    assert eng.sources[A].offences == 1


def test_a_probe_that_keeps_sending_after_the_answer_is_released_and_not_reprobed() -> None:
    """A spoofed flood never sees the decoy's answer and keeps going: no proof, released;
    the next probe of that address waits probe_every."""
    p = Policy()
    eng = Engine(p)
    eng.probe(A, "forgeable evidence", T0)
    eng.decoy_seen(A, T0 + 0.1, closes=True)
    t = T0 + 0.1
    while t < T0 + p.probe_for - 0.5:
        t += 0.25
        eng.decoy_seen(A, t)
        assert eng.tick(t) == []
    eng.decoy_seen(A, T0 + p.probe_for - 0.1)
    (r,) = eng.tick(T0 + p.probe_for)
    assert r.action is Action.RELEASE
    assert eng.sources[A].state is State.WATCHED
    assert eng.probe(A, "again", T0 + p.probe_for + 60) == []
    assert eng.probe(A, "again", T0 + p.probe_every + 1)[0].action is Action.DEFLECT


def test_stopping_before_reaching_the_decoy_proves_nothing() -> None:
    p = Policy()
    eng = Engine(p)
    eng.probe(A, "forgeable evidence", T0)
    assert eng.tick(T0 + p.probe_quiet + 1) == []
    (r,) = eng.tick(T0 + p.probe_for)
    assert r.action is Action.RELEASE


def test_proof_during_a_probe_makes_it_a_deflect_and_protected_ones_are_never_probed() -> None:
    p = Policy()
    eng = Engine(p, allow=[ipaddress.ip_network("198.51.100.0/24")])
    eng.probe(A, "forgeable evidence", T0)
    (d,) = eng.signal(A, Level.ATTACKER, "a failed login after a challenge", T0 + 1)
    assert d.action is Action.DEFLECT
    assert eng.sources[A].state is State.DEFLECTED
    assert eng.sources[A].offences == 1
    assert eng.probe(address("198.51.100.20"), "forged", T0) == []
    assert eng.probe(address("127.0.0.1"), "forged", T0) == []


def test_a_short_forged_burst_that_ends_after_the_answer_proves_nothing() -> None:
    """A spoofer's burst may end right after the decoy's answer by chance, but it does not
    stop *on* the answer: dozens of packets follow it, a real quitter's in-flight few."""
    p = Policy()
    eng = Engine(p)
    eng.probe(A, "forgeable evidence", T0)
    eng.decoy_seen(A, T0 + 0.01, closes=True)
    for i in range(50):
        eng.decoy_seen(A, T0 + 0.012 + i * 0.002)
    assert eng.tick(T0 + p.probe_quiet + 0.2) == []
    (r,) = eng.tick(T0 + p.probe_for)
    assert r.action is Action.RELEASE


def test_a_full_table_of_blocked_sources_still_takes_a_new_attacker() -> None:
    """Deflected and blocked records are never forgotten, so past max_sources the table
    grows rather than forget the newcomer (it used to be evicted as it was added)."""
    p = Policy(max_sources=100)
    eng = Engine(p)
    for i in range(100):
        eng.signal(ipaddress.ip_address(0xC6120000 + i), Level.ATTACKER, "attacker", T0)
    eng.tick(T0 + p.quiet_after)  # all blocked
    (d,) = eng.signal(A, Level.ATTACKER, "one more", T0 + 20)
    assert d.action is Action.DEFLECT
    assert eng.sources[A].state is State.DEFLECTED
    (b,) = eng.tick(T0 + 20 + p.quiet_after)
    assert (b.action, b.target) == (Action.BLOCK, ipaddress.ip_network(A))
