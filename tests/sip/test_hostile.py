"""What an attacker can send: each case fails with SipParseError and the right status hint."""

from __future__ import annotations

import pytest

from sipdeflect.errors import SipParseError
from sipdeflect.sip import Request, StreamReceiver, parse
from sipdeflect.sip.parse import MAX_HEADERS

GOOD = (
    b"REGISTER sip:192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-x;rport\r\n"
    b"From: <sip:100@192.0.2.1>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n"
    b"Call-ID: abc\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
)


def test_good_baseline_parses() -> None:
    assert isinstance(parse(GOOD), Request)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"\x00" * 100, 400),
        (GOOD.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (GOOD.replace(b"REGISTER sip", b"REG ISTER sip", 1), 400),
        (GOOD.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE"), 400),
        (GOOD.replace(b"CSeq: 1 REGISTER", b"CSeq: 99999999999 REGISTER"), 400),
        (GOOD.replace(b"CSeq: 1 REGISTER", b"CSeq: x REGISTER"), 400),
        (GOOD.replace(b"Call-ID: abc\r\n", b""), 400),
        (GOOD.replace(b"Via: ", b"Via\x00: "), 400),
        (GOOD.replace(b"Call-ID: abc", b"Call-ID: a\rX-Injected: 1"), 400),
        (GOOD.replace(b"Content-Length: 0", b"Content-Length: 10"), 400),
        (GOOD.replace(b"Content-Length: 0", b"Content-Length: -1"), 400),
        (GOOD.replace(b"Content-Length: 0", b"Content-Length: 9999999"), 413),
        (GOOD.replace(b"Call-ID: abc", b"Call-ID abc"), 400),
        (GOOD.replace(b"Call-ID:", b"Call\xff-ID:"), 400),
        (b" Via: x\r\n" + GOOD, 400),
        (GOOD + b"x" * 70000, 513),
        (GOOD.replace(b"\r\n\r\n", b"\r\n" + b"X-A: 1\r\n" * MAX_HEADERS + b"\r\n"), 513),
        (b"SIP/2.0 99 Odd\r\n" + GOOD.split(b"\r\n", 1)[1], 400),
        (b"SIP/2.0 2000 OK\r\n" + GOOD.split(b"\r\n", 1)[1], 400),
    ],
    ids=lambda v: str(v)[:30] if isinstance(v, bytes) else str(v),
)
def test_rejected_with_status(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as err:
        parse(data)
    assert err.value.status == status


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Via", b"garbage"),
        ("Via", b"SIP/2.0/UDP [::1:5060"),
        ("Via", b"SIP/2.0/UDP h:99999"),
        ("From", b"<sip:a@b"),
        ("From", b"<http://x>"),
        ("To", b"nonsense"),
        ("From", b"<sip:a@b>junk"),
    ],
)
def test_structured_accessors_raise_only_parse_error(header: str, value: bytes) -> None:
    prefix = header.lower().encode() + b":"
    lines = [ln for ln in GOOD.split(b"\r\n") if not ln.lower().startswith(prefix)]
    lines.insert(1, header.encode() + b": " + value)
    msg = parse(b"\r\n".join(lines))  # structure is fine; the field itself is bad
    with pytest.raises(SipParseError):
        _ = (msg.vias, msg.from_, msg.to)


def test_stream_bound_on_unterminated_header() -> None:
    rx = StreamReceiver(max_buffer=1000)
    rx.feed(b"REGISTER sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 2000)
    with pytest.raises(SipParseError) as err:
        rx.next_event()
    assert err.value.status == 513
    with pytest.raises(SipParseError):  # stays broken, like h11
        rx.feed(b"\r\n\r\n")


def test_stream_rejects_huge_content_length_before_buffering() -> None:
    rx = StreamReceiver()
    rx.feed(GOOD.replace(b"Content-Length: 0", b"Content-Length: 999999"))
    with pytest.raises(SipParseError) as err:
        rx.next_event()
    assert err.value.status == 413


def test_stream_waits_for_body() -> None:
    msg = GOOD.replace(b"Content-Length: 0", b"Content-Length: 5") + b"hel"
    rx = StreamReceiver()
    rx.feed(msg)
    assert rx.next_event() is None
    rx.feed(b"lo")
    ev = rx.next_event()
    assert isinstance(ev, Request)
    assert ev.body == b"hello"
