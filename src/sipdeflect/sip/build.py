# Response builder (RFC 3261 8.2.6.2, 18.2.1; RFC 3581 4). It copies the request's raw
# Via/From/To/Call-ID/CSeq values and edits only the top Via (received, rport) and the To tag,
# so building costs a few byte joins rather than a structured parse. Every value that goes
# out is stripped of CR/LF/NUL so nothing copied from a request can start a new header line.
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

from sipdeflect.sip.fields import TOKEN, split_list
from sipdeflect.sip.message import Request, Response

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}

_TAG = re.compile(rb";\s*tag\s*=", re.IGNORECASE)
_UNSAFE = re.compile(rb"[\r\n\x00]")


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


def _safe(value: bytes) -> bytes:
    return _UNSAFE.sub(b" ", value)


def _sent_by_host(first: bytes) -> bytes:
    """Host of ``SIP/2.0/UDP host:port`` without port or brackets."""
    parts = first.split()
    sent_by = parts[-1] if len(parts) > 1 else b""
    if sent_by.startswith(b"["):
        return sent_by[1 : sent_by.find(b"]")]
    return sent_by.partition(b":")[0]


def top_via_with_source(via: bytes, host: str, port: int) -> bytes:
    """The top Via with ``received`` and, when asked (RFC 3581), ``rport`` filled in.

    RFC 3261 18.2.1: add received= when the sent-by host differs from the packet's source.
    RFC 3581 4: when rport is present without a value, fill it with the source port and
    always add received=.
    """
    first, *params = via.split(b";")
    src = host.encode()
    want_received = _sent_by_host(first) != src
    out = [first]
    for p in params:
        name = p.partition(b"=")[0].strip().lower()
        if name == b"received":
            continue  # replaced below
        if name == b"rport" and b"=" not in p:
            out.append(b"rport=%d" % port)
            want_received = True
        else:
            out.append(p)
    if want_received:
        out.append(b"received=" + src)
    return b";".join(out)


def to_tag_for(request: Request) -> str:
    """A deterministic To tag for this request's dialog (pure: no clock, no randomness)."""
    index = request.headers.index
    crc = zlib.crc32(index.get("from", b""), zlib.crc32(index.get("call-id", b"")))
    return f"{crc:08x}"


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    source: tuple[str, int] | None = None,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """Bytes of a response to ``request`` (RFC 3261 8.2.6).

    ``source`` is the (address, port) the request came from: the top Via gets received=/rport=.
    ``to_tag`` is added to To when it has none (not on 100 Trying); by default a tag derived
    from Call-ID and From. ``headers`` are extra (name, value) fields such as WWW-Authenticate.
    """
    phrase = (reason or reason_phrase(status)).encode("utf-8", "replace")
    index = request.headers.index
    vias = [v for n, v in request.headers.fields if n == "via"]
    if vias and source is not None:
        top = split_list(vias[0])
        top[0] = top_via_with_source(top[0], source[0], source[1])
        vias[0] = b", ".join(top)
    to_v = index.get("to", b"")
    if status != 100 and not _TAG.search(to_v, to_v.rfind(b">") + 1):
        to_v += b";tag=" + (to_tag or to_tag_for(request)).encode()
    fixed = [index.get("from", b""), to_v, index.get("call-id", b""), index.get("cseq", b"")]
    extra = b""
    if headers:
        for name, _ in headers:
            if not TOKEN.fullmatch(name):
                raise ValueError(f"bad header name {name!r}")
        extra = b"".join(
            b"%s: %s\r\n" % (n.encode(), _safe(v.encode("utf-8", "replace"))) for n, v in headers
        )
    # Values parsed off the wire never hold CR/LF/NUL, but a hand-made Request might: one
    # scan over everything copied keeps each field on its own line.
    if _UNSAFE.search(b"".join([phrase, *vias, *fixed])):
        phrase, vias, fixed = _safe(phrase), [_safe(v) for v in vias], [_safe(v) for v in fixed]
    from_v, to_v, call_id, cseq = fixed
    via_block = b"".join([b"Via: %s\r\n" % v for v in vias])
    return (
        b"SIP/2.0 %d %s\r\n%sFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n%s"
        b"Content-Length: %d\r\n\r\n%s"
        % (status, phrase, via_block, from_v, to_v, call_id, cseq, extra, len(body), body)
    )


_PRETTY = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}


def pretty_name(name: str) -> str:
    """Conventional spelling of a canonical header name (``call-id`` -> ``Call-ID``)."""
    return _PRETTY.get(name) or "-".join(p.capitalize() for p in name.split("-"))


def serialize(message: Request | Response) -> bytes:
    """Canonical bytes of a parsed message: long header names, CRLF, Content-Length fixed.

    parse(serialize(m)) gives back the same start line, fields and body as m.
    """
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {message.version}".encode("utf-8", "replace")
    else:
        start = f"{message.version} {message.status} {message.reason}".encode("utf-8", "replace")
    length = b"%d" % len(message.body)
    lines = [start]
    lines += [
        pretty_name(n).encode() + b": " + (length if n == "content-length" else _safe(v))
        for n, v in message.headers.fields
    ]
    if "content-length" not in message.headers.index:
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n\r\n" + message.body
