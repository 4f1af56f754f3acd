# Batched datagram I/O for the decoy's UDP loop on Linux: recvmmsg(2) fills up to `n` slots
# in one system call (MSG_WAITFORONE: block for the first datagram, then take only what is
# already queued, so a lone packet is answered at once), sendmmsg(2) sends a batch's
# replies in one. Neither is in Python's stdlib, so they are called through ctypes (which
# releases the GIL while blocked). The C structures are laid out once over plain buffers;
# the loop reads and writes their few per-message fields through memoryview casts, which
# costs far less than ctypes attribute access. Each reply is written back into its
# request's receive slot (a UDP reply is never larger than its request) and sent to the
# sockaddr the kernel wrote for that request, so a reply cannot go to another source.
# available() is False off 64-bit Linux or without libc: the server then keeps its plain
# recvmsg/sendto loop. open_batch() prefers the C accelerator's Batch (_cfast.c: the same
# slots and rules, with the per-message Python of recv/send done in C) when it is built.
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import socket
import sys
from collections.abc import Sequence
from typing import Protocol

from sipdeflect.decoy.fastpath import C_MODULE

MSG_WAITFORONE = 0x10000
MSG_TRUNC = 0x20
MAX_DATAGRAM = 65536  # above any UDP payload (65,507 B over IPv4, 65,527 B over IPv6)
NAME_SIZE = 32  # >= sizeof(struct sockaddr_in6) == 28
CONTROL_SIZE = 64  # one IP_PKTINFO / IPV6_PKTINFO message (32 / 36 bytes with its header)
CACHE_CAP = 65_536  # decoded source addresses and ancillary data kept (cleared when full)

Source = tuple[str, int]
Ancillary = tuple[tuple[int, int, bytes], ...]  # immutable: guard caches by identity
Packet = tuple[bytes, Source, Ancillary]


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_HDR = ctypes.sizeof(_Mmsghdr)
# Field offsets in units of the view that reads them (u32 for 4-byte fields, u64 for 8).
_NAME = _Msghdr.msg_name.offset // 8
_NAMELEN = _Msghdr.msg_namelen.offset // 4
_IOV = _Msghdr.msg_iov.offset // 8
_IOVLEN = _Msghdr.msg_iovlen.offset // 8
_CONTROL = _Msghdr.msg_control.offset // 8
_CONTROLLEN = _Msghdr.msg_controllen.offset // 8
_FLAGS = _Msghdr.msg_flags.offset // 4
_LEN = _Mmsghdr.msg_len.offset // 4


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


def _address(view: memoryview, i: int, size: int) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view, i * size))


def decode_sockaddr(raw: bytes) -> Source:
    """(host, port) of a struct sockaddr_in / sockaddr_in6, as socket.recvfrom gives it."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    raise ValueError(f"address family {family}")


def decode_control(raw: bytes) -> Ancillary:
    """The (level, type, data) items socket.recvmsg would give for this control buffer."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos + 16 <= len(raw):  # struct cmsghdr: size_t len, int level, int type
        length = int.from_bytes(raw[pos : pos + 8], sys.byteorder)
        if length < 16 or pos + length > len(raw):
            break
        level = int.from_bytes(raw[pos + 8 : pos + 12], sys.byteorder, signed=True)
        kind = int.from_bytes(raw[pos + 12 : pos + 16], sys.byteorder, signed=True)
        out.append((level, kind, raw[pos + 16 : pos + length]))
        pos += (length + 7) & ~7  # CMSG_ALIGN
    return tuple(out)


class Batch:
    """recvmmsg/sendmmsg slots for one socket. Not thread-safe: one per UDP loop."""

    def __init__(self, sock: socket.socket, n: int = 64) -> None:
        if _LIBC is None:
            raise OSError("recvmmsg/sendmmsg are not available here")
        self.fd = sock.fileno()
        self.n = n
        self.recvmmsg = _LIBC.recvmmsg
        self.sendmmsg = _LIBC.sendmmsg
        # Receive side: n headers, each with one iovec over its own data slot, a name slot
        # and a control slot. The data slots are an anonymous mapping: pages are touched
        # only as far as datagrams reach, so 64 x 64 KiB costs little resident memory.
        self._data = mmap.mmap(-1, n * MAX_DATAGRAM)
        self.data = memoryview(self._data)
        self.names = memoryview(bytearray(n * NAME_SIZE))
        self.controls = memoryview(bytearray(n * CONTROL_SIZE))
        self.iov = memoryview(bytearray(n * ctypes.sizeof(_Iovec)))
        self.hdrs = memoryview(bytearray(n * _HDR))
        self.data_at = [_address(self.data, i, MAX_DATAGRAM) for i in range(n)]
        self.name_at = [_address(self.names, i, NAME_SIZE) for i in range(n)]
        iov64 = self.iov.cast("Q")
        h64, h32 = self.hdrs.cast("Q"), self.hdrs.cast("I")
        iov_at = _address(self.iov, 0, 1)
        per = _HDR // 8
        for i in range(n):
            iov64[2 * i], iov64[2 * i + 1] = self.data_at[i], MAX_DATAGRAM
            h64[i * per + _NAME] = self.name_at[i]
            h32[i * per * 2 + _NAMELEN] = NAME_SIZE
            h64[i * per + _IOV] = iov_at + i * ctypes.sizeof(_Iovec)
            h64[i * per + _IOVLEN] = 1
            h64[i * per + _CONTROL] = _address(self.controls, i, CONTROL_SIZE)
            h64[i * per + _CONTROLLEN] = CONTROL_SIZE
        self.h64, self.h32 = h64, h32
        self.hdrs_at = _address(self.hdrs, 0, 1)
        # Send side: n headers, each with its own iovec; pointed per reply at the request's
        # name slot and (rewritten) data slot.
        self.siov = memoryview(bytearray(n * ctypes.sizeof(_Iovec)))
        self.shdrs = memoryview(bytearray(n * _HDR))
        self.siov64 = self.siov.cast("Q")
        self.s64, self.s32 = self.shdrs.cast("Q"), self.shdrs.cast("I")
        siov_at = _address(self.siov, 0, 1)
        for j in range(n):
            self.s64[j * per + _IOV] = siov_at + j * ctypes.sizeof(_Iovec)
            self.s64[j * per + _IOVLEN] = 1
        self.shdrs_at = _address(self.shdrs, 0, 1)
        self.used = n  # slots whose lengths the last call may have changed
        self.slots: list[int] = []  # the receive slot of each packet recv() returned
        self.sources: dict[bytes, Source] = {}
        self.ancillary: dict[bytes, Ancillary] = {}
        self.send_errors = 0
        self.truncated = 0

    def recv(self) -> list[Packet]:
        """Block for at least one datagram; return all that were queued (up to n). An
        empty list after shutdown(); OSError for a failed call (e.g. EINTR)."""
        per32 = _HDR // 4
        per64 = _HDR // 8
        h32, h64 = self.h32, self.h64
        for i in range(self.used):  # the kernel wrote back the lengths: restore them
            h32[i * per32 + _NAMELEN] = NAME_SIZE
            h64[i * per64 + _CONTROLLEN] = CONTROL_SIZE
        k = self.recvmmsg(self.fd, self.hdrs_at, self.n, MSG_WAITFORONE, None)
        if k < 0:
            self.used = 0
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.used = k
        out: list[Packet] = []
        slots = self.slots = []
        data, names, controls = self.data, self.names, self.controls
        sources, ancillary = self.sources, self.ancillary
        for i in range(k):
            base32 = i * per32
            if h32[base32 + _FLAGS] & MSG_TRUNC:
                self.truncated += 1
                continue
            size = h32[base32 + _LEN]
            namelen = h32[base32 + _NAMELEN]
            if not namelen:  # shutdown() wakes the call with an empty, nameless read
                continue
            start = i * MAX_DATAGRAM
            raw = names[i * NAME_SIZE : i * NAME_SIZE + namelen].tobytes()
            src = sources.get(raw)
            if src is None:
                if len(sources) >= CACHE_CAP:
                    sources.clear()
                src = sources[raw] = decode_sockaddr(raw)
            clen = h64[i * per64 + _CONTROLLEN]
            ctrl = controls[i * CONTROL_SIZE : i * CONTROL_SIZE + clen].tobytes()
            anc = ancillary.get(ctrl)
            if anc is None:
                if len(ancillary) >= CACHE_CAP:
                    ancillary.clear()
                anc = ancillary[ctrl] = decode_control(ctrl)
            out.append((data[start : start + size].tobytes(), src, anc))
            slots.append(i)
        return out

    def send(self, replies: Sequence[tuple[int, bytes]]) -> int:
        """Send each (i, reply) to the source of packet i of the last recv(), from that
        packet's own slot. Returns how many were sent; a message that fails (or would not
        fit its slot) is skipped and counted in send_errors, and the rest still go out."""
        per32 = _HDR // 4
        per64 = _HDR // 8
        s64, s32, siov64, h32 = self.s64, self.s32, self.siov64, self.h32
        data, data_at, name_at = self.data, self.data_at, self.name_at
        count = 0
        slots = self.slots
        for i, out in replies:
            slot = slots[i]
            size = len(out)
            if size > MAX_DATAGRAM:
                self.send_errors += 1
                continue
            start = slot * MAX_DATAGRAM
            data[start : start + size] = out
            siov64[2 * count] = data_at[slot]
            siov64[2 * count + 1] = size
            s64[count * per64 + _NAME] = name_at[slot]
            s32[count * per32 + _NAMELEN] = h32[slot * per32 + _NAMELEN]
            count += 1
        sent = done = 0
        while done < count:  # each pass moves on by at least one message: bounded
            r = self.sendmmsg(self.fd, self.shdrs_at + done * _HDR, count - done, 0)
            if r <= 0:  # the message at `done` failed (errno): skip it, send the rest
                self.send_errors += 1
                done += 1
            else:
                sent += r
                done += r
        return sent


class Batcher(Protocol):
    """What the UDP loop needs of a Batch (this module's, or the C accelerator's)."""

    send_errors: int
    truncated: int

    def recv(self) -> list[Packet]: ...

    def send(self, replies: Sequence[tuple[int, bytes]], /) -> int: ...


def open_batch(sock: socket.socket, n: int = 64) -> Batcher:
    """A Batch for ``sock``: the C accelerator's when it is built, else this module's."""
    if _LIBC is None:
        raise OSError("recvmmsg/sendmmsg are not available here")
    if C_MODULE is not None:
        return C_MODULE.Batch(sock.fileno(), n, decode_sockaddr, decode_control)  # type: ignore[no-any-return]
    return Batch(sock, n)
