# Passive capture of SIP to and from the PBX's ports with an AF_PACKET raw socket (both
# directions: we need the PBX's challenges and answers as well as the requests), filtered
# in the kernel by a classic BPF program (bpf.py), decoded by frames.py, fed to the pure
# WireDetector. Loopback shows each packet twice (outgoing and incoming): outgoing copies
# on lo are skipped. Loops are bounded by a stop flag checked at least every `poll` s.
from __future__ import annotations

import ctypes
import socket
import threading
import time
from collections.abc import Callable

from sipdeflect.accounting import Diverted, Row
from sipdeflect.detect.events import Event
from sipdeflect.detect.wire import WireDetector
from sipdeflect.sources.bpf import pack, port_filter
from sipdeflect.sources.frames import DLT_EN10MB, decode

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def open_capture(
    ifname: str | None, ports: list[int], sock: socket.socket | None = None
) -> socket.socket:
    """An AF_PACKET socket bound to ifname (None: every interface) with the port filter
    attached. Pass ``sock`` to use one created elsewhere (e.g. inside a namespace)."""
    s = sock or socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    prog = port_filter(ports)
    buf = ctypes.create_string_buffer(pack(prog))
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    if ifname is not None:
        s.bind((ifname, ETH_P_ALL))
    # Drop what queued before the filter was attached (the socket saw everything until then).
    s.setblocking(False)
    for _ in range(100_000):
        try:
            s.recv(65535)
        except BlockingIOError:
            break
    s.setblocking(True)
    return s


def run_capture(
    sock: socket.socket,
    detector: WireDetector,
    on_event: Callable[[Event], None],
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.time,
    poll: float = 0.2,
    diverted: Diverted | None = None,
    on_traffic: Callable[[list[Row]], None] | None = None,
    every: float = 1.0,
) -> int:
    """Feed captured frames to the detector until ``stop`` is set; returns frames seen.

    Packets from or to a ``diverted`` address (deflected or blocked: the decoy or the
    firewall accounts for them) are skipped. With ``on_traffic``, the detector's tally of
    what reached the PBX is handed over every ``every`` seconds (and at the end) as rows,
    from this thread: the tally is only ever touched here."""
    sock.settimeout(poll)
    frames = 0
    tally = detector.tally
    due = clock() + every
    try:
        while not stop.is_set():
            try:
                frame, addr = sock.recvfrom(65535)
            except TimeoutError:
                frame = b""
            now = clock()
            if on_traffic is not None and tally is not None and now >= due:
                due = now + every
                if len(tally):
                    on_traffic(tally.drain(now))
            if not frame or (addr[2] == PACKET_OUTGOING and addr[3] == ARPHRD_LOOPBACK):
                continue
            frames += 1
            seg = decode(frame, DLT_EN10MB)
            if seg is None:
                continue
            if diverted is not None and (
                seg.src in diverted.addrs
                or seg.dst in diverted.addrs
                or (diverted.nets and diverted.covers(seg.src, seg.dst))
            ):
                continue
            for ev in detector.packet(
                seg.src, seg.sport, seg.dst, seg.dport, seg.payload, now=now, tcp=seg.tcp
            ):
                on_event(ev)
    finally:
        if on_traffic is not None and tally is not None and len(tally):
            on_traffic(tally.drain(clock()))
    return frames
