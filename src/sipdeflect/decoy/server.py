# The decoy's I/O: one blocking UDP loop per socket (recvmsg + IP_PKTINFO so a packet from
# a loopback or own address is answered only if it really came over lo; a plain blocking
# loop is the fastest Python receive path measured here), one small selector loop for all
# TCP connections (not the flood path), and Decoy.handle(), the per-datagram work shared by
# both: parse, source table and guard, strategy table, build, size check. Everything the
# decoy saw goes to the event Hub; counters go to a Summary. The clock is read here only.
from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sipdeflect.decoy import fastpath, mmsg
from sipdeflect.decoy.events import HELD_CAP, DecoyEvent, Hub, Summary
from sipdeflect.decoy.guard import IP_PKTINFO, IPV6_RECVPKTINFO, Guard
from sipdeflect.decoy.mmsg import Packet
from sipdeflect.decoy.strategy import (
    INVITE_CHALLENGED,
    Answer,
    Persona,
    answer_headers,
    decide_prepared,
    untagged,
)
from sipdeflect.errors import SipParseError
from sipdeflect.sip.message import Request
from sipdeflect.sip.parse import parse
from sipdeflect.sip.stream import KeepAlive, StreamReceiver

MAX_TCP_CONNECTIONS = 256
TCP_IDLE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Decoy:
    """Answers requests through the guard and the strategy table."""

    def __init__(
        self,
        *,
        guard: Guard | None = None,
        persona: Persona | None = None,
        hub: Hub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.guard = guard or Guard()
        self.persona = persona or Persona()
        self.hub = hub or Hub([])
        self.events = self.hub.wants_all  # build a record for every message (else drops only)
        self.drop_events = self.hub.wants_drops
        self.summary = Summary()
        self.clock = clock
        self.lock = threading.Lock()  # the UDP threads and the TCP thread share state
        self.memo = fastpath.Memo()  # pure work remembered per datagram (under the lock)
        # Records per second when the sinks only print that many (Hub.sample_cap); past
        # it, messages are counted per source and handed over as one dict (hand_held).
        self.sample = self.hub.sample_cap if self.events else 0
        self._second = 0
        self._recorded = 0
        self._held: dict[str, int] = {}
        if self.sample:
            self.hub.pull = self.hand_held

    def _record(self, now: float, ip: str) -> bool:
        """Whether this message gets a record (else it is counted for its source)."""
        if not self.sample:
            return True
        second = int(now)
        if second != self._second:
            self._second, self._recorded = second, 0
        if self._recorded < self.sample:
            self._recorded += 1
            return True
        held = self._held
        if ip in held:
            held[ip] += 1
        elif len(held) < HELD_CAP:
            held[ip] = 1
        else:
            held["others"] = held.get("others", 0) + 1
        return False

    def hand_held(self) -> None:
        """Give the writer what was counted instead of recorded (the writer calls this)."""
        with self.lock:
            held, self._held = self._held, {}
        if held:
            self.hub.put_held(held)

    def _drop(self, data: bytes, src: tuple[str, int], why: str, transport: str) -> None:
        s = self.summary
        s.dropped += 1
        s.drops[why.partition(":")[0]] += 1
        if self.drop_events:
            self.hub.put(DecoyEvent(self.clock(), src, transport, data, None, "drop", None, why))

    def handle(
        self,
        data: bytes,
        src: tuple[str, int],
        ancdata: list[tuple[int, int, bytes]] | None = None,
        transport: str = "udp",
    ) -> bytes | None:
        """The reply to one datagram (or framed TCP message), or None for silence.

        ``ancdata`` is recvmsg's ancillary data (IP_PKTINFO); None means "came over lo" is
        unknown and therefore false. For TCP the handshake proved the source, so only the
        strategy applies (no size rule, no reply budget).
        """
        with self.lock:
            return self._handle(data, src, ancdata, transport, self.clock())

    def handle_batch(self, packets: Sequence[Packet]) -> list[tuple[int, bytes]]:
        """handle() for each UDP datagram of a batch, under one lock and one clock read
        (the batch arrived within one system call); (index in ``packets``, reply) for the
        ones that get a reply. The guard still applies to every packet on its own."""
        replies: list[tuple[int, bytes]] = []
        now = self.clock()
        answer = self._handle
        with self.lock:
            for i, (data, src, anc) in enumerate(packets):
                try:
                    out = answer(data, src, anc, "udp", now)
                except Exception as exc:  # never crash on one packet; record it
                    self._drop(data, src, f"internal error: {type(exc).__name__}", "udp")
                    continue
                if out is not None:
                    replies.append((i, out))
        return replies

    def _handle(
        self,
        data: bytes,
        src: tuple[str, int],
        ancdata: Sequence[tuple[int, int, bytes]] | None,
        transport: str,
        now: float,
    ) -> bytes | None:
        """handle() with the lock held and the clock read."""
        self.summary.messages += 1
        memo = self.memo
        view = memo.view(data)
        request: Request | None = None
        if view is None:  # not a plain request: the SIP core decides
            try:
                msg = parse(data)
            except SipParseError as exc:
                self._drop(data, src, f"malformed: {exc}", transport)
                return None
            if not isinstance(msg, Request):
                self._drop(data, src, "a response, not a request", transport)
                return None
            request = msg
            index = msg.headers.index
            vias = [v for n, v in msg.headers.fields if n == "via"]
            view = fastpath.ViewPy(data, msg.method, index, vias, clean=False)
        prepared = view.prepared
        guard = self.guard
        st = guard.state(src[0], now)
        st.requests += 1
        st.last = now
        ans = decide_prepared(prepared, st.challenged)
        if ans.status is None:
            st.closed = False
            answers = self.summary.answers
            answers[ans.name] = answers.get(ans.name, 0) + 1
            if self.events and self._record(now, src[0]):
                self.hub.put(
                    DecoyEvent(
                        now, src, transport, data, request, ans.name, None, ans.why, 0, view.method
                    )
                )
            return None
        udp = transport == "udp"
        if udp:
            refusal = guard.refuse(st, src[1], ancdata)
            if refusal is None and not guard.take(st, now):
                refusal = "reply budget: per-destination rate exhausted"
            if refusal is not None:
                self._drop(data, src, refusal, transport)
                return None
        out = self._answer(view, ans, ans.status, src, now)
        if udp and len(out) > len(data):
            # RFC-sized challenges can outgrow a small request: try the table's smaller
            # answer once, else stay silent (never amplify).
            smaller = ans.smaller
            if smaller is not None and smaller.status is not None:
                ans = smaller
                out = self._answer(view, ans, smaller.status, src, now)
            if len(out) > len(data):
                self._drop(data, src, "answer would be larger than the request", transport)
                return None
        if ans.remember:
            st.challenged = prepared[3]  # aor_key(index)
        elif ans.remember_invite:
            st.challenged = INVITE_CHALLENGED
        elif ans.forget:
            st.challenged = 0
        st.closed = ans.closes
        s = self.summary  # the lock is held: several UDP threads share these counters
        s.answered += 1
        answers = s.answers
        answers[ans.name] = answers.get(ans.name, 0) + 1
        if self.events and self._record(now, src[0]):
            self.hub.put(
                DecoyEvent(
                    now,
                    src,
                    transport,
                    data,
                    request,
                    ans.name,
                    ans.status,
                    ans.why,
                    len(out),
                    view.method,
                )
            )
        return out

    def _answer(
        self, view: fastpath.View, ans: Answer, status: int, src: tuple[str, int], now: float
    ) -> bytes:
        """The bytes of ``ans`` (whose status is ``status``) to the request in ``view``."""
        extra = answer_headers(ans, view, self.persona, now)
        if ans.drop_from_tag:
            index = {**view.index, "from": untagged(view.get("from", b""))}
            return fastpath.build(index, view.vias, status, src, extra, clean=view.clean)
        if not extra and view.clean:
            return self.memo.reply(view, status, src)
        return view.reply(status, src[0], src[1], fastpath.extra_lines(extra))

    def totals(self) -> Summary:
        s = Summary()
        s.merge(self.summary)
        s.sources = self.guard.created
        s.stopped = self.guard.stopped()
        s.evicted = self.guard.evicted
        return s


# -- sockets ---------------------------------------------------------------------------


SocketFactory = Callable[[int, int], socket.socket]


def udp_socket(
    listen: Listen,
    *,
    reuseport: bool = False,
    factory: SocketFactory = socket.socket,
    rcvbuf: int = 0,
) -> socket.socket:
    sock = factory(listen.family, socket.SOCK_DGRAM)
    _prepare(sock, listen, reuseport)
    if rcvbuf:
        deepen_receive_buffer(sock, rcvbuf)
    sock.bind((listen.host, listen.port))
    return sock


def tcp_socket(
    listen: Listen, *, reuseport: bool = False, factory: SocketFactory = socket.socket
) -> socket.socket:
    sock = factory(listen.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _prepare(sock, listen, reuseport)
    sock.bind((listen.host, listen.port))
    sock.listen(64)
    return sock


def _prepare(sock: socket.socket, listen: Listen, reuseport: bool) -> None:
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if listen.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


DEFAULT_RCVBUF = 4 << 20


def deepen_receive_buffer(sock: socket.socket, size: int = DEFAULT_RCVBUF) -> int:
    """A deep receive queue absorbs bursts and scheduling hiccups (the default ~200 KiB
    holds a few ms of a flood). SO_RCVBUFFORCE when allowed (root), else SO_RCVBUF, which
    the kernel caps at net.core.rmem_max. Returns what the kernel granted."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def enable_pktinfo(sock: socket.socket) -> None:
    """Ask the kernel for the incoming interface of every datagram (ancillary data)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


BATCH = 64  # datagrams per recvmmsg/sendmmsg call


def serve_udp(decoy: Decoy, sock: socket.socket, stop: threading.Event, batch: int = BATCH) -> None:
    """The hot loop. Returns when ``stop`` is set and the socket is shut down. ``batch``
    > 1 uses recvmmsg/sendmmsg where available (mmsg.py); 0 or 1: recvmsg + sendto."""
    enable_pktinfo(sock)
    if batch > 1 and mmsg.available():
        _serve_batches(decoy, mmsg.open_batch(sock, batch), stop)
        return
    handle = decoy.handle
    recvmsg = sock.recvmsg
    sendto = sock.sendto
    while not stop.is_set():
        try:
            data, anc, _flags, src = recvmsg(65535, 64)
        except OSError:
            if stop.is_set():
                return
            continue
        if src is None:  # shutdown() wakes us with an empty read
            continue
        try:
            out = handle(data, src[:2], anc)
            if out is not None:
                sendto(out, src)
        except OSError:
            continue  # e.g. unreachable destination: never stop the loop
        except Exception as exc:  # never crash on one packet; record it
            decoy._drop(data, src[:2], f"internal error: {type(exc).__name__}", "udp")


def _serve_batches(decoy: Decoy, batch: mmsg.Batcher, stop: threading.Event) -> None:
    recv, send, handle_batch = batch.recv, batch.send, decoy.handle_batch
    while not stop.is_set():
        try:
            packets = recv()
        except OSError:
            if stop.is_set():
                return
            continue
        if packets:
            replies = handle_batch(packets)
            if replies:
                send(replies)


def serve_tcp(decoy: Decoy, listeners: Iterable[socket.socket], stop: threading.Event) -> None:
    """All TCP listeners and connections in one selector loop (RFC 3261 18.3 framing)."""
    sel = selectors.DefaultSelector()
    for lsock in listeners:
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, None)
    conns: dict[socket.socket, tuple[StreamReceiver, tuple[str, int], list[float]]] = {}

    def close(conn: socket.socket) -> None:
        conns.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        conn.close()

    try:
        while not stop.is_set():
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is None:
                    with contextlib.suppress(OSError):
                        conn, addr = sock.accept()
                        if len(conns) >= MAX_TCP_CONNECTIONS:
                            conn.close()
                            continue
                        conn.setblocking(False)
                        conns[conn] = (StreamReceiver(), addr[:2], [time.monotonic()])
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                _tcp_read(decoy, sock, conns, close)
            idle = time.monotonic() - TCP_IDLE_SECONDS
            for conn in [c for c, (_, _, seen) in conns.items() if seen[0] < idle]:
                close(conn)
    finally:
        for conn in list(conns):
            close(conn)
        sel.close()


def _tcp_read(
    decoy: Decoy,
    conn: socket.socket,
    conns: dict[socket.socket, tuple[StreamReceiver, tuple[str, int], list[float]]],
    close: Callable[[socket.socket], None],
) -> None:
    receiver, addr, seen = conns[conn]
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        close(conn)
        return
    if not data:
        close(conn)
        return
    seen[0] = time.monotonic()
    try:
        receiver.feed(data)
        replies: list[bytes] = []
        for event in receiver:
            if isinstance(event, KeepAlive):
                if event.ping:
                    replies.append(b"\r\n")  # RFC 5626 3.5.1 pong
                continue
            if isinstance(event, Request):
                out = decoy.handle(event.raw, addr, None, "tcp")
                if out is not None:
                    replies.append(out)
        if replies:
            conn.sendall(b"".join(replies))
    except SipParseError as exc:
        decoy._drop(data, addr, f"malformed stream: {exc}", "tcp")
        close(conn)
    except OSError:
        close(conn)
