# Running the decoy in the foreground: bind every --listen address (UDP, and TCP on the same
# port), one thread per UDP socket, one thread for TCP, a thread that refreshes the host's
# own addresses (pyroute2, every few seconds) for the reflection guard, and optionally
# SO_REUSEPORT worker processes forked before any thread starts. Workers answer silently and
# hand their counters back through a pipe at exit, so the summary covers them all.
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection

from pyroute2 import IPRoute

from sipdeflect.decoy.events import Hub, Summary
from sipdeflect.decoy.guard import Guard
from sipdeflect.decoy.server import (
    BATCH,
    DEFAULT_RCVBUF,
    Decoy,
    Listen,
    SocketFactory,
    serve_tcp,
    serve_udp,
    tcp_socket,
    udp_socket,
)
from sipdeflect.decoy.strategy import Persona
from sipdeflect.errors import UsageError

LOCAL_REFRESH_SECONDS = 5.0


def parse_listen(text: str) -> Listen:
    """ADDR:PORT, [V6ADDR]:PORT; raises UsageError naming the bad value."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"--listen {text!r}: expected ADDR:PORT or [V6ADDR]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen {text!r}: put IPv6 addresses in brackets, e.g. [::]:5060")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise UsageError(f"--listen {text!r}: {host!r} is not an IP address") from None
    return Listen(host, int(port_s))


def local_addresses() -> set[str]:
    """This host's (namespace's) addresses, and 'bcast:ADDR' for each IPv4 broadcast."""
    out: set[str] = set()
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            for attr in ("IFA_ADDRESS", "IFA_LOCAL"):
                value = msg.get_attr(attr)
                if value:
                    out.add(str(value))
            bcast = msg.get_attr("IFA_BROADCAST")
            if bcast:
                out.add(f"bcast:{bcast}")
    return out


class Running:
    """A started decoy: sockets, threads, workers. stop() returns the merged summary."""

    def __init__(
        self,
        decoy: Decoy,
        udp: list[socket.socket],
        tcp: list[socket.socket],
        workers: list[tuple[multiprocessing.process.BaseProcess, Connection]],
        refresh_local: bool,
        *,
        batch: int = BATCH,
    ) -> None:
        self.decoy = decoy
        self.udp = udp
        self.tcp = tcp
        self.workers = workers
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=serve_udp, args=(decoy, s, self.stop_event, batch), daemon=True)
            for s in udp
        ]
        if tcp:
            self.threads.append(
                threading.Thread(target=serve_tcp, args=(decoy, tcp, self.stop_event), daemon=True)
            )
        if refresh_local:
            self.threads.append(threading.Thread(target=self._refresh, daemon=True))
        decoy.hub.start()
        for t in self.threads:
            t.start()

    def _refresh(self) -> None:
        while not self.stop_event.wait(LOCAL_REFRESH_SECONDS):
            with contextlib.suppress(Exception):  # netlink hiccup: keep the last set
                addrs = local_addresses()
                with self.decoy.lock:
                    self.decoy.guard.set_local(addrs)

    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self.udp]

    def stop(self) -> Summary:
        self.stop_event.set()
        for s in self.udp:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the blocked recvmsg
        for t in self.threads:
            t.join(5)
        for s in [*self.udp, *self.tcp]:
            s.close()
        self.decoy.hub.stop()
        total = self.decoy.totals()
        for proc, conn in self.workers:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(EOFError, OSError, ValueError, KeyError):
                if conn.poll(5):
                    total.merge(Summary.from_json(json.loads(conn.recv())))
            proc.join(5)
        return total


def _worker(  # noqa: PLR0917 - the fork target's argument tuple
    listens: Sequence[Listen],
    budget: float,
    cap: int,
    persona: Persona,
    rcvbuf: int,
    conn: Connection,
    batch: int = BATCH,
) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    decoy = Decoy(guard=Guard(budget=budget, cap=cap, local=local_addresses()), persona=persona)
    socks = [udp_socket(listen, reuseport=True, rcvbuf=rcvbuf) for listen in listens]
    threads = [
        threading.Thread(target=serve_udp, args=(decoy, s, stop, batch), daemon=True) for s in socks
    ]
    for t in threads:
        t.start()
    stop.wait()
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
    for t in threads:
        t.join(5)
    conn.send(json.dumps(decoy.totals().to_json()))


def start(
    listens: Iterable[Listen],
    *,
    budget: float,
    cap: int,
    persona: Persona,
    sinks: list[Callable[..., None]],
    workers: int = 1,
    tcp: bool = True,
    local: Iterable[str] | None = None,
    socket_factory: SocketFactory = socket.socket,
    rcvbuf: int = DEFAULT_RCVBUF,
    batch: int = BATCH,
) -> Running:
    """Bind, fork workers (before any thread), start threads. UsageError if a bind fails."""
    listens = list(listens)
    reuse = workers > 1
    procs: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        udp = [
            udp_socket(x, reuseport=reuse, factory=socket_factory, rcvbuf=rcvbuf) for x in listens
        ]
        # TCP on the same port as UDP (matters when port 0 asked the kernel to pick one)
        bound = [Listen(x.host, u.getsockname()[1]) for x, u in zip(listens, udp, strict=True)]
        tcps = (
            [tcp_socket(x, reuseport=reuse, factory=socket_factory) for x in bound] if tcp else []
        )
    except OSError as exc:
        raise UsageError(f"cannot listen: {exc}") from None
    ctx = multiprocessing.get_context("fork")
    for _ in range(workers - 1):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker,
            args=(listens, budget, cap, persona, rcvbuf, child, batch),
            daemon=True,
        )
        proc.start()
        procs.append((proc, parent))
    refresh = local is None
    guard = Guard(budget=budget, cap=cap, local=local_addresses() if local is None else local)
    decoy = Decoy(guard=guard, persona=persona, hub=Hub(sinks))
    return Running(decoy, udp, tcps, procs, refresh, batch=batch)
