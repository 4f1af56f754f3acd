"""Traffic accounting: the wire tally (bounded, exact), firewall counter deltas, and the
set of diverted addresses the capture skips."""

from __future__ import annotations

import ipaddress

from sipdeflect.accounting import OTHER, CounterDeltas, Diverted, Tally
from sipdeflect.decisions import Action, Decision, parse_target
from sipdeflect.detect.wire import WireDetector
from sipdeflect.firewall.model import Listed, SetName
from sipdeflect.sources.data import default_fingerprints
from tests.detect.sipmsg import register, response

T0 = 1_750_000_000.0
PBX = ipaddress.ip_address("203.0.113.1").packed
ATK = ipaddress.ip_address("198.51.100.9").packed
V6 = ipaddress.ip_address("2001:db8::66").packed


def test_tally_counts_requests_bytes_and_replies_per_source() -> None:
    t = Tally()
    t.add(ATK, 300, False)
    t.add(ATK, 200, False)
    t.add(ATK, 400, True)  # the PBX's answer: a reply, its size not "in"
    t.add(V6, 50, False)
    assert sorted(t.drain(T0)) == [
        ("198.51.100.9", T0, "pbx", 2, 500, 1),
        ("2001:db8::66", T0, "pbx", 1, 50, 0),
    ]
    assert len(t) == 0
    assert t.drain(T0) == []


def test_tally_is_bounded_and_pools_the_rest_exactly() -> None:
    """A flood from 100,000 spoofed sources: the tally never holds more than cap + 1 rows,
    and no packet is lost (the overflow is pooled under OTHER)."""
    t = Tally(cap=100)
    for i in range(100_000):
        t.add(i.to_bytes(4, "big"), 60, False)
        assert len(t) <= 101
    rows = t.drain(T0)
    assert sum(r[3] for r in rows) == 100_000
    assert sum(r[4] for r in rows) == 6_000_000
    (pooled,) = [r for r in rows if r[0] == OTHER]
    assert pooled[3] == 100_000 - 100 == t.pooled


def test_wire_detector_feeds_its_tally() -> None:
    det = WireDetector(default_fingerprints())
    det.tally = Tally()
    req = register("100", "c1", 1)
    det.packet(ATK, 5062, PBX, 5060, req, now=T0)
    det.packet(PBX, 5060, ATK, 5062, response(401, "Unauthorized", "100", "c1", 1), now=T0)
    det.packet(ATK, 5062, PBX, 5060, b"\x00garbage\xff", now=T0)  # unparsable: still traffic
    det.packet(ATK, 5062, PBX, 9999, req, now=T0)  # not the PBX's port: not counted
    (row,) = det.tally.drain(T0)
    assert row[0] == "198.51.100.9"
    assert row[3:] == (2, len(req) + 9, 1)


def _listed(target: str, packets: int, nbytes: int) -> Listed:
    return Listed(SetName.BLOCK, parse_target(target), packets=packets, bytes=nbytes)


def test_counter_deltas_follow_restarts_and_skip_silent_elements() -> None:
    c = CounterDeltas()
    first = c.update([_listed("198.51.100.9", 5, 500), _listed("203.0.113.0/24", 0, 0)])
    assert [(str(e.target), p, b) for e, p, b in first] == [("198.51.100.9/32", 5, 500)]
    assert c.update([_listed("198.51.100.9", 5, 500)]) == []  # nothing new
    again = c.update([_listed("198.51.100.9", 8, 800), _listed("203.0.113.0/24", 2, 120)])
    assert [(str(e.target), p, b) for e, p, b in again] == [
        ("198.51.100.9/32", 3, 300),
        ("203.0.113.0/24", 2, 120),
    ]
    # Removed and added again: the counter restarted, so all of it is new.
    restarted = c.update([_listed("198.51.100.9", 2, 200)])
    assert [(p, b) for _, p, b in restarted] == [(2, 200)]
    # Backends without per-element counters report None: ignored.
    assert c.update([Listed(SetName.BLOCK, parse_target("198.51.100.9"))]) == []


def _d(target: str, action: Action) -> Decision:
    return Decision(parse_target(target), action, None, "engine", "test", T0)


def test_diverted_follows_decisions_for_addresses_and_prefixes() -> None:
    d = Diverted()
    d.apply([_d("198.51.100.9", Action.DEFLECT), _d("2001:db8::/64", Action.BLOCK)])
    assert ATK in d
    assert V6 in d  # inside the blocked /64
    assert ipaddress.ip_address("2001:db8:1::1").packed not in d
    assert PBX not in d
    d.apply([_d("198.51.100.9", Action.BLOCK)])  # deflect -> block: still diverted
    assert ATK in d
    d.apply([_d("198.51.100.9", Action.RELEASE), _d("2001:db8::/64", Action.RELEASE)])
    assert ATK not in d
    assert V6 not in d
    d.reset([_d("203.0.113.1", Action.BLOCK), _d("198.51.100.0/24", Action.ALLOW)])
    assert PBX in d
    assert ATK not in d


def test_drained_addresses_read_as_ipaddress_prints_them() -> None:
    import random

    from sipdeflect.accounting import _text

    rnd = random.Random(8)
    for _ in range(5000):
        b = rnd.randbytes(rnd.choice((4, 16)))
        if len(b) == 16 and rnd.random() < 0.3:
            b = bytes(10) + b"\xff\xff" + b[:4]  # IPv4-mapped
        assert _text(b) == str(ipaddress.ip_address(b))
