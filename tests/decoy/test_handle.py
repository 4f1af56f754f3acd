"""Decoy.handle: answers match their transaction, never outgrow the request, and nothing an
attacker sends stops the decoy from answering the next request."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as hs

from sipdeflect.decoy.events import DropLog
from sipdeflect.decoy.strategy import aor_key
from sipdeflect.sip import Request, Response, parse
from tests.decoy.helpers import CAPTURED, SOURCE, Clock, make_decoy, request, sip


def answer(data: bytes, src: tuple[str, int] = SOURCE) -> Response:
    decoy, _ = make_decoy()
    out = decoy.handle(data, src)
    assert out is not None
    msg = parse(out)
    assert isinstance(msg, Response)
    return msg


def test_answers_match_the_transaction_and_copy_svcracks_tag() -> None:
    for name in ("register-sv-noauth", "register-sv-auth", "options-sv-noauth", "invite-sv-noauth"):
        req = request(name)
        resp = answer(CAPTURED[name])
        h, rh = req.headers, resp.headers
        # RFC 3261 8.2.6.2: Via list, From (with its tag, byte for byte), Call-ID, CSeq copied
        assert rh.get("from") == h.get("from"), name
        assert rh.get("call-id") == h.get("call-id")
        assert rh.get("cseq") == h.get("cseq")
        assert resp.vias[0].branch == req.vias[0].branch
        # RFC 3581: rport filled with the source port, received with the source address
        assert resp.vias[0].rport == SOURCE[1]
        assert resp.vias[0].received == SOURCE[0]
        assert resp.to.tag  # a final answer carries a To tag
        assert resp.to.uri == req.to.uri


def test_challenge_has_a_digest_that_svcrack_can_parse() -> None:
    resp = answer(sip("REGISTER", pad=100))
    assert resp.status == 401
    www = (resp.headers.get("www-authenticate") or b"").decode()
    assert www.startswith('Digest realm="asterisk", nonce="')


def test_flooder_state_is_per_source_address() -> None:
    decoy, _ = make_decoy()
    data = sip("REGISTER", user="2011", pad=100)
    statuses = [parse(decoy.handle(data, ("198.51.100.7", p)) or b"") for p in (5182, 5209)]
    assert [s.status for s in statuses if isinstance(s, Response)] == [401, 200]
    st = decoy.guard.table["198.51.100.7"]
    assert st.requests == 2
    assert st.closed
    assert st.challenged == aor_key(request_of(data).headers.index)
    fresh = parse(decoy.handle(data, ("198.51.100.8", 5182)) or b"")
    assert isinstance(fresh, Response)
    assert fresh.status == 401


def request_of(data: bytes) -> Request:
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


def test_challenge_that_would_outgrow_a_small_request_falls_back_to_403_or_silence() -> None:
    decoy, _ = make_decoy()
    tiny = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1;rport\r\n"
        b"f: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: 1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    out = decoy.handle(tiny, SOURCE)
    if out is not None:
        assert len(out) <= len(tiny)
        resp = parse(out)
        assert isinstance(resp, Response)
        assert resp.status == 403
    else:
        assert decoy.summary.drops["answer would be larger than the request"] == 1


@settings(max_examples=300, deadline=None)
@given(
    method=hs.sampled_from(["REGISTER", "INVITE", "OPTIONS", "BYE", "CANCEL", "MESSAGE", "XYZ"]),
    user=hs.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
    tag=hs.from_regex(r"[a-f0-9]{1,30}", fullmatch=True),
    pad=hs.integers(0, 50),
    auth=hs.booleans(),
    port=hs.integers(1, 65535),
)
def test_no_answer_is_larger_than_its_request(
    method: str, user: str, tag: str, pad: int, auth: bool, port: int
) -> None:
    decoy, _ = make_decoy()
    extra = 'Authorization: Digest username="a", response="b"\r\n' if auth else ""
    data = sip(method, user=user, tag=tag, pad=pad, extra=extra)
    for src in (("203.0.113.255", port), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", port)):
        out = decoy.handle(data, src)
        assert out is None or len(out) <= len(data)


def test_every_captured_vector_is_answered_no_larger() -> None:
    decoy, _ = make_decoy()
    for name, data in CAPTURED.items():
        out = decoy.handle(data, ("203.0.113.200", 65000))
        assert out is None or len(out) <= len(data), name


def _mutate(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 1500))
    if kind == 1:
        return data[: rng.randrange(len(data))]
    if kind == 2:
        return data + rng.randbytes(rng.randrange(66000)) if rng.random() < 0.001 else data * 2
    b = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        i = rng.randrange(len(b))
        if kind == 3:
            b[i] = rng.randrange(256)
        elif kind == 4:
            b[i:i] = rng.choice([b"\r\n", b":", b";", b"\x00", b" ", b"\xff", b"<", b",", b"\x1b["])
        else:
            del b[i : i + rng.randrange(1, 20)]
    return bytes(b)


def test_a_million_fuzzed_messages_then_still_answering() -> None:
    clock = Clock()
    lines: list[str] = []
    decoy, _ = make_decoy(clock=clock)
    droplog = DropLog(lines.append, per_second=10, clock=clock)
    decoy.hub.sinks = [droplog]
    rng = random.Random(4)
    seeds = [*CAPTURED.values(), sip("REGISTER", pad=40), sip("MESSAGE")]
    answered = 0
    for i in range(1_000_000):
        data = _mutate(rng, seeds[i % len(seeds)])
        answered += decoy.handle(data, (f"198.51.100.{i % 200 + 1}", 5060)) is not None
        if i % 10_000 == 9_999:
            decoy.hub.drain()
            clock.now += 1.0  # 100 fake seconds over the run
    decoy.hub.drain()
    s = decoy.summary
    assert s.messages == 1_000_000
    assert s.dropped > 100_000
    assert answered > 10_000
    # one log line per dropped packet, rate-limited: at most 10 a second + one tally a second
    assert 0 < len(lines) <= 101 * 11
    assert all("\x1b" not in line and "\x00" not in line for line in lines)
    out = decoy.handle(sip("OPTIONS", user="after", pad=100), ("198.51.100.250", 5060))
    assert out is not None
    assert out.startswith(b"SIP/2.0 401 ")


def test_svwar_deflected_mid_scan_gets_a_from_tag_it_cannot_decode() -> None:
    """svwar -m INVITE that already passed its first check against the PBX: the decoy's
    first INVITE gets the 407; the next extension gets a 404 whose From has no tag, on
    which svwar's getTag() returns None and it stops (nomore)."""
    decoy, _ = make_decoy()
    first = parse(decoy.handle(sip("INVITE", user="105", pad=200), SOURCE) or b"")
    assert isinstance(first, Response)
    assert first.status == 407
    data = sip("INVITE", user="106", pad=200)
    second = parse(decoy.handle(data, SOURCE) or b"")
    assert isinstance(second, Response)
    assert second.status == 404
    req = request_of(data)
    assert b"tag=" in (req.headers.get("from") or b"")
    assert b"tag=" not in (second.headers.get("from") or b"")
    assert second.vias[0].branch == req.vias[0].branch  # still matches its transaction
    # A REGISTER challenge from the same source does not count as an INVITE challenge.
    other = ("198.51.100.30", 5060)
    decoy.handle(sip("REGISTER", user="2011", pad=200), other)
    fresh = parse(decoy.handle(sip("INVITE", user="4082224538", pad=200), other) or b"")
    assert isinstance(fresh, Response)
    assert fresh.status == 407


def test_svcrack_deflected_mid_crack_is_challenged_after_the_404_and_then_accepted() -> None:
    """Mid-crack, svcrack resends its probe-tagged REGISTER whenever it holds no challenge;
    a 404 every time kept it looping forever. The repeat gets a challenge, its answer a 200."""
    decoy, _ = make_decoy()
    probe = CAPTURED["register-sv-noauth"]
    statuses = []
    for data in (probe, probe, CAPTURED["register-sv-auth"]):
        resp = parse(decoy.handle(data, SOURCE) or b"")
        assert isinstance(resp, Response)
        statuses.append(resp.status)
    assert statuses == [404, 401, 200]
