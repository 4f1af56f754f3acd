"""Not a reflector: who may be answered, how much, and how much state a flood can create."""

from __future__ import annotations

import socket
import tracemalloc

import pytest

from sipdeflect.decoy.guard import (
    IP_PKTINFO,
    IPV6_PKTINFO,
    LO_INDEX,
    LOCAL_ONLY,
    NEVER,
    OK,
    Guard,
    arrived_on_lo,
    classify,
)
from tests.decoy.helpers import Clock, make_decoy, sip

LOCAL = frozenset({"192.0.2.10", "2001:db8::10"})
BCAST = frozenset({"192.0.2.255"})


@pytest.mark.parametrize(
    ("ip", "verdict"),
    [
        ("198.51.100.7", OK),
        ("2001:db8::66", OK),
        ("fe80::1%eth0", OK),
        ("255.255.255.255", NEVER),
        ("192.0.2.255", NEVER),  # our subnet's broadcast
        ("224.0.0.1", NEVER),
        ("239.255.255.250", NEVER),
        ("ff02::1", NEVER),
        ("0.0.0.0", NEVER),
        ("0.1.2.3", NEVER),
        ("::", NEVER),
        ("240.0.0.1", NEVER),
        ("::ffff:224.0.0.1", NEVER),
        ("not-an-ip", NEVER),
        ("127.0.0.1", LOCAL_ONLY),
        ("127.9.9.9", LOCAL_ONLY),
        ("::1", LOCAL_ONLY),
        ("192.0.2.10", LOCAL_ONLY),
        ("2001:db8::10", LOCAL_ONLY),
        ("::ffff:127.0.0.1", LOCAL_ONLY),
    ],
)
def test_classify(ip: str, verdict: int) -> None:
    assert classify(ip, LOCAL, BCAST) == verdict


def _pktinfo(ifindex: int, v6: bool = False) -> list[tuple[int, int, bytes]]:
    if v6:
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, bytes(16) + ifindex.to_bytes(4, "little"))]
    return [(socket.IPPROTO_IP, IP_PKTINFO, ifindex.to_bytes(4, "little") + bytes(8))]


def test_arrived_on_lo_reads_pktinfo() -> None:
    assert arrived_on_lo(_pktinfo(LO_INDEX))
    assert arrived_on_lo(_pktinfo(LO_INDEX, v6=True))
    assert not arrived_on_lo(_pktinfo(LO_INDEX + 1))
    assert not arrived_on_lo([])


def test_no_answer_to_forbidden_destinations() -> None:
    decoy, _ = make_decoy(local=("192.0.2.10", "bcast:192.0.2.255"))
    data = sip("REGISTER", pad=200)
    for src in [
        ("255.255.255.255", 5060),
        ("192.0.2.255", 5060),
        ("224.0.0.1", 5060),
        ("0.0.0.0", 5060),
        ("ff02::1", 5060),
        ("198.51.100.7", 0),  # source port 0
        ("127.0.0.1", 5060),  # loopback, but not received on lo
        ("192.0.2.10", 5060),  # our own address, not received on lo
    ]:
        assert decoy.handle(data, src, _pktinfo(LO_INDEX + 7)) is None, src
    assert decoy.summary.dropped == 8
    assert decoy.summary.answered == 0
    # the same loopback / own-address sources are fine when the packet came over lo
    assert decoy.handle(data, ("127.0.0.1", 5060), _pktinfo(LO_INDEX)) is not None
    assert decoy.handle(data, ("192.0.2.10", 5060), _pktinfo(LO_INDEX)) is not None
    assert decoy.handle(data, ("127.0.0.1", 0), _pktinfo(LO_INDEX)) is None


def test_the_remembered_loopback_verdict_follows_each_ancillary_tuple() -> None:
    """Guard.refuse remembers arrived_on_lo for the last (immutable) tuple: alternating
    tuples, lists and None must each still get their own verdict."""
    guard = Guard(local=("192.0.2.10",))
    st = guard.state("127.0.0.1", 0.0)
    on_lo, off_lo = tuple(_pktinfo(LO_INDEX)), tuple(_pktinfo(LO_INDEX + 7))
    refused = "loopback or own address not received on lo"
    for _ in range(3):
        assert guard.refuse(st, 5060, on_lo) is None
        assert guard.refuse(st, 5060, off_lo) == refused
        assert guard.refuse(st, 5060, None) == refused
        assert guard.refuse(st, 5060, on_lo) is None
        assert guard.refuse(st, 0, on_lo) == "source port 0"
        assert guard.refuse(st, 5060, _pktinfo(LO_INDEX + 7)) == refused  # a list
        assert guard.refuse(st, 5060, on_lo) is None
        assert guard.refuse(st, 5060, list(on_lo)) is None


def test_reply_budget_caps_a_spoofed_flood_at_one_victim() -> None:
    clock = Clock()
    decoy, _ = make_decoy(budget=10.0, clock=clock)
    victim = ("198.51.100.99", 5060)
    data = sip("OPTIONS", pad=200)
    answered = 0
    for i in range(3000):  # 3000 spoofed requests over 3 seconds of (fake) time
        clock.now += 0.001
        answered += decoy.handle(data.replace(b"c1@", f"{i}@".encode()), victim) is not None
    # burst (10) + 10/s for 3 s, and not a reply more
    assert 38 <= answered <= 41
    assert decoy.summary.drops["reply budget"] == 3000 - answered
    # another destination has its own bucket
    assert decoy.handle(data, ("198.51.100.100", 5060)) is not None


def test_budget_zero_is_unlimited() -> None:
    decoy, _ = make_decoy(budget=0.0)
    data = sip("OPTIONS", pad=200)
    assert all(decoy.handle(data, ("198.51.100.99", 5060)) for _ in range(500))


def test_million_spoofed_sources_keep_the_table_at_its_cap() -> None:
    cap = 65_536
    guard = Guard(cap=cap)
    for i in range(1_000_000):
        guard.state(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i))
        if i == 100_000:
            at_100k = len(guard.table)
    assert at_100k == cap == len(guard.table)
    assert guard.created == 1_000_000
    assert guard.evicted == 1_000_000 - cap
    # the survivors are the newest sources (oldest evicted first)
    assert "10.15.66.63" in guard.table
    assert "10.0.0.0" not in guard.table


def test_state_per_source_is_small() -> None:
    """The cap in docs/decoy.md is stated in bytes per entry: hold the code to it."""
    n = 20_000
    guard = Guard(cap=n)
    keys = [f"198.51.{i >> 8 & 255}.{i & 255}" for i in range(n)]  # keys made before measuring
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i, key in enumerate(keys):
        guard.state(key, float(i))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_entry = grown / n
    assert per_entry < 300, per_entry  # plus the key string itself (~60 bytes)
