"""Sans-I/O SIP: bytes in, frozen messages out, response bytes back (RFC 3261, RFC 3581).

No sockets, clocks or subprocesses here. Everything an attacker can send either parses or
raises :class:`sipdeflect.errors.SipParseError`, which carries the status a server would use.
"""

from __future__ import annotations

from sipdeflect.errors import SipParseError
from sipdeflect.sip.build import build_response, reason_phrase, serialize
from sipdeflect.sip.message import Headers, Request, Response
from sipdeflect.sip.parse import parse, parse_name_addr, parse_uri, parse_via
from sipdeflect.sip.stream import KeepAlive, StreamReceiver
from sipdeflect.sip.values import CSeq, NameAddr, SipUri, Via

__all__ = [
    "CSeq",
    "Headers",
    "KeepAlive",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamReceiver",
    "Via",
    "build_response",
    "parse",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "serialize",
]
