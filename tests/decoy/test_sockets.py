"""The running decoy on loopback: UDP over IPv4 and IPv6, TCP framing with keep-alives, and
the CLI end to end (lines, --events JSON, the Ctrl-C summary)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sipdeflect.decoy.runner import Running, parse_listen, start
from sipdeflect.decoy.server import Listen
from sipdeflect.decoy.strategy import Persona
from sipdeflect.errors import UsageError
from tests.decoy.helpers import CAPTURED, sip

LOCAL = ["127.0.0.1", "::1"]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def decoy() -> Iterator[Running]:
    listens = [Listen("127.0.0.1", 0)] + ([Listen("::1", 0)] if _has_ipv6() else [])
    running = start(listens, budget=0, cap=1024, persona=Persona(), sinks=[], local=LOCAL)
    yield running
    running.stop()


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:5060") == Listen("0.0.0.0", 5060)
    assert parse_listen("[::]:5070") == Listen("::", 5070)
    for bad in ("5060", "::1:5060", "host:5060", "1.2.3.4:0", "1.2.3.4:70000"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_udp_answers_on_each_family_and_survives_garbage(decoy: Running) -> None:
    for host, port in decoy.addresses():
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(b"\x00\xff garbage \r\n\r\n", (host, port))
            c.sendto(b"", (host, port))
            c.sendto(CAPTURED["options-sv-noauth"], (host, port))
            reply, _ = c.recvfrom(65535)
            assert reply.startswith(b"SIP/2.0 401 Unauthorized\r\n")
            assert len(reply) <= len(CAPTURED["options-sv-noauth"])
    assert decoy.decoy.summary.dropped >= 2


def test_tcp_frames_pipelined_requests_and_answers_keepalive_pings(decoy: Running) -> None:
    host, port = decoy.addresses()[0]
    with socket.create_connection((host, port), timeout=5) as c:
        # a ping, two requests in one segment, then one request split across segments
        c.sendall(b"\r\n\r\n" + sip("REGISTER", user="7") + sip("INVITE", user="8"))
        half = sip("OPTIONS", user="9")
        c.sendall(half[:40])
        time.sleep(0.05)
        c.sendall(half[40:])
        got = b""
        deadline = time.monotonic() + 10
        while got.count(b"SIP/2.0 ") < 3 and time.monotonic() < deadline:
            got += c.recv(65536)
    assert got.startswith(b"\r\nSIP/2.0 401 ")  # pong first (RFC 5626 3.5.1)
    statuses = [line.split()[1] for line in got.split(b"\r\n") if line.startswith(b"SIP/2.0 ")]
    assert statuses == [b"401", b"407", b"401"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cli_prints_lines_events_and_a_summary_on_ctrl_c(tmp_path: object) -> None:
    port = _free_port()
    events = f"{tmp_path}/events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "decoy",
            "--listen",
            f"127.0.0.1:{port}",
            "--events",
            events,
            "--show",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()  # printed once the sockets are bound
        assert "decoy listening on 127.0.0.1" in banner
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(CAPTURED["register-sv-auth"], ("127.0.0.1", port))
            assert c.recvfrom(65535)[0].startswith(b"SIP/2.0 200 OK")
            c.sendto(b"\x1b[2Jnot sip", ("127.0.0.1", port))
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "REGISTER from='100' ua='friendly-scanner' -> 200 credentials-accepted-200" in out
    assert "Authorization: Digest <redacted>" in out
    assert 'response="' not in out
    assert "\x1b" not in out + err
    assert "dropped 11 bytes from 127.0.0.1" in err
    assert "messages" in err
    assert "answer credentials-accepted-200" in err
    records = [json.loads(line) for line in open(events)]
    assert [r["status"] for r in records] == [200, None]


def test_cli_bad_listen_is_one_line_exit_2() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sipdeflect", "decoy", "--listen", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "expected ADDR:PORT" in res.stderr


def test_reuseport_workers_share_the_port_and_merge_their_summaries() -> None:
    port = _free_port()
    running = start(
        [Listen("127.0.0.1", port)],
        budget=0,
        cap=1024,
        persona=Persona(),
        sinks=[],
        workers=2,
        tcp=False,
        local=LOCAL,
    )
    try:
        time.sleep(0.5)  # the forked worker binds its own SO_REUSEPORT socket
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
        for i, c in enumerate(clients):  # 40 source ports: the kernel hashes them over both
            c.settimeout(5)
            c.sendto(sip("OPTIONS", user=f"u{i}", pad=100), ("127.0.0.1", port))
        answers = [c.recvfrom(65535)[0] for c in clients]
        for c in clients:
            c.close()
    finally:
        summary = running.stop()
    assert all(a.startswith(b"SIP/2.0 401 ") for a in answers)
    assert summary.messages == 40
    assert summary.answered == 40
    assert 0 < running.decoy.summary.messages < 40  # the worker answered some of them
