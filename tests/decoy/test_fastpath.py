"""The hot path answers exactly as the SIP core would: scan() either defers or agrees with
sip.parse, and build() is byte-identical to sip.build_response, on every vector, on
generated requests and on a fuzzed corpus."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as hs

from sipdeflect.decoy import fastpath
from sipdeflect.decoy.strategy import prepare
from sipdeflect.errors import SipParseError
from sipdeflect.sip import Request, build_response, parse
from tests.decoy.helpers import CAPTURED, VECTORS, sip
from tests.decoy.test_handle import _mutate

HANDMADE = [p.read_bytes() for p in sorted((VECTORS / "handmade").glob("*.sip"))]
EXTRA = [
    [],
    [("WWW-Authenticate", 'Digest realm="asterisk", nonce="0badc0de"')],
    [("Allow", "INVITE, ACK"), ("Server", "Fake/1")],
]


def agree(data: bytes, src: tuple[str, int] = ("203.0.113.5", 5099)) -> bool:
    """Assert agreement; True when the fast path took the message."""
    scanned = fastpath.scan(data)
    if scanned is None:
        return False
    method, index, vias = scanned
    msg = parse(data)  # the core must accept what the fast path accepts
    assert isinstance(msg, Request)
    assert method == msg.method
    assert index == msg.headers.index
    assert vias == [v for n, v in msg.headers.fields if n == "via"]
    for status in (200, 401, 404, 100):
        for extra in EXTRA:
            assert fastpath.build(index, vias, status, src, extra) == build_response(
                msg, status, source=src, headers=extra
            )
    return True


def test_vectors_agree_and_plain_ones_take_the_fast_path() -> None:
    taken = {name: agree(data) for name, data in CAPTURED.items()}
    assert all(taken.values()), taken  # every real scanner/sipp request is plain
    for data in HANDMADE:
        agree(data)
    assert not agree(Path(VECTORS / "handmade" / "folded-odd-whitespace.sip").read_bytes())


@settings(max_examples=300, deadline=None)
@given(
    method=hs.sampled_from(["REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE", "X-Y"]),
    user=hs.from_regex(r"[a-zA-Z0-9._-]{1,12}", fullmatch=True),
    extra=hs.lists(
        hs.tuples(
            hs.sampled_from(["v", "Via", "VIA", "f", "t", "i", "l", "X-A", "To", "cseq"]),
            hs.text(hs.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        ),
        max_size=4,
    ),
    host=hs.sampled_from(["198.51.100.7", "2001:db8::1", "10.0.0.1"]),
)
def test_generated_requests_agree(
    method: str, user: str, extra: list[tuple[str, str]], host: str
) -> None:
    more = "".join(f"{n}: {v}\r\n" for n, v in extra)
    data = sip(method, user=user, extra=more)
    try:
        parse(data)
    except SipParseError:
        assert fastpath.scan(data) is None
        return
    agree(data, (host, 5060))


def test_fuzzed_corpus_never_takes_what_the_core_rejects() -> None:
    rng = random.Random(7)
    seeds = [*CAPTURED.values(), *HANDMADE, sip("REGISTER", pad=10)]
    taken = 0
    for i in range(30_000):
        data = _mutate(rng, seeds[i % len(seeds)])
        scanned = fastpath.scan(data)
        if scanned is not None:
            taken += 1
            agree(data)
    assert taken > 1000  # the corpus exercised the fast path, not only the deferral


def test_memo_answers_as_view_and_reply_and_stays_bounded() -> None:
    memo = fastpath.Memo(cap=8)
    datas = [*CAPTURED.values(), *(sip("REGISTER", user=str(u), pad=10) for u in range(20))]
    sources = [("203.0.113.5", 5099), ("198.51.100.9", 40000)]
    for _ in range(2):  # the second pass hits the memo (for the last few) or refills it
        for data in datas:
            scanned = fastpath.scan(data)
            v = memo.view(data)
            if scanned is None:
                assert v is None
                continue
            assert v is not None
            method, index, vias = scanned
            assert (v.method, v.index, v.vias) == scanned
            assert v.prepared == prepare(method, index)
            for src in sources:  # the same bytes from two sources: each its own Via
                for status in (200, 404):
                    assert memo.reply(v, status, src) == fastpath.build(index, vias, status, src)
            assert len(memo.views) <= 8
            assert len(memo.replies) <= 8
    big = sip("REGISTER", pad=2000)
    memo.view(big)
    assert big not in memo.views  # oversized datagrams are not kept


def test_memo_stands_aside_for_a_flood_that_never_repeats_then_tries_again() -> None:
    memo = fastpath.Memo(cap=16, useless=4, rest=40)
    src = ("203.0.113.5", 5099)
    unique = [sip("REGISTER", user=str(1000 + u), pad=2) for u in range(200)]
    for data in unique[:17]:  # the 17th finds the table full with no hit: rest
        memo.view(data)
    assert memo.rests == 1
    assert memo.resting == 40
    assert not memo.replies
    for data in unique[17:57]:  # resting: answers as view + reply, nothing stored
        got = memo.view(data)
        scanned = fastpath.scan(data)
        assert scanned is not None
        assert got is not None
        assert (got.method, got.index, got.vias) == scanned
        assert memo.reply(got, 200, src) == fastpath.build(scanned[1], scanned[2], 200, src)
    assert memo.resting == 0
    assert len(memo.views) == 1  # the one stored when it stood aside
    assert len(memo.replies) <= 1  # (the last reply came after the rest ended)
    # A flood that repeats keeps the memo on: hits reset nothing and no rest follows.
    repeat = unique[:4]
    for _ in range(30):
        for data in repeat:
            memo.view(data)
    assert memo.rests == 1
    assert memo.hits > 100


def test_python_view_is_scan_prepare_and_build() -> None:
    """ViewPy (no C) and the parsed-request view the decoy makes for odd messages."""
    src = ("198.51.100.9", 40000)
    for data in CAPTURED.values():
        scanned = fastpath.scan_py(data)
        v = fastpath.view_py(data)
        assert scanned is not None
        assert v is not None
        method, index, vias = scanned
        assert (v.method, v.index, v.vias, v.clean) == (method, index, vias, True)
        assert v.prepared == prepare(method, index)
        assert v.get("call-id", b"") == index["call-id"]
        for extra in EXTRA:
            lines = fastpath.extra_lines(extra) if extra else b""
            assert v.reply(401, *src, lines) == fastpath.build_py(
                index, vias, 401, src, extra, clean=True
            )
    assert fastpath.view_py(b"SIP/2.0 200 OK\r\n\r\n") is None
