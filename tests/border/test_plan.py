"""The border's pure part: which blocks qualify, the desired RIB under the cap, the diff
to the speaker, and the ExaBGP text it becomes. No speaker here (none is needed: the
lab test in tests/lab/test_border_e2e.py drives the real one)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sipdeflect.border.exabgp import SpeakerSettings, commands, config_text
from sipdeflect.border.plan import (
    Border,
    BorderPolicy,
    Changes,
    Entry,
    Evidence,
    Mode,
    desired,
    diff,
    evidence_of,
    qualify,
    refusal,
)
from sipdeflect.decisions import Action, Decision, Level, Network, single
from sipdeflect.engine import BLOCK_WHY, Engine, Policy, Trigger

A = ipaddress.ip_address("203.0.113.66")
B = ipaddress.ip_address("203.0.113.67")
NOW = 1_000_000.0


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def block(
    target: str, trigger: Trigger | None, at: float = NOW, until: float = NOW + 60
) -> Decision:
    reason = "blocked by operator" if trigger is None else f"{trigger}: {BLOCK_WHY[trigger]}"
    origin = "cli" if trigger is None else "engine"
    return Decision(net(target), Action.BLOCK, until, origin, reason, at)


def release(target: str) -> Decision:
    return Decision(net(target), Action.RELEASE, None, "engine", "expired: block expired", NOW)


def test_evidence_read_from_live_and_restored_reasons() -> None:
    live = block("203.0.113.66/32", Trigger.QUIT)
    assert evidence_of(live) is Evidence.QUIT
    restored = Decision(
        live.target, Action.BLOCK, live.until, "engine", BLOCK_WHY[Trigger.QUIET], NOW
    )
    assert evidence_of(restored) is Evidence.QUIET
    assert evidence_of(block("203.0.113.66/32", None)) is Evidence.MANUAL
    deflect = Decision(live.target, Action.DEFLECT, None, "engine", "detected: x", NOW)
    assert evidence_of(deflect) is None  # never a deflect: the decoy needs the packets
    odd = Decision(live.target, Action.BLOCK, None, "engine", "something else", NOW)
    assert evidence_of(odd) is None


def test_the_engine_blocks_carry_a_readable_trigger() -> None:
    """The engine's real output, not hand-made reasons: deflect, quiet, block, restore."""
    eng = Engine(Policy(quiet_after=5))
    eng.signal(A, Level.ATTACKER, "credentialed failure", NOW)
    out = eng.tick(NOW + 6)
    assert [d.action for d in out] == [Action.BLOCK]
    assert evidence_of(out[0]) is Evidence.QUIET
    restored = Engine(Policy(quiet_after=5))
    restored.restore(eng.sources.values(), [])
    [active] = [d for d in restored.active() if d.action is Action.BLOCK]
    assert evidence_of(active) is Evidence.QUIET


def test_minimum_evidence_and_expiry() -> None:
    policy = BorderPolicy()  # quiet and quit only
    assert qualify(block("203.0.113.66/32", Trigger.QUIET), policy, NOW) is not None
    assert qualify(block("203.0.113.66/32", Trigger.QUIT), policy, NOW) is not None
    assert qualify(block("203.0.113.66/32", Trigger.DEFLECT_TIMEOUT), policy, NOW) is None
    assert qualify(block("203.0.113.66/32", None), policy, NOW) is None
    manual = BorderPolicy(evidence=frozenset({Evidence.MANUAL}))
    assert qualify(block("203.0.113.66/32", None), manual, NOW) is not None
    assert qualify(block("203.0.113.66/32", Trigger.QUIET, until=NOW), policy, NOW) is None


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("203.0.113.0/24", "wider than /32"),
        ("127.0.0.1/32", "not a routable unicast source"),
        ("224.0.0.1/32", "not a routable unicast source"),
        ("198.51.100.7/32", "allowlisted"),
        ("192.0.2.1/32", "own address"),
    ],
)
def test_same_refusals_as_the_firewall(target: str, why: str) -> None:
    policy = BorderPolicy(
        evidence=frozenset({Evidence.MANUAL}),
        allow=(net("198.51.100.0/24"),),
        own=(net("192.0.2.1/32"),),
    )
    assert why in (refusal(net(target), policy) or "")
    assert qualify(block(target, None), policy, NOW) is None
    assert refusal(net("203.0.113.66/32"), policy) is None


def test_announce_then_withdraw_on_release_and_expiry() -> None:
    b = Border(BorderPolicy())
    ch = b.update([block("203.0.113.66/32", Trigger.QUIET, until=NOW + 10)], NOW)
    assert [e.target for e in ch.announce] == [net("203.0.113.66/32")]
    assert not ch.withdraw
    assert not b.update([], NOW + 1)  # nothing new: nothing to send
    ch = b.update([release("203.0.113.66/32")], NOW + 2)
    assert ch.withdraw == (net("203.0.113.66/32"),)
    assert not ch.announce
    b.update([block("203.0.113.67/32", Trigger.QUIT, until=NOW + 10)], NOW)
    ch = b.tick(NOW + 10)  # ran out with no release seen (daemon was busy): withdrawn
    assert ch.withdraw == (net("203.0.113.67/32"),)
    assert b.announced == {}


def test_a_later_deflect_or_weaker_block_withdraws() -> None:
    b = Border(BorderPolicy())
    b.update([block("203.0.113.66/32", Trigger.QUIET)], NOW)
    redeflect = Decision(net("203.0.113.66/32"), Action.DEFLECT, None, "engine", "detected", NOW)
    assert b.update([redeflect], NOW).withdraw == (net("203.0.113.66/32"),)


def test_cap_keeps_what_is_announced_then_oldest() -> None:
    b = Border(BorderPolicy(max_prefixes=2))
    b.update([block(f"203.0.113.{i}/32", Trigger.QUIET, at=NOW + i) for i in (10, 11)], NOW)
    ch = b.update([block("203.0.113.5/32", Trigger.QUIET, at=NOW - 100)], NOW)
    assert not ch  # older, but the cap is full: no churn
    assert b.waiting() == 1
    ch = b.update([release("203.0.113.10/32")], NOW)
    assert ch.withdraw == (net("203.0.113.10/32"),)
    assert [e.target for e in ch.announce] == [net("203.0.113.5/32")]
    assert set(b.announced) == {net("203.0.113.5/32"), net("203.0.113.11/32")}


def test_reset_announces_exactly_what_is_in_force() -> None:
    b = Border(BorderPolicy())
    b.update([block("203.0.113.66/32", Trigger.QUIET)], NOW)
    active = [block("203.0.113.67/32", Trigger.QUIT), release("203.0.113.66/32")]
    ch = b.reset(active, NOW)
    # A fresh speaker holds nothing, so nothing is withdrawn and only 67 is announced.
    assert not ch.withdraw
    assert [e.target for e in ch.announce] == [net("203.0.113.67/32")]


def test_desired_and_diff_directly() -> None:
    e1 = Entry(net("203.0.113.1/32"), NOW, None, Evidence.QUIET, "q")
    e2 = Entry(net("203.0.113.2/32"), NOW - 1, None, Evidence.QUIT, "q")
    assert desired({e1.target: e1, e2.target: e2}, {}, 1) == {e2.target: e2}
    assert diff({e1.target: e1}, {e2.target: e2}) == Changes((e1,), (e2.target,))


def _settings(mode: Mode) -> SpeakerSettings:
    return SpeakerSettings(
        peer="192.0.2.2",
        peer_as=64513,
        local_address="192.0.2.1",
        local_as=64512,
        router_id="192.0.2.1",
        next_hop="self",
        communities=("65535:666", "64513:666"),
        mode=mode,
        sip_ports=(5060,),
        workdir=Path("/run/x"),
    )


def test_exabgp_text() -> None:
    e = Entry(net("203.0.113.66/32"), NOW, None, Evidence.QUIET, "q")
    v6 = Entry(single(ipaddress.ip_address("2001:db8::66")), NOW, None, Evidence.QUIET, "q")
    lines = commands(Changes((e, v6), (net("203.0.113.67/32"),)), _settings(Mode.BOTH))
    assert lines == [
        "withdraw route 203.0.113.67/32 next-hop self",
        "withdraw flow route { match { source 203.0.113.67/32; protocol udp; "
        "destination-port =5060; } }",
        "announce route 203.0.113.66/32 next-hop self community [ 65535:666 64513:666 ]",
        "announce flow route { match { source 203.0.113.66/32; protocol udp; "
        "destination-port =5060; } then { discard; } }",
        "announce route 2001:db8::66/128 next-hop self community [ 65535:666 64513:666 ]",
    ]
    rtbh = commands(Changes((e,)), _settings(Mode.RTBH))
    assert rtbh == [lines[2]]
    conf = config_text(_settings(Mode.BOTH))
    assert "family { ipv4 unicast; ipv4 flow; }" in conf
    assert "run /bin/cat /run/x/commands;" in conf
    assert "peer-as 64513;" in conf


def test_only_the_sessions_ip_version_is_announced() -> None:
    policy = BorderPolicy(evidence=frozenset({Evidence.MANUAL}), versions=frozenset({4}))
    v6 = Decision(net("2001:db8::66/128"), Action.BLOCK, None, "cli", "operator", NOW)
    assert "no IPv6" in (refusal(v6.target, policy) or "")
    assert qualify(v6, policy, NOW) is None


def test_tick_is_idle_until_the_earliest_block_is_due() -> None:
    b = Border(BorderPolicy())
    b.update([block("203.0.113.66/32", Trigger.QUIET, until=NOW + 10)], NOW)
    b.update([block("203.0.113.67/32", Trigger.QUIET, until=NOW + 20)], NOW)
    assert not b.tick(NOW + 9)
    assert b.tick(NOW + 10).withdraw == (net("203.0.113.66/32"),)
    assert not b.tick(NOW + 15)
    assert b.tick(NOW + 25).withdraw == (net("203.0.113.67/32"),)
    assert not b.candidates


def test_tcp_established_reads_the_kernels_table() -> None:
    from sipdeflect.border.exabgp import tcp_established

    # 192.0.2.1:40000 -> 192.0.2.2:179 established; the same peer on 180 in TIME_WAIT.
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 010200C0:9C40 020200C0:00B3 01 00000000:00000000\n"
        "   1: 010200C0:9C41 020200C0:00B4 06 00000000:00000000\n"
    )
    peer = ipaddress.ip_address("192.0.2.2")
    assert tcp_established(table, peer, 179)
    assert not tcp_established(table, peer, 180)
    assert not tcp_established(table, ipaddress.ip_address("192.0.2.3"), 179)
    v6 = (
        "  sl  local_address                         remote_address                        st\n"
        "   0: B80D0120000000000000000001000000:9C40 B80D0120000000000000000002000000:00B3 01\n"
    )
    assert tcp_established(v6, ipaddress.ip_address("2001:db8::2"), 179)
