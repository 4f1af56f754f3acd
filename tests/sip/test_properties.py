"""Property tests: generated requests round-trip; hostile mutations raise only SipParseError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipdeflect.sip import Request, Response, StreamReceiver, build_response, parse, serialize
from tests.fuzz.target import exercise
from tests.sip.strategies import GenRequest, ipv4, requests
from tests.sip.vectors import ALL

SEEDS = [p.read_bytes() for p in ALL]


@given(requests)
def test_generated_request_parses_to_what_was_generated(g: GenRequest) -> None:
    msg = parse(g.encode())
    assert isinstance(msg, Request)
    assert msg.method == g.method
    (via,) = msg.vias
    assert (via.host, via.port, via.branch) == (g.via_host, g.via_port, f"z9hG4bK-{g.branch}")
    assert (via.rport is True) == g.rport
    assert msg.from_.uri.user == g.from_user
    assert msg.from_.tag == g.from_tag
    assert msg.to.tag == g.to_tag
    assert msg.call_id == g.call_id
    assert (msg.cseq.number, msg.cseq.method) == (g.cseq, g.method)
    assert msg.user_agent == g.user_agent
    assert msg.body == g.body
    assert msg.request_uri.host == g.ruri_host


@given(requests, ipv4, st.integers(1, 65535), st.sampled_from([200, 401, 403, 404, 486]))
def test_generated_request_build_parse(g: GenRequest, src: str, port: int, status: int) -> None:
    req = parse(g.encode())
    assert isinstance(req, Request)
    resp = parse(build_response(req, status, source=(src, port)))
    assert isinstance(resp, Response)
    assert resp.status == status
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    assert resp.from_ == req.from_
    assert resp.to.tag == (g.to_tag or resp.to.tag)
    assert resp.to.tag
    top = resp.vias[0]
    assert top.branch == req.vias[0].branch
    if g.rport:
        assert (top.rport, top.received) == (port, src)
    assert parse(serialize(resp)).headers.fields[: len(resp.headers)] == resp.headers.fields


@given(st.lists(requests, min_size=1, max_size=4), st.data())
def test_stream_any_split(gs: list[GenRequest], data: st.DataObject) -> None:
    blob = b"".join(g.encode() for g in gs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=8)))
    rx = StreamReceiver()
    got = []
    prev = 0
    for cut in [*cuts, len(blob)]:
        rx.feed(blob[prev:cut])
        prev = cut
        got += list(rx)
    assert got == [parse(g.encode()) for g in gs]


def _mutate(seed: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(seed)
    for kind, where, val in ops:
        if not b:
            break
        pos = where % len(b)
        if kind == 0:
            b[pos] = val
        elif kind == 1:
            b.insert(pos, val)
        elif kind == 2:
            del b[pos : pos + val % 16 + 1]
        else:
            b[pos:pos] = b[: val % 64]  # duplicate a slice: repeated headers, odd nesting
    return bytes(b)


mutations = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2**16), st.integers(0, 255)), max_size=12
)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), mutations)
def test_fuzz_mutated_vectors(seed: bytes, ops: list[tuple[int, int, int]]) -> None:
    exercise(_mutate(seed, ops))


@settings(max_examples=1000)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    exercise(data)


def test_exercise_reports_foreign_exceptions() -> None:
    # The invariant checker must itself be able to fail: a non-SipParseError escapes.
    with pytest.raises(AssertionError):
        exercise(b"", parser=lambda _: {}["boom"])  # KeyError from a broken parser
