"""Response building per RFC 3261 8.2.6 and RFC 3581, and that nothing can inject a line."""

from __future__ import annotations

import pytest

from sipdeflect.sip import Headers, Request, Response, build_response, parse
from sipdeflect.sip.build import top_via_with_source

REQ = parse(
    b"REGISTER sip:192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.242.91.15:5182;branch=z9hG4bK-2528031440;rport\r\n"
    b'From: "2011" <sip:2011@192.0.2.1>;tag=3130\r\nTo: "2011" <sip:2011@192.0.2.1>\r\n'
    b"Call-ID: 3361196543\r\nCSeq: 1 REGISTER\r\nUser-Agent: friendly-scanner\r\n"
    b"Content-Length: 0\r\n\r\n"
)
assert isinstance(REQ, Request)


def _resp(data: bytes) -> Response:
    msg = parse(data)
    assert isinstance(msg, Response)
    return msg


def test_cseq_is_copied_not_incremented() -> None:
    # The write-up's responder sent CSeq + 1; clients match transactions on CSeq.
    resp = _resp(build_response(REQ, 200, source=("203.0.113.5", 5182)))
    assert resp.cseq == REQ.cseq
    assert resp.status == 200
    assert resp.reason == "OK"


@pytest.mark.parametrize(
    ("via", "src", "want"),
    [
        # rport without value: fill it and always add received (RFC 3581 4)
        (
            b"SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK-1",
            ("203.0.113.5", 4000),
            b"SIP/2.0/UDP 10.0.0.1:5060;rport=4000;branch=z9hG4bK-1;received=203.0.113.5",
        ),
        # no rport, sent-by differs from source: received only (RFC 3261 18.2.1)
        (
            b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1",
            ("203.0.113.5", 4000),
            b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;received=203.0.113.5",
        ),
        # no rport, sent-by equals source: nothing added
        (
            b"SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-1",
            ("203.0.113.5", 4000),
            b"SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-1",
        ),
        # rport with a value and a stale received: received replaced, rport kept
        (
            b"SIP/2.0/UDP h;received=1.2.3.4;rport=9",
            ("203.0.113.5", 4000),
            b"SIP/2.0/UDP h;rport=9;received=203.0.113.5",
        ),
        # IPv6 sent-by in brackets equal to the source: nothing added
        (
            b"SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bK-6",
            ("2001:db8::5", 5060),
            b"SIP/2.0/UDP [2001:db8::5]:5060;branch=z9hG4bK-6",
        ),
    ],
)
def test_top_via_received_and_rport(via: bytes, src: tuple[str, int], want: bytes) -> None:
    assert top_via_with_source(via, *src) == want


def test_to_tag_added_once_and_kept_if_present() -> None:
    resp = _resp(build_response(REQ, 404, to_tag="deadbeef"))
    assert resp.to.tag == "deadbeef"
    assert resp.headers.get("to") == REQ.headers.get("to") + b";tag=deadbeef"
    tagged = Request(
        Headers(tuple((n, v + b";tag=x9" if n == "to" else v) for n, v in REQ.headers.fields)),
        b"",
        b"",
        "REGISTER",
        "sip:x",
    )
    assert _resp(build_response(tagged, 200, to_tag="other")).to.tag == "x9"
    # 100 Trying carries no To tag (RFC 3261 8.2.6.2)
    assert _resp(build_response(REQ, 100)).to.tag is None


def test_default_to_tag_is_stable_per_dialog() -> None:
    a = _resp(build_response(REQ, 401)).to.tag
    b = _resp(build_response(REQ, 200)).to.tag
    assert a == b
    assert a


def test_extra_headers_and_body() -> None:
    out = build_response(
        REQ,
        401,
        headers=[("WWW-Authenticate", 'Digest realm="x", nonce="n"'), ("Server", "decoy")],
        body=b"hi",
    )
    resp = _resp(out)
    assert resp.headers.get("www-authenticate") == b'Digest realm="x", nonce="n"'
    assert resp.headers.get("server") == b"decoy"
    assert resp.body == b"hi"
    with pytest.raises(ValueError, match="bad header name"):
        build_response(REQ, 200, headers=[("Bad Name", "x")])


@pytest.mark.parametrize(
    "evil",
    [
        b"abc\r\nX-Injected: 1",
        b"abc\nX-Injected: 1",
        b"abc\rX-Injected: 1",
        b"abc\x00X-Injected: 1",
    ],
)
def test_no_header_injection_from_copied_values(evil: bytes) -> None:
    # A hand-made Request (the parser itself never lets CR/LF/NUL through) with a hostile
    # Call-ID, From and Via: every copied value must stay on its own line.
    fields = tuple(
        (n, evil if n in {"call-id", "from", "via"} else v) for n, v in REQ.headers.fields
    )
    req = Request(Headers(fields), b"", b"", "REGISTER", "sip:x")
    out = build_response(
        req, 200, source=("203.0.113.5", 1), headers=[("Server", "a\r\nX-Injected: 2")]
    )
    lines = out.split(b"\r\n")
    assert not any(line.startswith(b"X-Injected") for line in lines)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert b"\r" not in out.replace(b"\r\n", b"")
    assert b"\x00" not in out
    assert out.endswith(b"Content-Length: 0\r\n\r\n")


def test_reply_is_not_larger_than_a_scanner_request() -> None:
    # The decoy's anti-reflection rule needs this headroom for the common 200/401/404 cases.
    for status in (200, 404, 403):
        assert len(build_response(REQ, status, source=("203.0.113.5", 5182))) <= len(REQ.raw)
