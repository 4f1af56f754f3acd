# Element changes straight to nf_tables over netlink, for the bulk path (100k-1M blocks):
# what nft itself sends after parsing, minus the parse. One NFNL batch (BATCH_BEGIN,
# NEWSETELEM/DELSETELEM messages, BATCH_END) in one sendmsg() on a NETLINK_NETFILTER socket
# is one kernel transaction: any error aborts all of it. Only for single-address elements
# of sets that already exist; tables, chains, rules and interval sets stay with nft.
#
# Encoding (pure, no I/O): each element is a fixed-size nest (NFTA_LIST_ELEM holding
# NFTA_SET_ELEM_TIMEOUT and NFTA_SET_ELEM_KEY/NFTA_DATA_VALUE), so a run of n elements is
# one template repeated n times with the keys (and timeouts, when they differ) written in
# by strided slice assignment: a few C-level copies instead of a Python loop per element.
# Attribute lengths are 16-bit, so a run is split into messages of at most 64 KiB.
#
# Sending: the kernel handles the whole batch inside sendmsg(), so replies are queued when
# it returns. The last message asks for an ACK; errors come unasked. The kernel delivers
# them after the commit or abort, so reading up to the ACK (or error) of the last message
# sees everything. Layouts: include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h.
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sipdeflect.errors import FirewallError
from sipdeflect.nsocket import socket_in

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP, NLM_F_CREATE = 0x300, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
NLA_F_NESTED = 0x8000
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION = 1, 4, 5
NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS = 7, 11
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
NFTA_DATA_VALUE = 1
NLMSGERR_ATTR_MSG = 1
NFPROTO_INET = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
# asm-generic/socket.h; the socket module names them only from Python 3.12
SO_SNDBUFFORCE: int = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)
MAX_ATTR = 0xFFFF  # nla_len is 16 bits

_NLMSGHDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class ElemRun:
    """Elements to add to (or delete from) one set: n keys of key_len bytes each, in
    network order, back to back. timeouts: None (no timeout attribute), one value in
    milliseconds for all, or n big-endian u64 milliseconds back to back."""

    delete: bool
    set: str
    key_len: int
    keys: bytes
    timeouts: int | bytes | None = None

    def __len__(self) -> int:
        return len(self.keys) // self.key_len


@dataclass(frozen=True, slots=True)
class Batch:
    data: bytes
    runs: dict[int, ElemRun]  # message sequence number -> the run it carries part of
    first_seq: int  # BATCH_BEGIN: the kernel answers here when it refuses the whole batch
    last_seq: int  # the message whose ACK closes the batch


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def _string(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def element_block(run: ElemRun) -> tuple[bytearray, int, int]:
    """Every element nest of a run back to back, the size of one, and how many fit in a
    message. Like libnftnl, the nests of a message are numbered 1, 2, ... (the kernel
    ignores that type), so the bytes match what nft sends."""
    klen = run.key_len
    if klen not in (4, 16) or len(run.keys) % klen:
        raise ValueError("keys are IPv4 or IPv6 addresses back to back")
    key = _ATTR.pack(8 + klen, NFTA_SET_ELEM_KEY | NLA_F_NESTED) + _ATTR.pack(
        4 + klen, NFTA_DATA_VALUE
    )
    tmo = run.timeouts
    head = b"" if tmo is None else _attr(NFTA_SET_ELEM_TIMEOUT, bytes(8))
    size = 4 + len(head) + len(key) + klen
    per_msg = (MAX_ATTR - 4) // size
    one = bytearray(_ATTR.pack(size, 0) + head + key + bytes(klen))
    if isinstance(tmo, int):
        one[8:16] = tmo.to_bytes(8, "big")
    n = len(run)
    buf = one * n
    index = struct.pack(f"={per_msg}H", *range(NLA_F_NESTED | 1, (NLA_F_NESTED | 1) + per_msg))
    index = (index * (n // per_msg + 1))[: 2 * n]
    buf[2::size], buf[3::size] = index[0::2], index[1::2]
    off, keys = size - klen, run.keys
    for k in range(klen):
        buf[off + k :: size] = keys[k::klen]
    if isinstance(tmo, bytes):
        if len(tmo) != 8 * n:
            raise ValueError("one timeout per key")
        for k in range(8):
            buf[8 + k :: size] = tmo[k::8]
    return buf, size, per_msg


def encode_batch(table: str, runs: Sequence[ElemRun], seq: int = 1) -> Batch:
    """One atomic NFNL batch adding/deleting every run's elements (inet family)."""
    first = seq
    parts: list[bytes | memoryview] = []
    owner: dict[int, ElemRun] = {}
    nfgen = bytes([NFPROTO_INET, 0]) + (0).to_bytes(2, "big")
    batch_gen = bytes([socket.AF_UNSPEC, 0]) + NFNL_SUBSYS_NFTABLES.to_bytes(2, "big")
    parts.append(_NLMSGHDR.pack(20, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0) + batch_gen)
    chunks: list[tuple[int, int, bytes, memoryview, ElemRun]] = []
    for run in runs:
        if not len(run):
            continue
        block, size, per_msg = element_block(run)
        names = _string(NFTA_SET_ELEM_LIST_TABLE, table) + _string(NFTA_SET_ELEM_LIST_SET, run.set)
        kind = NFT_MSG_DELSETELEM if run.delete else NFT_MSG_NEWSETELEM
        flags = NLM_F_REQUEST if run.delete else NLM_F_REQUEST | NLM_F_CREATE
        view, step = memoryview(block), per_msg * size
        chunks += [(kind, flags, names, view[i : i + step], run) for i in range(0, len(view), step)]
    for i, (kind, base_flags, names, body, run) in enumerate(chunks):
        seq += 1
        owner[seq] = run
        flags = base_flags | (NLM_F_ACK if i == len(chunks) - 1 else 0)
        length = 16 + 4 + len(names) + 4 + len(body)
        msg_type = (NFNL_SUBSYS_NFTABLES << 8) | kind
        parts += [
            _NLMSGHDR.pack(length, msg_type, flags, seq, 0) + nfgen + names,
            _ATTR.pack(4 + len(body), NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED),
            body,
        ]
    last = seq
    parts.append(_NLMSGHDR.pack(20, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0) + batch_gen)
    return Batch(b"".join(parts), owner, first, last)


@dataclass(frozen=True, slots=True)
class Reply:
    seq: int
    error: int  # 0 = ACK, else a positive errno
    message: str  # the kernel's extended-ACK text, if any


def parse_replies(data: bytes) -> Iterator[Reply]:
    """NLMSG_ERROR messages (ACKs and errors) in one datagram from the kernel."""
    off = 0
    while off + 16 <= len(data):
        length, kind, flags, _, _ = _NLMSGHDR.unpack_from(data, off)
        if length < 16:
            break
        if kind == NLMSG_ERROR and length >= 36:
            (err,) = struct.unpack_from("=i", data, off + 16)
            orig_len, _, _, orig_seq, _ = _NLMSGHDR.unpack_from(data, off + 20)
            text = ""
            if flags & NLM_F_ACK_TLVS:
                # With NETLINK_CAP_ACK only the request's header is echoed (CAPPED).
                tlv = off + 36 + (0 if flags & NLM_F_CAPPED else max(orig_len - 16, 0))
                while tlv + 4 <= off + length:
                    alen, atype = _ATTR.unpack_from(data, tlv)
                    if alen < 4:
                        break
                    if atype == NLMSGERR_ATTR_MSG:
                        text = data[tlv + 4 : tlv + alen].rstrip(b"\0").decode(errors="replace")
                    tlv += (alen + 3) & ~3
            yield Reply(orig_seq, -err, text)
        off += (length + 3) & ~3


# What each errno means for an element batch (the kernel's own words are added when sent).
_MEANING = {
    errno.ENOENT: "no such table or set",
    errno.EPERM: "permission denied (needs CAP_NET_ADMIN)",
    errno.ENFILE: "the set is full",
    errno.ENOSPC: "the set is full",
    errno.ENOMEM: "the kernel is out of memory",
    errno.EINVAL: "the kernel rejected the request as invalid",
    errno.EOPNOTSUPP: "not supported by this kernel",
}


def explain(reply: Reply, run: ElemRun | None, table: str) -> str:
    what = f"set inet {table} {run.set}" if run else f"table inet {table}"
    verb = "deleting elements from" if run and run.delete else "adding elements to"
    meaning = _MEANING.get(reply.error) or os.strerror(reply.error)
    extra = f" ({reply.message})" if reply.message else ""
    return f"nftables netlink: {verb} {what} failed: {meaning}{extra}; nothing was changed"


class Unavailable(Exception):
    """The netlink route cannot be used here (no socket, no privilege): use nft."""


def _open(netns: str | None) -> socket.socket:
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    return socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)


# One socket per thread for this process's own namespace (the daemon's decisions), kept
# open: closing a NETLINK_NETFILTER socket waits for nf_tables' deferred destruction of
# what the last batch deleted (an RCU grace period, ~10 ms here), which was most of the
# time of one deflect. Sockets for named namespaces are made per call and closed: a
# namespace can be deleted and its name reused.
_mine: dict[int, socket.socket] = {}


def _socket(netns: str | None) -> socket.socket:
    sock = _mine.get(threading.get_ident()) if netns is None else None
    if sock is not None:
        return sock
    try:
        sock = _open(netns)
    except OSError as exc:
        raise Unavailable(f"netlink socket: {exc.strerror or exc}") from None
    try:
        sock.bind((0, 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    except OSError as exc:
        sock.close()
        raise Unavailable(f"netlink socket options: {exc.strerror or exc}") from None
    if netns is None:
        _mine[threading.get_ident()] = sock
    return sock


def _drop(sock: socket.socket) -> None:
    if _mine.get(threading.get_ident()) is sock:
        del _mine[threading.get_ident()]
    with contextlib.suppress(OSError):
        sock.close()


def send(batch: Batch, table: str, netns: str | None = None, timeout: float = 120.0) -> None:
    """Send one batch and wait for the kernel's verdict; FirewallError if it refused (and
    then nothing changed), Unavailable if netlink could not even be tried."""
    if not batch.runs:
        return
    sock = _socket(netns)
    kept = False
    try:
        try:
            # The whole batch goes in one sendmsg(); it must fit the send buffer.
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(batch.data) + 65536)
        except OSError as exc:
            raise Unavailable(f"netlink send buffer: {exc.strerror or exc}") from None
        _drain(sock)
        sock.settimeout(timeout)
        try:
            sock.sendto(batch.data, (0, 0))
        except OSError as exc:
            raise FirewallError(f"nftables netlink: send failed: {exc.strerror or exc}") from None
        first_error = _verdict(sock, batch, table, timeout)
        if first_error is not None:
            raise FirewallError(explain(first_error, batch.runs.get(first_error.seq), table))
        kept = netns is None
    finally:
        if not kept:
            _drop(sock)


def _drain(sock: socket.socket) -> None:
    """Forget replies left over from an earlier batch (all queued by now: see the top)."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # BlockingIOError: nothing (more) to read
        while sock.recv(65536):
            pass


def _verdict(sock: socket.socket, batch: Batch, table: str, timeout: float) -> Reply | None:
    """Read replies up to the last message's; the first error among them, if any."""
    first_error: Reply | None = None
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise FirewallError(
                f"nftables netlink: no answer from the kernel within {timeout:.0f} s"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # only errors can be that many: it failed
                reason = first_error or Reply(0, errno.ENOBUFS, "too many errors to read")
                raise FirewallError(explain(reason, batch.runs.get(reason.seq), table)) from None
            raise FirewallError(f"nftables netlink: {exc.strerror or exc}") from None
        for reply in parse_replies(data):
            if reply.error and first_error is None:
                first_error = reply
            # An error on BATCH_BEGIN may be the only answer (EPERM, ENOMEM).
            if reply.seq == batch.last_seq or (reply.error and reply.seq == batch.first_seq):
                return first_error


# -- Listing: one NFT_MSG_GETSETELEM dump per set ------------------------------------------
#
# The kernel answers a dump with NFT_MSG_NEWSETELEM messages (NLM_F_MULTI) of up to ~32 KiB,
# each naming the table and set and holding NFTA_SET_ELEM_LIST_ELEMENTS: one NFTA_LIST_ELEM
# nest per element (key, timeout and expiration in ms, the counter expression), then
# NLMSG_DONE. The elements of one set nearly always share one layout, so a message is
# parsed like element_block() builds one, in reverse: learn the layout from its first
# element, check that every element has it (the bytes outside the values equal the first
# element's), and read each value as a column with strided slices. A message that mixes
# layouts (some elements without a timeout) is walked element by element instead.

_SETELEM_MSG = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
_U64_FIELDS = ("timeouts", "expires", "packets", "bytes")
_seq = iter(range(1 << 24, 1 << 31))  # dump sequence numbers, apart from the batches'


class DumpError(FirewallError):
    """A set element dump failed: errno is the kernel's (positive), 0 when the reply
    could not be read (cut short, malformed)."""

    def __init__(self, message: str, error: int = 0) -> None:
        super().__init__(message)
        self.errno = error


@dataclass(slots=True)
class Elements:
    """A set's elements as columns, in the kernel's order: keys as integers (key_len
    bytes each, 4 or 16), timeouts and time left in milliseconds, the counter's packets
    and bytes; None where an element lacks that attribute."""

    key_len: int = 0
    keys: list[int] = dataclasses.field(default_factory=list)
    timeouts: list[int | None] = dataclasses.field(default_factory=list)
    expires: list[int | None] = dataclasses.field(default_factory=list)
    packets: list[int | None] = dataclasses.field(default_factory=list)
    bytes: list[int | None] = dataclasses.field(default_factory=list)
    interrupted: bool = False  # the kernel flagged the dump inconsistent (NLM_F_DUMP_INTR)

    def __len__(self) -> int:
        return len(self.keys)


def dump_request(table: str, set_: str, seq: int) -> bytes:
    body = bytes([NFPROTO_INET, 0, 0, 0])
    body += _string(NFTA_SET_ELEM_LIST_TABLE, table) + _string(NFTA_SET_ELEM_LIST_SET, set_)
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM
    return _NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _bad(why: str) -> DumpError:
    return DumpError(f"nftables netlink: malformed set element dump: {why}")


def _attrs(buf: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload start, payload end) of each attribute in buf[off:end]."""
    while off < end:
        if off + 4 > end:
            raise _bad("attribute header cut short")
        alen, atype = _ATTR.unpack_from(buf, off)
        if alen < 4 or off + alen > end:
            raise _bad(f"attribute length {alen} does not fit")
        yield atype & 0x3FFF, off + 4, off + alen
        off += (alen + 3) & ~3


def _counter(buf: bytes, start: int, end: int, where: dict[str, tuple[int, int]]) -> None:
    name, data = b"", (0, 0)
    for kind, s, e in _attrs(buf, start, end):
        if kind == NFTA_EXPR_NAME:
            name = buf[s:e].rstrip(b"\0")
        elif kind == NFTA_EXPR_DATA:
            data = (s, e)
    if name == b"counter":
        for kind, s, e in _attrs(buf, *data):
            if kind == NFTA_COUNTER_PACKETS:
                where["packets"] = (s, e - s)
            elif kind == NFTA_COUNTER_BYTES:
                where["bytes"] = (s, e - s)


def _element(buf: bytes, start: int, end: int) -> dict[str, tuple[int, int]]:
    """Where each value of one element sits: field -> (offset in buf, length)."""
    where: dict[str, tuple[int, int]] = {}
    for kind, s, e in _attrs(buf, start, end):
        if kind == NFTA_SET_ELEM_KEY:
            for inner, vs, ve in _attrs(buf, s, e):
                if inner == NFTA_DATA_VALUE:
                    where["keys"] = (vs, ve - vs)
        elif kind == NFTA_SET_ELEM_TIMEOUT:
            where["timeouts"] = (s, e - s)
        elif kind == NFTA_SET_ELEM_EXPIRATION:
            where["expires"] = (s, e - s)
        elif kind == NFTA_SET_ELEM_EXPR:
            _counter(buf, s, e, where)
        elif kind == NFTA_SET_ELEM_EXPRESSIONS:
            for inner, xs, xe in _attrs(buf, s, e):
                if inner == NFTA_LIST_ELEM:
                    _counter(buf, xs, xe, where)
    if where.get("keys", (0, 0))[1] not in (4, 16):
        raise _bad("an element without an IPv4 or IPv6 key")
    if any(where.get(f, (0, 8))[1] != 8 for f in _U64_FIELDS):
        raise _bad("a 64-bit value of the wrong size")
    return where


def _one(buf: bytes, where: dict[str, tuple[int, int]], out: Elements) -> None:
    s, n = where["keys"]
    if out.key_len != n:
        raise _bad("keys of different sizes in one set")
    out.keys.append(int.from_bytes(buf[s : s + n], "big"))
    for f in _U64_FIELDS:
        at = where.get(f)
        col: list[int | None] = getattr(out, f)
        col.append(None if at is None else int.from_bytes(buf[at[0] : at[0] + 8], "big"))


def _columns(buf: bytes, start: int, end: int, out: Elements) -> None:
    """The elements in buf[start:end] (an NFTA_SET_ELEM_LIST_ELEMENTS payload)."""
    if start >= end:
        return
    _, first_s, first_e = next(_attrs(buf, start, end))
    where = _element(buf, first_s, first_e)
    if not out.key_len:
        out.key_len = where["keys"][1]
    size = first_e - start
    n = (end - start) // size
    if size % 4 == 0 and n * size == end - start:
        block = buf[start:end]
        masked = bytearray(block)
        zeros = bytes(n)
        rel = {f: (at - start, length) for f, (at, length) in where.items()}
        for at, length in rel.values():
            for k in range(length):
                masked[at + k :: size] = zeros
        if masked == masked[:size] * n:  # every element laid out like the first
            if rel["keys"][1] != out.key_len:
                raise _bad("keys of different sizes in one set")
            for f, (at, length) in rel.items():
                col = bytearray(n * length)
                for k in range(length):
                    col[k::length] = block[at + k :: size]
                if f == "keys" and length == 16:
                    q = struct.unpack(f">{2 * n}Q", col)
                    out.keys += [(hi << 64) | lo for hi, lo in zip(q[0::2], q[1::2], strict=True)]
                else:
                    values = struct.unpack(f">{n}{'I' if length == 4 else 'Q'}", col)
                    getattr(out, f).extend(values)
            for f in _U64_FIELDS:
                if f not in rel:
                    getattr(out, f).extend([None] * n)
            return
    for kind, s, e in _attrs(buf, start, end):
        if kind == NFTA_LIST_ELEM:
            _one(buf, _element(buf, s, e), out)


def parse_dump(data: bytes, seq: int, out: Elements) -> bool:
    """Add the elements in one datagram of a dump's answer to out; True once NLMSG_DONE
    came. DumpError for a kernel error or anything cut short or malformed."""
    try:
        return _parse_dump(data, seq, out)
    except (struct.error, ValueError, IndexError, StopIteration) as exc:  # belt and braces
        raise _bad(str(exc) or type(exc).__name__) from None


def _parse_dump(data: bytes, seq: int, out: Elements) -> bool:
    off = 0
    while off < len(data):
        if off + 16 > len(data):
            raise _bad("message header cut short")
        length, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(data, off)
        end = off + length
        if length < 16 or end > len(data):
            raise _bad(f"message length {length} does not fit")
        if mseq == seq:
            out.interrupted |= bool(flags & NLM_F_DUMP_INTR)
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                if length < 20:
                    raise _bad("error code cut short")
                (err,) = struct.unpack_from("=i", data, off + 16)
                if err:
                    said = [r.message for r in parse_replies(data[off:end]) if r.message]
                    text = f" ({said[0]})" if kind == NLMSG_ERROR and said else ""
                    meaning = _MEANING.get(-err) or os.strerror(-err)
                    raise DumpError(f"{meaning}{text}", -err)
                if kind == NLMSG_DONE:
                    return True
            elif kind == _SETELEM_MSG:
                if length < 20:
                    raise _bad("message cut short")
                for attr, s, e in _attrs(data, off + 20, end):
                    if attr == NFTA_SET_ELEM_LIST_ELEMENTS:
                        _columns(data, s, e, out)
        off += (length + 3) & ~3
    return False


def list_set(table: str, set_: str, netns: str | None = None, timeout: float = 120.0) -> Elements:
    """Every element of set inet table set_ with its timeout, time left and counter, in
    one dump; DumpError (errno ENOENT: no such table or set) if the kernel refuses,
    Unavailable if netlink could not even be tried. A dump the kernel marks inconsistent
    (the set changed under it) is retried, at most three times in all."""
    sock = _socket(netns)
    kept = False
    try:
        out = _consistent(sock, table, set_, timeout)
    except DumpError as exc:
        if exc.errno:
            kept = netns is None  # a refusal leaves nothing queued
            raise DumpError(
                f"nftables netlink: listing set inet {table} {set_} failed: {exc}", exc.errno
            ) from None
        raise
    else:
        kept = netns is None
        return out
    finally:
        if not kept:
            _drop(sock)


def _consistent(sock: socket.socket, table: str, set_: str, timeout: float) -> Elements:
    for _ in range(3):
        out = _dump(sock, table, set_, timeout)
        if not out.interrupted:
            return out
    raise DumpError(f"nftables netlink: set inet {table} {set_} kept changing while listed")


def _dump(sock: socket.socket, table: str, set_: str, timeout: float) -> Elements:
    _drain(sock)
    sock.settimeout(timeout)
    seq = next(_seq)
    out = Elements()
    try:
        sock.sendto(dump_request(table, set_, seq), (0, 0))
        while not parse_dump(sock.recv(65536), seq, out):
            pass
    except TimeoutError:
        raise FirewallError(
            f"nftables netlink: no answer from the kernel within {timeout:.0f} s"
        ) from None
    except OSError as exc:
        raise FirewallError(f"nftables netlink: {exc.strerror or exc}") from None
    return out
