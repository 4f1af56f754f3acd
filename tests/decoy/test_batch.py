"""The batched UDP path (recvmmsg/sendmmsg through ctypes, and the C accelerator's Batch:
every test runs against both) on real loopback sockets: it
decodes sources and IP_PKTINFO as recvmsg does, each reply goes back to the source of its
own request, the guard still decides per packet, a message the kernel refuses mid-batch
is skipped without losing the rest, and both loops (batched and plain) answer and stop."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sipdeflect.decoy import fastpath, mmsg
from sipdeflect.decoy.guard import Guard
from sipdeflect.decoy.server import Decoy, enable_pktinfo, serve_udp
from tests.decoy.helpers import sip

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg/sendmmsg: Linux only")
BatchFactory = Callable[[socket.socket, int], Any]


def _c_batch(sock: socket.socket, n: int) -> Any:
    c = fastpath.C_MODULE
    if c is None:
        if os.environ.get("SIPDEFLECT_REQUIRE_C"):
            pytest.fail("SIPDEFLECT_REQUIRE_C is set but the C accelerator did not load")
        pytest.skip("the decoy's C accelerator is not built (needs gcc, python3-dev)")
    return c.Batch(sock.fileno(), n, mmsg.decode_sockaddr, mmsg.decode_control)


@pytest.fixture(params=["python", "c"])
def make(request: pytest.FixtureRequest) -> BatchFactory:
    """Each test runs against mmsg.Batch and against the C accelerator's Batch."""
    return mmsg.Batch if request.param == "python" else _c_batch


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    enable_pktinfo(sock)
    yield sock
    sock.close()


def clients(n: int) -> list[socket.socket]:
    out = []
    for i in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind((f"127.0.3.{i + 1}", 0))
        c.settimeout(2)
        out.append(c)
    return out


def queued(server: socket.socket, batch: Any, want: int) -> list[mmsg.Packet]:
    """recv() until ``want`` packets arrived (loopback delivery is immediate, but the
    batch may be split if the call races the senders)."""
    got: list[mmsg.Packet] = []
    deadline = time.monotonic() + 5
    while len(got) < want and time.monotonic() < deadline:
        got += batch.recv()
    return got


def call_id(msg: bytes) -> bytes:
    return msg.split(b"\r\nCall-ID: ", 1)[1].split(b"\r\n", 1)[0]


def test_sources_and_pktinfo_decode_as_recvmsg_does(
    server: socket.socket, make: BatchFactory
) -> None:
    batch = make(server, 8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.9", 0))
        c.sendto(b"one", server.getsockname())
        c.sendto(b"two", server.getsockname())
        data, anc, _flags, src = server.recvmsg(65535, 64)
        (packet,) = queued(server, batch, 1)
        assert (data, src) == (b"one", c.getsockname())
    assert anc  # IP_PKTINFO is on
    assert packet == (b"two", src, tuple(anc))  # a tuple: shared and never changed


def test_ipv6_source_decodes_as_recvfrom_does(make: BatchFactory) -> None:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with sock, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        enable_pktinfo(sock)
        c.bind(("::1", 0))
        c.sendto(b"x", sock.getsockname()[:2])
        (packet,) = queued(sock, make(sock, 4), 1)
        assert packet[1] == c.getsockname()[:2]
    with pytest.raises(ValueError, match="family"):
        mmsg.decode_sockaddr(b"\x00" * 16)


def test_each_reply_goes_to_its_own_source_and_the_guard_decides_per_packet(
    server: socket.socket, make: BatchFactory
) -> None:
    # budget 1 with burst 1: one reply per destination, decided packet by packet
    decoy = Decoy(guard=Guard(budget=1.0, local=["127.0.0.1"]), clock=lambda: 1000.0)
    batch = make(server, 16)
    cs = clients(4)
    dst = server.getsockname()
    sent = []
    for i, c in enumerate(cs):
        req = sip("REGISTER", user=f"20{i}", pad=80).replace(b"c1@", b"call%d@" % i)
        sent.append(req)
        c.sendto(req, dst)
    cs[0].sendto(sent[0], dst)  # a second request from source 0: over its budget
    cs[1].sendto(b"\x00garbage\r\n\r\n", dst)  # malformed: dropped, the rest answered
    cs[2].sendto(sip("ACK", user="202"), dst)  # silence
    packets = queued(server, batch, 7)
    assert len(packets) == 7
    replies = decoy.handle_batch(packets)
    assert [i for i, _ in replies] == [0, 1, 2, 3]
    assert batch.send(replies) == 4
    for i, c in enumerate(cs):
        got = c.recv(65535)
        assert call_id(got) == b"call%d@198.51.100.7" % i
        assert len(got) <= len(sent[i])
        c.settimeout(0.2)
        with pytest.raises(TimeoutError):  # nothing more: no reply to the extra packets
            c.recv(65535)
    assert decoy.summary.drops["reply budget"] == 1
    assert decoy.summary.drops["malformed"] == 1
    assert decoy.summary.answers["ack"] == 1
    for c in cs:
        c.close()


@pytest.mark.parametrize("bad", [0, 1, 3])
def test_a_message_the_kernel_refuses_is_skipped_and_the_rest_are_sent(
    server: socket.socket, bad: int, make: BatchFactory
) -> None:
    batch = make(server, 8)
    cs = clients(4)
    for i, c in enumerate(cs):
        c.sendto(b"ping%d" % i, server.getsockname())
    packets = queued(server, batch, 4)
    # Point packet `bad`'s destination at port 0, which udp_sendmsg refuses (EINVAL):
    # sendmmsg stops there, and send() must carry on with the messages after it.
    slot = batch.slots[bad] * mmsg.NAME_SIZE
    batch.names[slot + 2 : slot + 4] = b"\x00\x00"
    replies = [(i, b"pong%d" % i) for i in range(len(packets))]
    assert batch.send(replies) == 3
    assert batch.send_errors == 1
    for i, c in enumerate(cs):
        if i == bad:
            c.settimeout(0.2)
            with pytest.raises(TimeoutError):
                c.recv(100)
        else:
            assert c.recv(100) == b"pong%d" % i
        c.close()


@pytest.mark.parametrize("size", [0, 64])
def test_both_loops_answer_and_stop(server: socket.socket, size: int) -> None:
    decoy = Decoy(guard=Guard(budget=0, local=["127.0.0.1"]))
    stop = threading.Event()
    t = threading.Thread(target=serve_udp, args=(decoy, server, stop, size), daemon=True)
    t.start()
    try:
        (c,) = clients(1)
        with c:
            for user in ("300", "301"):
                req = sip("REGISTER", user=user, pad=80)
                c.sendto(req, server.getsockname())
                assert c.recv(65535).startswith(b"SIP/2.0 401 Unauthorized\r\n")
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        t.join(5)
    assert not t.is_alive()
    assert decoy.summary.answered == 2
