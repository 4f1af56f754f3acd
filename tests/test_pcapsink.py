"""pcap output read back by tshark (Wireshark's own dissector)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sipdeflect.pcapsink import open_pcap
from sipdeflect.sip import Request, build_response, parse

VECTORS = Path(__file__).parent / "vectors" / "sip" / "captured"


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (./dev setup)")
def test_tshark_reads_what_we_wrote(tmp_path: Path) -> None:
    path = tmp_path / "decoy.pcap"
    reg = (VECTORS / "register-sv-noauth.sip").read_bytes()
    req = parse(reg)
    assert isinstance(req, Request)
    reply = build_response(req, 200, source=("203.0.113.66", 5070))
    with open_pcap(str(path)) as pcap:
        pcap.write(1000.0, ("203.0.113.66", 5070), ("192.0.2.10", 5060), reg)
        pcap.write(1000.1, ("192.0.2.10", 5060), ("203.0.113.66", 5070), reply)
        pcap.write(1001.0, ("2001:db8::66", 5070), ("2001:db8::10", 5060), reg)
        pcap.write(1002.0, ("198.51.100.9", 40000), ("192.0.2.10", 5060), reg, "tcp")
        pcap.write(1002.1, ("198.51.100.9", 40000), ("192.0.2.10", 5060), reg, "tcp")
    res = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.Call-ID",
            "-e",
            "udp.checksum.status",
            "-e",
            "tcp.seq_raw",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [ln.split("|") for ln in res.stdout.splitlines()]
    assert [r[1] or r[2] for r in rows] == [
        "203.0.113.66",
        "192.0.2.10",
        "2001:db8::66",
        "198.51.100.9",
        "198.51.100.9",
    ]
    assert [r[3] or r[4] for r in rows] == ["REGISTER", "200", "REGISTER", "REGISTER", "REGISTER"]
    assert {r[5] for r in rows} == {req.call_id}
    assert [r[6] for r in rows[:3]] == ["1", "1", "1"]  # 0 bad, 1 good, 2 unverified
    assert int(rows[4][7]) - int(rows[3][7]) == len(reg)
    assert float(rows[1][0]) == pytest.approx(1000.1)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (./dev setup)")
def test_sipdeflect_decoy_pcap_option_writes_what_it_received(tmp_path: Path) -> None:
    """`sipdeflect decoy --pcap FILE` on loopback: three scanner REGISTERs sent, tshark
    reads three SIP requests with their real source back from the file."""
    import signal
    import socket
    import sys
    import time

    path = tmp_path / "seen.pcap"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipdeflect",
            "decoy",
            "-l",
            f"127.0.0.1:{port}",
            "--no-tcp",
            "--quiet",
            "--pcap",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reg = (VECTORS / "register-sv-noauth.sip").read_bytes()
    answers = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            deadline = time.monotonic() + 20
            while answers < 3 and time.monotonic() < deadline:  # until it listens
                s.sendto(reg, ("127.0.0.1", port))
                try:
                    s.recvfrom(65535)
                    answers += 1
                except TimeoutError:
                    continue
            me = s.getsockname()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert answers == 3
    res = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
            "-e",
            "sip.Method",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [ln.split("\t") for ln in res.stdout.splitlines()]
    assert len(rows) >= 3  # (more if it was sent before the decoy listened: not received)
    assert all(r == ["127.0.0.1", str(me[1]), "REGISTER"] for r in rows), rows


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (./dev setup)")
def test_appending_after_a_restart_keeps_one_readable_capture(tmp_path: Path) -> None:
    path = tmp_path / "decoy.pcap"
    reg = (VECTORS / "register-sv-noauth.sip").read_bytes()
    for i in range(2):  # two daemon lifetimes
        with open_pcap(str(path), append=True) as pcap:
            pcap.write(1000.0 + i, (f"203.0.113.{66 + i}", 5060), ("0.0.0.0", 5070), reg)
    res = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "ip.src"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split() == ["203.0.113.66", "203.0.113.67"]
