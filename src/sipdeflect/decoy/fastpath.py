# The decoy's hot path, measured: sip.parse + sip.build_response cost ~15 us of the ~20 us
# a flood datagram took, mostly building frozen Headers/Request values the decoy never reads.
# scan() reads a plain datagram (CRLF lines, no folding, no NUL, long or compact names) into
# just (method, first-value index, Via values) with the SIP core's own name cache and rules,
# and returns None ("defer") for anything less plain, so sip.parse still decides every odd
# case. build() is sip.build_response over those values. tests/decoy/test_fastpath.py holds
# both to the SIP core: for every vector and a fuzzed corpus, the fast answer is either
# deferred or byte-identical to parse + build_response. The decoy reads requests as a View:
# the C accelerator's (_cfast.c, built with the package when a compiler is there) keeps offsets
# into the datagram, computes strategy.prepare() and formats answers from the offsets, so a
# unique datagram's ~9 us of scan + build becomes ~0.9 us; ViewPy is the same over scan_py /
# build_py, which stay the reference that tests/decoy/test_cfast.py holds C to.
# SIPDEFLECT_NO_C=1 keeps the Python ones.
from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Protocol

from sipdeflect.decoy.strategy import METHOD_CLASS, SVCRACK_PROBE_TAG, Prepared, prepare
from sipdeflect.errors import SipParseError
from sipdeflect.sip.build import reason_phrase, top_via_with_source
from sipdeflect.sip.fields import TOKEN, canonical_name, split_list
from sipdeflect.sip.fields import _names as _name_cache
from sipdeflect.sip.parse import MANDATORY, MAX_BODY, MAX_HEADERS, MAX_MESSAGE

_MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5
_TAG = re.compile(rb";\s*tag\s*=", re.IGNORECASE)
_UNSAFE = re.compile(rb"[\r\n\x00]")
_METHODS = {
    m.encode(): m
    for m in [
        "REGISTER",
        "INVITE",
        "OPTIONS",
        "ACK",
        "CANCEL",
        "BYE",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "INFO",
        "PRACK",
        "UPDATE",
        "REFER",
        "PUBLISH",
    ]
}

Scanned = tuple[str, dict[str, bytes], list[bytes]]


def scan_py(data: bytes) -> Scanned | None:
    """(method, {canonical name: first value}, [Via values]) of a plain SIP request, or
    None when sip.parse must decide (anything unusual, malformed, or a response)."""
    if len(data) > MAX_MESSAGE or data[:1] in (b"\r", b"\n") or data.startswith(b"SIP/"):
        return None  # leading CRLF, responses ("SIP/2.0 ..."), oversize: the core decides
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    lines = head.split(b"\r\n")
    breaks = len(lines) - 1
    if (
        breaks < 1
        or breaks > MAX_HEADERS
        or head.count(b"\r") != breaks
        or head.count(b"\n") != breaks
        or b"\x00" in head
        or b"\r\n " in head
        or b"\r\n\t" in head
    ):
        return None  # bare CR/LF, NUL, folding, no or too many header lines
    parts = lines[0].split()
    if len(parts) != 3 or parts[2] != b"SIP/2.0" or b":" not in parts[1]:
        return None
    method = _METHODS.get(parts[0])
    if method is None:
        method = parts[0].decode("ascii", "replace")
        if not TOKEN.fullmatch(method):
            return None
    known = _name_cache.get
    index: dict[str, bytes] = {}
    vias: list[bytes] = []
    try:
        for line in lines[1:]:
            raw, colon, value = line.partition(b":")
            if not colon:
                return None  # a header line without a colon
            name = known(raw) or canonical_name(raw)  # validates and caches new spellings
            value = value.strip(b" \t")
            if name == "via":
                vias.append(value)
            if name not in index:
                index[name] = value
    except SipParseError:
        return None
    if not index.keys() >= MANDATORY:
        return None
    cseq = index["cseq"].split()
    if (
        len(cseq) != 2
        or not cseq[0].isdigit()
        or len(cseq[0]) > 10
        or int(cseq[0]) > _MAX_CSEQ
        or cseq[1] != parts[0]
    ):
        return None
    cl = index.get("content-length")
    if cl is not None and (
        not cl.isdigit() or len(cl) > 9 or int(cl) > MAX_BODY or int(cl) > len(data) - end - 4
    ):
        return None
    return method, index, vias


def to_tag(index: Mapping[str, bytes]) -> bytes:
    """sip.build.to_tag_for over an index: deterministic per dialog (Call-ID, From)."""
    crc = zlib.crc32(index.get("from", b""), zlib.crc32(index.get("call-id", b"")))
    return b"%08x" % crc


def extra_lines(headers: Sequence[tuple[str, str]]) -> bytes:
    """Extra header lines (our own values, made safe all the same)."""
    return b"".join(
        [
            b"%s: %s\r\n" % (n.encode(), _UNSAFE.sub(b" ", v.encode("utf-8", "replace")))
            for n, v in headers
        ]
    )


def build_py(
    index: Mapping[str, bytes],
    vias: Sequence[bytes],
    status: int,
    source: tuple[str, int],
    headers: Sequence[tuple[str, str]] = (),
    *,
    clean: bool = False,
) -> bytes:
    """sip.build_response(request, status, source=source, headers=headers) for a request
    given as its first-value index and Via values (RFC 3261 8.2.6.2, RFC 3581 4)."""
    extra = extra_lines(headers) if headers else b""
    return _block_py(index, vias, status, source, extra, clean=clean)


def _block_py(
    index: Mapping[str, bytes],
    vias: Sequence[bytes],
    status: int,
    source: tuple[str, int],
    extra: bytes,
    *,
    clean: bool,
) -> bytes:
    """build_py() with the extra header fields already made into lines (extra_lines)."""
    phrase = reason_phrase(status).encode()
    via_list = list(vias)
    if via_list:
        top = split_list(via_list[0])
        top[0] = top_via_with_source(top[0], source[0], source[1])
        via_list[0] = b", ".join(top)
    to_v = index.get("to", b"")
    if status != 100 and not _TAG.search(to_v, to_v.rfind(b">") + 1):
        to_v += b";tag=" + to_tag(index)
    fixed = [index.get("from", b""), to_v, index.get("call-id", b""), index.get("cseq", b"")]
    # ``clean``: the values came from scan(), which refused any CR, LF or NUL in the head.
    if not clean and _UNSAFE.search(b"".join([*via_list, *fixed])):
        via_list = [_UNSAFE.sub(b" ", v) for v in via_list]
        fixed = [_UNSAFE.sub(b" ", v) for v in fixed]
    from_v, to_v, call_id, cseq = fixed
    via_block = b"".join([b"Via: %s\r\n" % v for v in via_list])
    return (
        b"SIP/2.0 %d %s\r\n%sFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n%s"
        b"Content-Length: 0\r\n\r\n"
        % (status, phrase, via_block, from_v, to_v, call_id, cseq, extra)
    )


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"SIP/2.0 %d %s\r\n" % (
            status,
            reason_phrase(status).encode(),
        )
    return line


def configure(module: ModuleType) -> ModuleType:
    """Hand the C accelerator the SIP core's and the strategy's tables (once per load)."""
    module.configure(
        _name_cache,
        canonical_name,
        SipParseError,
        _METHODS,
        tuple(MANDATORY),
        METHOD_CLASS,
        "UNKNOWN",
        SVCRACK_PROBE_TAG,
        _status_line,
    )
    return module


def _load_c() -> ModuleType | None:
    """The C accelerator, configured with the SIP core's tables, or None."""
    if os.environ.get("SIPDEFLECT_NO_C"):
        return None
    try:
        from sipdeflect.decoy import _cfast  # noqa: PLC0415 - optional, built on setup
    except ImportError:
        return None
    return configure(_cfast)


C_MODULE = _load_c()  # also used by mmsg.open_batch


def _block_c(
    index: Mapping[str, bytes],
    vias: Sequence[bytes],
    status: int,
    source: tuple[str, int],
    extra: bytes,
    *,
    clean: bool,
) -> bytes:
    """_block_py() with the formatting done in C."""
    assert C_MODULE is not None
    return C_MODULE.build(  # type: ignore[no-any-return]
        index if isinstance(index, dict) else dict(index),
        vias if isinstance(vias, list) else list(vias),
        status,
        _status_line(status),
        source[0],
        source[1],
        extra,
        clean,
    )


def build_c(
    index: Mapping[str, bytes],
    vias: Sequence[bytes],
    status: int,
    source: tuple[str, int],
    headers: Sequence[tuple[str, str]] = (),
    *,
    clean: bool = False,
) -> bytes:
    """build_py() with the formatting done in C."""
    extra = extra_lines(headers) if headers else b""
    return _block_c(index, vias, status, source, extra, clean=clean)


class View(Protocol):
    """A request as the hot path reads it: _cfast.View, or ViewPy without C."""

    @property
    def data(self) -> bytes: ...
    @property
    def method(self) -> str: ...
    @property
    def prepared(self) -> Prepared: ...
    @property
    def index(self) -> Mapping[str, bytes]: ...
    @property
    def vias(self) -> list[bytes]: ...
    @property
    def clean(self) -> bool: ...
    def get(self, name: str, default: bytes, /) -> bytes: ...
    def reply(self, status: int, host: str, port: int, extra: bytes, /) -> bytes: ...


class ViewPy:
    """_cfast.View in Python: a request read by scan_py(), or one the SIP core parsed
    (``clean`` False: its values may hold CR, LF or NUL, which the answer blanks)."""

    __slots__ = ("clean", "data", "index", "method", "prepared", "vias")

    def __init__(
        self,
        data: bytes,
        method: str,
        index: Mapping[str, bytes],
        vias: list[bytes],
        clean: bool,
    ) -> None:
        self.data = data
        self.method = method
        self.index = index
        self.vias = vias
        self.clean = clean
        self.prepared = prepare(method, index)

    def get(self, name: str, default: bytes, /) -> bytes:
        return self.index.get(name, default)

    def reply(self, status: int, host: str, port: int, extra: bytes, /) -> bytes:
        return block(self.index, self.vias, status, (host, port), extra, clean=self.clean)


def view_py(data: bytes) -> ViewPy | None:
    """scan_py(data) as a View, or None when the SIP core must decide."""
    scanned = scan_py(data)
    return None if scanned is None else ViewPy(data, *scanned, clean=True)


ACCELERATED = C_MODULE is not None
scan = scan_py if C_MODULE is None else C_MODULE.scan
build = build_py if C_MODULE is None else build_c
block = _block_py if C_MODULE is None else _block_c
view: Callable[[bytes], View | None] = view_py if C_MODULE is None else C_MODULE.view


class Memo:
    """view() and View.reply() remembered per exact datagram. A flood resends the same
    bytes from each source for hours (the write-up's friendly-scanner flood;
    retransmissions), and these functions are pure, so a repeat skips them: the answer is
    still decided, and guarded, per packet by the caller. Bounded: datagrams up to
    ``max_size`` bytes, at most ``cap`` views and ``cap`` replies, each table emptied when
    full. A flood whose datagrams all differ (a counter in Call-ID or branch) never
    repeats: when the view table filled up with fewer than one hit per ``useless`` new
    entries, the memo stands aside for the next ``rest`` datagrams (no hashing, no
    storing), then tries again."""

    def __init__(
        self, cap: int = 2048, max_size: int = 1500, useless: int = 8, rest: int = 16_384
    ) -> None:
        self.cap = cap
        self.max_size = max_size
        self.useless = useless
        self.rest = rest
        self.views: dict[bytes, View | None] = {}
        self.replies: dict[tuple[bytes, tuple[str, int], int], bytes] = {}
        self.hits = 0  # view hits since the view table was last emptied
        self.resting = 0  # datagrams left to pass by
        self.rests = 0  # times the memo stood aside (for tests and stats)

    def view(self, data: bytes) -> View | None:
        """view(data): a plain request's View, or None when the SIP core must decide."""
        if self.resting:
            self.resting -= 1
            return view(data)
        views = self.views
        hit = views.get(data, _MISS)
        if hit is not _MISS:
            self.hits += 1
            return hit  # type: ignore[return-value]
        out = view(data)
        if len(data) <= self.max_size:
            if len(views) >= self.cap:
                if self.hits * self.useless < self.cap:
                    self.resting = self.rest
                    self.rests += 1
                    self.replies.clear()
                views.clear()
                self.hits = 0
            views[data] = out
        return out

    def reply(self, v: View, status: int, source: tuple[str, int]) -> bytes:
        """v.reply(status, *source, b""): what a flood's repeats get."""
        if self.resting:
            return v.reply(status, source[0], source[1], b"")
        key = (v.data, source, status)
        replies = self.replies
        out = replies.get(key)
        if out is None:
            out = v.reply(status, source[0], source[1], b"")
            if len(v.data) <= self.max_size:
                if len(replies) >= self.cap:
                    replies.clear()
                replies[key] = out
        return out


_MISS = object()
