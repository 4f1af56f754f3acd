"""The fuzz invariant, shared by the hypothesis test and the atheris runner.

For any bytes: parse() returns a message or raises SipParseError; every structured accessor
of a parsed message returns or raises SipParseError; a response built for a parsed request
parses back as a Response; a stream fed the same bytes raises nothing but SipParseError.
"""

from __future__ import annotations

from collections.abc import Callable

from sipdeflect.errors import SipParseError
from sipdeflect.sip import Request, Response, StreamReceiver, build_response, parse, serialize


def _accessors(msg: Request | Response) -> None:
    for get in (
        lambda: msg.vias,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.cseq,
        lambda: msg.call_id,
        lambda: msg.user_agent,
        lambda: msg.headers.get_all("contact"),
        lambda: serialize(msg),
    ):
        try:
            get()
        except SipParseError:
            pass
    if isinstance(msg, Request):
        try:
            _ = msg.request_uri
        except SipParseError:
            pass


def exercise(data: bytes, parser: Callable[[bytes], object] = parse) -> None:
    try:
        try:
            msg = parser(data)
        except SipParseError:
            msg = None
        if isinstance(msg, Request | Response):
            _accessors(msg)
            if isinstance(msg, Request):
                out = build_response(msg, 200, source=("203.0.113.1", 5060))
                assert isinstance(parse(out), Response), "built response does not parse"
        rx = StreamReceiver()
        try:
            rx.feed(data)
            for _ in rx:
                pass
        except SipParseError:
            pass
    except AssertionError:
        raise
    except Exception as exc:  # the invariant: nothing else may escape
        raise AssertionError(f"{type(exc).__name__}: {exc} on {data[:200]!r}") from exc
