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
