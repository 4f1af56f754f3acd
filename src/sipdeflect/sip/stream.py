# TCP framing for SIP (RFC 3261 18.3, RFC 5626 3.5.1): feed bytes, take complete messages.
# A message ends after its header section plus Content-Length bytes of body; CRLF CRLF
# between messages is a keep-alive ping and a lone CRLF its pong. The buffer is bounded:
# a peer that sends more than one maximal message without completing it is an error, and
# like h11 the receiver stays broken after an error (re-raising it) instead of resyncing.
from __future__ import annotations

import re
from dataclasses import dataclass

from sipdeflect.errors import SipParseError
from sipdeflect.sip.message import Request, Response
from sipdeflect.sip.parse import MAX_BODY, MAX_MESSAGE, parse

_CL = re.compile(
    rb"^[ \t]*(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLF keep-alive: ``ping`` (CRLF CRLF, answer with CRLF) or pong (a lone CRLF)."""

    ping: bool


class StreamReceiver:
    """Incremental SIP-over-TCP framing. ``feed()`` bytes, iterate for events."""

    def __init__(self, max_buffer: int = MAX_MESSAGE + 4) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self._error: SipParseError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def __iter__(self) -> StreamReceiver:
        return self

    def __next__(self) -> Request | Response | KeepAlive:
        event = self.next_event()
        if event is None:
            raise StopIteration
        return event

    def next_event(self) -> Request | Response | KeepAlive | None:
        """The next complete event, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except SipParseError as exc:
            self._error = exc
            raise

    def _next(self) -> Request | Response | KeepAlive | None:
        buf = self._buf
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                return KeepAlive(ping=True)
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return None  # could still become a ping
            if buf[:2] == b"\r\n":
                del buf[:2]
                return KeepAlive(ping=False)
            del buf[:1]  # a stray LF: skip it (RFC 3261 7.5 leniency)
            return self._next()
        end = buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            if len(buf) > self._max:
                raise SipParseError("header section exceeds the buffer bound", 513)
            return None
        head = bytes(buf[:end])
        m = _CL.search(head)
        length = int(m.group(1)) if m else 0  # RFC 3261 18.3 requires it on streams
        if length > MAX_BODY:
            raise SipParseError("body too large", 413)
        total = end + sep + length
        if total > self._max:
            raise SipParseError("message exceeds the buffer bound", 513)
        if len(buf) < total:
            return None
        data = bytes(buf[:total])
        del buf[:total]
        return parse(data)
