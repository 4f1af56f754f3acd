"""The wire detector: credentialed-after-challenge failures are the only verified UDP
evidence; spoofed floods, scanner User-Agents and enumeration stay at "watch"."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from sipdeflect.decisions import Level
from sipdeflect.detect.events import EventKind
from sipdeflect.detect.verdict import Policy, Verdicts
from sipdeflect.detect.wire import WireDetector, WirePolicy
from sipdeflect.sources.data import default_fingerprints
from tests.detect.sipmsg import invite, register, response

PBX = ipaddress.ip_address("203.0.113.1").packed
ATK = ipaddress.ip_address("198.51.100.9").packed
BYSTANDER = ipaddress.ip_address("192.0.2.77").packed


def detector(**kw: int) -> WireDetector:
    return WireDetector(default_fingerprints(), WirePolicy(**kw))  # type: ignore[arg-type]


def crack_round(
    det: WireDetector, i: int, now: float, src: bytes = ATK, ua: str = "friendly-scanner"
) -> list:
    """One svcrack password try: REGISTER, 401 challenge, REGISTER with credentials, 403."""
    cid, nonce = f"c{i}", f"n{i}"
    evs = det.packet(src, 5062, PBX, 5060, register("1001", cid, 1, ua=ua), now=now)
    evs += det.packet(
        PBX, 5060, src, 5062, response(401, "Unauthorized", "1001", cid, 1, nonce=nonce), now=now
    )
    evs += det.packet(src, 5062, PBX, 5060, register("1001", cid, 2, nonce=nonce, ua=ua), now=now)
    evs += det.packet(PBX, 5060, src, 5062, response(403, "Forbidden", "1001", cid, 2), now=now)
    return evs


def test_failed_credentials_after_our_challenge_are_verified() -> None:
    det, verdicts = detector(), Verdicts()
    levels = []
    for i in range(10):  # a cracker that hides its User-Agent
        for ev in crack_round(det, i, 1000.0 + i, ua="Yealink SIP-T46S 66.86.0.15"):
            verdicts.feed(ev)
        levels.append(verdicts.level(ipaddress.ip_address(ATK)))
    evs = crack_round(det, 99, 1100.0)
    cred = [e for e in evs if e.kind is EventKind.AUTH_FAILED_WITH_CREDENTIALS]
    assert len(cred) == 1
    assert cred[0].verified
    assert cred[0].account == "1001"
    assert cred[0].port == 5062
    assert str(cred[0].source) == "198.51.100.9"
    assert levels[0] == Level.SUSPECT
    assert Level.ATTACKER in levels[:10]
    assert levels.index(Level.ATTACKER) == 4  # the fifth credentialed failure


def test_a_scanner_user_agent_counts_once_a_failed_login_proved_the_address() -> None:
    det, verdicts = detector(), Verdicts()
    flags = [verdicts.feed(ev) for ev in crack_round(det, 0, 1000.0)]
    assert [f.level for f in flags if f is not None] == [Level.WATCH, Level.ATTACKER]


def test_a_flooder_that_ignores_challenges_is_probed_not_flagged() -> None:
    """The write-up's flooder: the same unauthenticated REGISTER, every answer a 401."""
    det, verdicts = detector(), Verdicts()
    flags = []
    for i in range(6):
        now = 1000.0 + i * 0.02
        evs = det.packet(ATK, 5182, PBX, 5060, register("2011", "fixed", 1), now=now)
        flags += [verdicts.feed(ev) for ev in evs]
        chal = response(401, "Unauthorized", "2011", "fixed", 1, nonce=f"n{i}")
        for ev in det.packet(PBX, 5060, ATK, 5182, chal, now=now):
            assert ev.kind is EventKind.CHALLENGES_IGNORED
            flags.append(verdicts.feed(ev))
    probes = [f for f in flags if f is not None and f.probe]
    assert len(probes) == 1  # at the fourth ignored challenge: User-Agent 2 + ignored 2
    assert probes[0].event.kind is EventKind.CHALLENGES_IGNORED
    assert probes[0].level == Level.WATCH
    assert verdicts.level(ipaddress.ip_address(ATK)) == Level.WATCH


def test_a_customer_whose_login_succeeded_is_not_probed_by_forged_packets() -> None:
    det, verdicts = detector(), Verdicts()
    cid, nonce = "cust", "n-cust"
    evs = det.packet(BYSTANDER, 5060, PBX, 5060, register("1001", cid, 1, ua="Yealink"), now=1.0)
    evs += det.packet(
        PBX, 5060, BYSTANDER, 5060, response(401, "U", "1001", cid, 1, nonce=nonce), now=1.0
    )
    # sipp's order: cnonce before nonce (a regex for nonce= once matched the cnonce)
    auth = register("1001", cid, 2, nonce=nonce, ua="Yealink")
    auth = auth.replace(b'nonce="', b'cnonce="0a4f113b",nonce="', 1)
    evs += det.packet(BYSTANDER, 5060, PBX, 5060, auth, now=1.1)
    evs += det.packet(PBX, 5060, BYSTANDER, 5060, response(200, "OK", "1001", cid, 2), now=1.1)
    assert [e.kind for e in evs] == [EventKind.AUTH_SUCCEEDED]
    for ev in evs:
        verdicts.feed(ev)
    flags = []
    for i in range(300):  # forged "from" the customer: scanner UA, enumeration, a flood
        evs = det.packet(BYSTANDER, 5060, PBX, 5060, invite(str(i), f"i{i}"), now=2.0)
        flags += [verdicts.feed(ev) for ev in evs]
    assert [f for f in flags if f is not None] == []
    assert verdicts.trusted(ipaddress.ip_address(BYSTANDER), 3.0)


def test_credentials_with_a_nonce_never_sent_to_that_address_prove_nothing() -> None:
    det = detector()
    # The attacker obtains a real nonce for itself, then replays it "from" a bystander.
    det.packet(ATK, 5062, PBX, 5060, register("1001", "x", 1), now=1.0)
    det.packet(
        PBX, 5060, ATK, 5062, response(401, "Unauthorized", "1001", "x", 1, nonce="real"), now=1.0
    )
    evs = []
    for i in range(50):
        evs += det.packet(
            BYSTANDER, 5062, PBX, 5060, register("1001", f"s{i}", 2, nonce="real"), now=2.0 + i
        )
        evs += det.packet(
            PBX, 5060, BYSTANDER, 5062, response(403, "Forbidden", "1001", f"s{i}", 2), now=2.0 + i
        )
        # and one with a guessed nonce
        evs += det.packet(
            BYSTANDER, 5062, PBX, 5060, register("1001", f"g{i}", 2, nonce=f"guess{i}"), now=2.0 + i
        )
        evs += det.packet(
            PBX,
            5060,
            BYSTANDER,
            5062,
            response(401, "Unauthorized", "1001", f"g{i}", 2, nonce=f"new{i}"),
            now=2.0 + i,
        )
    assert not [e for e in evs if e.kind is EventKind.AUTH_FAILED_WITH_CREDENTIALS]
    # Another port of the address that received the challenge: the same host, proven.
    det.packet(ATK, 6000, PBX, 5060, register("1001", "p", 2, nonce="real"), now=3.0)
    evs = det.packet(PBX, 5060, ATK, 6000, response(403, "Forbidden", "1001", "p", 2), now=3.0)
    assert [e.kind for e in evs] == [EventKind.AUTH_FAILED_WITH_CREDENTIALS]


def test_a_nonce_the_pbx_sent_to_two_addresses_proves_nothing() -> None:
    """Kamailio's default nonces are time-based: two challenges in one second are equal.
    The attacker receives one; the bystander (spoofed) gets the same one; a replay "from"
    the bystander then carries a nonce that was indeed sent to it."""
    det = detector()
    det.packet(PBX, 5060, ATK, 5062, response(401, "U", "1001", "a", 1, nonce="same"), now=1.0)
    det.packet(
        PBX, 5060, BYSTANDER, 5062, response(401, "U", "1001", "b", 1, nonce="same"), now=1.0
    )
    det.packet(BYSTANDER, 5062, PBX, 5060, register("1001", "b", 2, nonce="same"), now=1.5)
    assert not det.packet(PBX, 5060, BYSTANDER, 5062, response(403, "F", "1001", "b", 2), now=1.5)
    det.packet(ATK, 5062, PBX, 5060, register("1001", "a", 2, nonce="same"), now=1.5)
    assert not det.packet(PBX, 5060, ATK, 5062, response(403, "F", "1001", "a", 2), now=1.5)


def test_spoofed_flood_with_scanner_ua_and_enumeration_stays_at_watch() -> None:
    det, verdicts = detector(), Verdicts()
    kinds = set()
    for i in range(2000):
        now = 100.0 + i / 100
        for ev in det.packet(
            BYSTANDER, 5062, PBX, 5060, register(str(1000 + i), f"f{i}", 1), now=now
        ):
            kinds.add(ev.kind)
            verdicts.feed(ev)
        for ev in det.packet(BYSTANDER, 5062, PBX, 5060, invite(str(i), f"i{i}"), now=now):
            kinds.add(ev.kind)
            verdicts.feed(ev)
        for ev in det.packet(
            PBX,
            5060,
            BYSTANDER,
            5062,
            response(404, "Not Found", str(i), f"i{i}", 1, method="INVITE"),
            now=now,
        ):
            kinds.add(ev.kind)
            verdicts.feed(ev)
    assert {
        EventKind.REQUEST_FLOOD,
        EventKind.SCANNER_USER_AGENT,
        EventKind.ENUMERATION,
        EventKind.UNKNOWN_EXTENSION,
    } <= kinds
    assert verdicts.level(ipaddress.ip_address(BYSTANDER)) == Level.WATCH


def test_same_evidence_over_tcp_is_proven_and_reaches_suspect_only() -> None:
    det, verdicts = detector(), Verdicts()
    for i in range(60):
        for ev in det.packet(
            ATK, 5062, PBX, 5060, register(str(i), f"t{i}", 1), now=float(i) / 10, tcp=True
        ):
            assert ev.verified
            verdicts.feed(ev)
    assert verdicts.level(ipaddress.ip_address(ATK)) == Level.SUSPECT


def test_tables_stay_capped_under_a_million_source_style_flood() -> None:
    det = detector(max_sources=500, max_challenges=300, max_pending=100)
    for i in range(5000):
        src = (0xC6330000 + i).to_bytes(4, "big")
        det.packet(src, 5060, PBX, 5060, register("1001", f"m{i}", 1), now=float(i))
        det.packet(
            PBX,
            5060,
            src,
            5060,
            response(401, "Unauthorized", "1001", f"m{i}", 1, nonce=f"n{i}"),
            now=float(i),
        )
        det.packet(src, 5060, PBX, 5060, register("1001", f"m{i}", 2, nonce=f"n{i}"), now=float(i))
    assert len(det.sources) == 500
    assert len(det.challenges) == 300
    assert len(det.pending) == 100
    assert det.stats["evicted"] == 4500
    # A busy attacker stays resident: it refreshed its entry and still correlates.
    assert [e.kind for e in crack_round(det, 7, 6000.0)].count(
        EventKind.AUTH_FAILED_WITH_CREDENTIALS
    ) == 1


def test_verdict_table_is_capped() -> None:
    det = detector()
    small = Verdicts(Policy(max_sources=100))
    for i in range(1000):
        src = (0xC0000200 + i).to_bytes(4, "big")
        for ev in det.packet(
            src, 5060, PBX, 5060, register(str(i), f"v{i}", 1, ua="sipcli/1"), now=float(i)
        ):
            small.feed(ev)
    assert len(small) == 100
    assert small.forgotten == 900


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([5060, 5061, 1234]))
def test_garbage_never_raises(payload: bytes, port: int) -> None:
    det = detector()
    det.packet(ATK, 1234, PBX, port, payload, now=1.0)
    det.packet(PBX, port, ATK, 1234, b"SIP/2.0 401 x\r\n" + payload, now=1.0)
