"""Distributed brute force (detect/swarm.py and its use in verdict.py and wire.py): an
account or prefix many addresses fail on is under attack; then a never-logged-in source is
flagged at its first verified failure there, and its request for the account is probed.
Forged (unverified) failures never count; memory stays bounded whatever the traffic."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Address, Event, EventKind
from sipdeflect.detect.swarm import Swarm, SwarmPolicy
from sipdeflect.detect.verdict import Policy, Verdicts
from sipdeflect.detect.wire import WireDetector
from sipdeflect.sources.data import default_fingerprints

T0 = 1_750_000_000.0
CRED = EventKind.AUTH_FAILED_WITH_CREDENTIALS


def bot(n: int) -> Address:
    """The n-th address of 198.18.0.0/15, one per /24 (no prefix gathers many)."""
    return ipaddress.ip_address(0xC6120000 + (n % 512) * 256 + n // 512 + 1)


def ev(kind: EventKind, src: Address, t: float, account: str | None, verified: bool) -> Event:
    when = datetime.fromtimestamp(t, UTC)
    return Event(when, kind, src, 5060, account, "wire", "test", verified)


def test_the_tenth_address_puts_the_account_under_attack() -> None:
    sw = Swarm()
    for n in range(9):
        assert sw.failed("1001", bot(n), T0 + n) is None
    assert not sw.account_hot("1001", T0 + 9)
    why = sw.failed("1001", bot(9), T0 + 9)
    assert why is not None
    assert "'1001'" in why
    assert sw.account_hot("1001", T0 + 10)
    assert sw.failed("1001", bot(10), T0 + 10) is not None  # any newcomer, at its first
    assert sw.failed("2002", bot(11), T0 + 10) is None  # another account is not
    sw.logged_in(bot(12), T0 + 11)
    assert sw.failed("1001", bot(12), T0 + 12) is None  # it logged in before: not flagged
    (u,) = [u for u in sw.under_attack(T0 + 12) if u.kind == "account"]
    assert (u.key, u.sources) == ("1001", 10)
    assert not sw.account_hot("1001", T0 + 12 + 600)  # over once the window has passed


def test_failures_spread_wider_than_the_window_do_not_add_up() -> None:
    sw = Swarm(SwarmPolicy(window=60.0))
    for n in range(50):
        assert sw.failed("1001", bot(n), T0 + n * 7) is None  # at most 9 in any 60 s
    assert not sw.account_hot("1001", T0 + 400)


def test_a_prefix_many_addresses_fail_from_is_under_attack() -> None:
    sw = Swarm(SwarmPolicy(prefix_sources=5))
    net = [ipaddress.ip_address(f"203.0.113.{i}") for i in range(1, 8)]
    got = [sw.failed(f"acct{i}", a, T0 + i) for i, a in enumerate(net)]
    assert got[:4] == [None] * 4
    assert got[4] is not None
    assert "203.0.113.0/24" in got[4]
    assert {u.key for u in sw.under_attack(T0 + 8) if u.kind == "prefix"} == {"203.0.113.0/24"}
    v6 = [ipaddress.ip_address(f"2001:db8:0:{i}::1") for i in range(5)]  # one /48
    assert [sw.failed(None, a, T0) for a in v6][-1] is not None


def test_memory_is_bounded_whatever_the_traffic() -> None:
    p = SwarmPolicy(max_accounts=1000, max_prefixes=2000, max_logins=3000)
    sw = Swarm(p)
    for n in range(60_000):
        sw.failed(f"acct{n}", bot(n), T0 + n * 0.001)  # 60k accounts, 60k addresses
        sw.logged_in(bot(n + 1), T0)
    for n in range(20_000):
        sw.failed("1001", bot(n), T0 + 60)  # 20k addresses on one account
    assert len(sw._accounts) <= p.max_accounts
    assert len(sw._prefixes) <= p.max_prefixes
    assert len(sw._logins) <= p.max_logins
    assert len(sw.hot) <= p.max_accounts
    assert max(len(h.seen) for h in sw._accounts.values()) <= p.account_sources
    assert max(len(h.seen) for h in sw._prefixes.values()) <= p.prefix_sources


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 14), st.sampled_from([0, 1, 5, 30, 200])),
        min_size=1,
        max_size=150,
    )
)
def test_under_attack_matches_a_plain_model(steps: list[tuple[int, int, int]]) -> None:
    """An account is under attack at t when, at some failure t' in (t - window, t], it had
    failures from `account_sources` distinct addresses within (t' - window, t']."""
    p = SwarmPolicy(account_sources=4, prefix_sources=0, window=100.0)
    sw = Swarm(p)
    history: list[tuple[float, str, Address]] = []
    t = T0
    for acct, who, wait in steps:
        t += wait
        account, src = f"a{acct}", bot(who)
        got = sw.failed(account, src, t)
        history.append((t, account, src))

        def hot_at(when: float, account: str) -> bool:
            for t1, a1, _ in history:
                if a1 != account or not (when - p.window < t1 <= when):
                    continue
                seen = {s for t2, a2, s in history if a2 == account and t1 - p.window < t2 <= t1}
                if len(seen) >= p.account_sources:
                    return True
            return False

        assert (got is not None) == hot_at(t, account)
        for a in range(4):
            assert sw.account_hot(f"a{a}", t) == hot_at(t, f"a{a}"), (a, t - T0)


def test_verdicts_flag_the_swarm_and_never_on_forged_failures() -> None:
    v = Verdicts(Policy())
    # Forged: a spoofer sends credentials it never got a challenge for (unverified).
    for n in range(50):
        assert v.feed(ev(CRED, bot(n), T0 + n, "1001", False)) is None or (
            v.level(bot(n)) <= Level.WATCH
        )
    assert not v.swarm.account_hot("1001", T0 + 60)
    # Real: each address fails once after the PBX's challenge (verified): suspect each...
    flags = [v.feed(ev(CRED, bot(100 + n), T0 + 100 + n, "1001", True)) for n in range(10)]
    assert [f.level for f in flags[:9] if f] == [Level.SUSPECT] * 9
    # ...until the tenth puts the account under attack and is flagged an attacker itself.
    last = flags[9]
    assert last is not None
    assert last.level is Level.ATTACKER
    assert "distributed attack" in last.reason
    # A newcomer is an attacker at its first failure on that account.
    f = v.feed(ev(CRED, bot(200), T0 + 120, "1001", True))
    assert f is not None
    assert f.level is Level.ATTACKER
    # Its request for the account (forgeable) asks for a probe at once...
    p = v.feed(ev(EventKind.ATTACKED_ACCOUNT, bot(300), T0 + 121, "1001", False))
    assert p is not None
    assert p.probe
    # ...unless the source logged in before (the customer whose account it is).
    v.feed(ev(EventKind.AUTH_SUCCEEDED, bot(301), T0 + 50, "1001", True))
    assert v.feed(ev(EventKind.ATTACKED_ACCOUNT, bot(301), T0 + 122, "1001", False)) is None
    assert v.feed(ev(CRED, bot(301), T0 + 123, "1001", True)).level is Level.SUSPECT  # type: ignore[union-attr]


def _register(user: str, n: int) -> bytes:
    return (
        f"REGISTER sip:pbx.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK{n}\r\n"
        f"From: <sip:{user}@pbx.example>;tag=1\r\nTo: <sip:{user}@pbx.example>\r\n"
        f"Call-ID: c{n}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_the_wire_marks_requests_for_an_account_under_attack_once_per_bucket() -> None:
    hot: dict[str, float] = {}
    det = WireDetector(default_fingerprints(), hot=hot)
    src, dst = bot(1).packed, ipaddress.ip_address("192.0.2.1").packed

    def kinds(user: str, n: int, now: float) -> list[EventKind]:
        return [e.kind for e in det.packet(src, 5060, dst, 5060, _register(user, n), now=now)]

    assert EventKind.ATTACKED_ACCOUNT not in kinds("1001", 1, T0)
    hot["1001"] = T0 + 600
    assert kinds("1001", 2, T0 + 1) == [EventKind.ATTACKED_ACCOUNT]
    assert kinds("1001", 3, T0 + 2) == []  # once per source and bucket
    assert kinds("2002", 4, T0 + 3) == []
    assert kinds("1001", 5, T0 + 20) == [EventKind.ATTACKED_ACCOUNT]  # a new bucket
    assert kinds("1001", 6, T0 + 700) == []  # the attack is over
