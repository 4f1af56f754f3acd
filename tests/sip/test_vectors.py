"""Every vector parses, round-trips through build/serialize, and frames on a stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipdeflect.sip import (
    KeepAlive,
    Request,
    Response,
    StreamReceiver,
    build_response,
    parse,
    serialize,
)
from tests.sip.vectors import ALL, CAPTURED, EXPECTED, HANDMADE, ids


def _header_line(raw: bytes, *names: bytes) -> bytes:
    """The value of the first header named any of ``names``, read by regex (an oracle
    independent of the parser under test)."""
    alt = b"|".join(re.escape(n) for n in names)
    m = re.search(rb"(?im)^(?:" + alt + rb")[ \t]*:[ \t]*(.*?)[ \t]*\r?$", raw)
    assert m, names
    return m.group(1)


def test_vectors_exist() -> None:
    # The captured set holds every SIPVicious request shape plus sipp's INVITE.
    names = {p.stem for p in CAPTURED}
    assert {
        "register-sv-noauth",
        "register-sv-auth",
        "invite-sv-noauth",
        "options-sv-noauth",
        "invite-sipp-noauth",
    } <= names
    assert len(HANDMADE) == len(EXPECTED) >= 7


@pytest.mark.parametrize("path", CAPTURED, ids=ids(CAPTURED))
def test_captured_fields_match_an_independent_reading(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse(raw)
    assert isinstance(msg, Request)
    assert msg.method == raw.split(b" ", 1)[0].decode()
    assert msg.call_id == _header_line(raw, b"Call-ID", b"i").decode()
    num, method = _header_line(raw, b"CSeq").split()
    assert (msg.cseq.number, msg.cseq.method) == (int(num), method.decode())
    assert msg.headers.get("via") == _header_line(raw, b"Via", b"v")
    assert msg.from_.uri.host
    assert msg.to.uri.scheme == "sip"
    assert len(msg.body) == int(_header_line(raw, b"Content-Length", b"l"))


@pytest.mark.parametrize("path", HANDMADE, ids=ids(HANDMADE))
def test_handmade_expectations(path: Path) -> None:
    exp = EXPECTED[path.stem]
    msg = parse(path.read_bytes())
    if "status" in exp:
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (exp["status"], exp["reason"])
    else:
        assert isinstance(msg, Request)
        assert msg.method == exp["method"]
    assert msg.call_id == exp["call_id"]
    assert [msg.cseq.number, msg.cseq.method] == exp["cseq"]
    assert [[v.transport, v.host, v.port] for v in msg.vias] == exp["vias"]
    assert msg.from_.uri.user == exp["from_user"]
    assert msg.to.uri.user == exp["to_user"]
    assert msg.from_.tag == exp["from_tag"]
    assert msg.to.tag == exp["to_tag"]
    assert msg.user_agent == exp["user_agent"]
    assert len(msg.body) == exp["body"]
    if "from_display" in exp:
        assert msg.from_.display == exp["from_display"]
    if "contacts" in exp:
        assert len(msg.headers.get_all("m")) == exp["contacts"]
    if "allow" in exp:
        assert len(msg.headers.get_all("Allow")) == exp["allow"]
    if "subject" in exp:
        assert msg.headers.get("s") == str(exp["subject"]).encode()
    if "ruri_host" in exp:
        assert isinstance(msg, Request)
        assert (msg.request_uri.host, msg.request_uri.port) == (exp["ruri_host"], exp["ruri_port"])


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_serialize_round_trip(path: Path) -> None:
    first = parse(path.read_bytes())
    again = parse(serialize(first))
    fields = list(first.headers.fields)
    if "content-length" not in first.headers:
        fields.append(("content-length", b"%d" % len(first.body)))
    assert list(again.headers.fields) == fields
    assert again.body == first.body
    assert type(again) is type(first)
    if isinstance(first, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri) == (first.method, first.uri)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (first.status, first.reason)


REQUESTS = [p for p in ALL if isinstance(parse(p.read_bytes()), Request)]


@pytest.mark.parametrize("path", REQUESTS, ids=ids(REQUESTS))
def test_parse_build_parse(path: Path) -> None:
    req = parse(path.read_bytes())
    assert isinstance(req, Request)
    src = ("203.0.113.200", 40000)
    resp = parse(build_response(req, 200, source=src))
    assert isinstance(resp, Response)
    assert resp.status == 200
    # RFC 3261 8.2.6.2: From, Call-ID, CSeq copied unchanged; To gains a tag only if absent.
    assert resp.headers.get("from") == req.headers.get("from")
    assert resp.call_id == req.call_id
    assert resp.headers.get("cseq") == req.headers.get("cseq")
    to_req, to_resp = req.headers.get("to") or b"", resp.headers.get("to") or b""
    assert to_resp.startswith(to_req)
    assert resp.to.tag == (req.to.tag or resp.to.tag)
    assert resp.to.tag
    # Every Via, in order; the top one with received= and (if asked) rport= filled.
    req_vias, resp_vias = req.vias, resp.vias
    assert len(resp_vias) == len(req_vias)
    assert resp_vias[1:] == req_vias[1:]
    top = resp_vias[0]
    assert top.branch == req_vias[0].branch
    assert top.received == src[0]
    if req_vias[0].rport is True:
        assert top.rport == src[1]
    else:
        assert top.rport == req_vias[0].rport
    assert resp.body == b""


STREAMABLE = [p for p in ALL if b"\r\n\r\n" in p.read_bytes()]


def _drain(rx: StreamReceiver) -> list[Request | Response | KeepAlive]:
    return list(rx)


@pytest.mark.parametrize("path", STREAMABLE, ids=ids(STREAMABLE))
def test_stream_whole_bytewise_and_trailing(path: Path) -> None:
    raw = path.read_bytes()
    want = parse(raw)

    whole = StreamReceiver()
    whole.feed(raw)
    assert _drain(whole) == [want]
    assert whole.buffered == 0

    bytewise = StreamReceiver()
    got: list[Request | Response | KeepAlive] = []
    for i in range(len(raw)):
        bytewise.feed(raw[i : i + 1])
        got += _drain(bytewise)
    assert got == [want]

    # Trailing bytes: a keep-alive ping, the message again, and half of a third copy.
    trailing = StreamReceiver()
    trailing.feed(raw + b"\r\n\r\n" + raw + raw[: len(raw) // 2])
    assert _drain(trailing) == [want, KeepAlive(ping=True), want]
    assert trailing.buffered == len(raw) // 2
    trailing.feed(raw[len(raw) // 2 :] + b"\r\n")
    assert _drain(trailing) == [want]
    assert trailing.buffered == 2  # a lone CRLF could still grow into a ping
    trailing.feed(b"OPTIONS")
    assert _drain(trailing) == [KeepAlive(ping=False)]
