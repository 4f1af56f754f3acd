"""End to end, as root, in network namespaces: the real SIPVicious 0.3.8 tools and sipp
against the decoy behind an nftables redirect. Requests are counted by an nftables counter
in the PBX namespace, not by the decoy."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipdeflect.lab.decoylab import ATTACKER, PBX, SIP_PORT, DecoyLab, decoy_lab, dictionary

SIPP_SCENARIO = Path(__file__).parent.parent / "vectors" / "sip" / "sipp" / "register-digest.xml"
RANGE = "100-999"  # 900 extensions


@pytest.fixture(scope="module")
def lab(netns_ok: None) -> Iterator[DecoyLab]:
    with decoy_lab() as lab:
        yield lab


def test_svcrack_with_1000_words_stops_after_one_request(lab: DecoyLab, tmp_path: Path) -> None:
    words = dictionary(tmp_path / "words.txt", 1000)
    assert len(words.read_text().split()) == 1000
    run = lab.run_tool("svcrack", ["-u", "100", "-d", str(words), "-x", ATTACKER, PBX])
    assert run.returncode == 0, run.output
    assert 1 <= run.sent <= 2
    assert "User not found" in run.output
    assert "found nothing" in run.output
    assert "cracked" not in run.output
    assert "| 100" not in run.output


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_over_900_extensions_aborts_at_once(lab: DecoyLab, method: str) -> None:
    run = lab.run_tool("svwar", ["-e", RANGE, "-m", method, "-x", ATTACKER, PBX])
    assert run.returncode == 0, run.output
    assert 1 <= run.sent <= 2, run.output
    assert "authentication request for an unknown extension" in run.output
    assert "found nothing" in run.output
    assert not re.search(r"extension '\d+' exists", run.output)


def test_svmap_lists_nothing_true(lab: DecoyLab) -> None:
    run = lab.run_tool("svmap", ["-x", ATTACKER, PBX])
    assert run.returncode == 0, run.output
    assert run.sent == 1
    # it sees a SIP device (it did get an answer) but no product or version
    assert re.search(rf"\|\s*{re.escape(PBX)}:{SIP_PORT}\s*\|\s*unknown\s*\|", run.output)


def test_flooder_stops_on_its_second_request(lab: DecoyLab) -> None:
    run = lab.flood()
    assert run.sent == 2
    assert "got its 200 OK after 2 requests" in run.conclusion


@pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp (Debian sip-tester)")
def test_sipp_register_scenario_gets_transaction_matched_answers(
    lab: DecoyLab, tmp_path: Path
) -> None:
    calls = 20
    lab.take_count()
    guard = lab.running.decoy.guard
    guard.budget = 0  # sipp at 50 calls/s from one source would exceed the default budget
    res = lab.attacker.run(
        [
            "sipp",
            "-sf",
            str(SIPP_SCENARIO),
            "-m",
            str(calls),
            "-r",
            "50",
            "-l",
            "5",
            "-s",
            "100",
            "-au",
            "100",
            "-ap",
            "not-a-real-password",
            "-i",
            ATTACKER,
            "-p",
            "5062",
            "-timeout",
            "30s",
            "-trace_msg",
            "-message_file",
            str(tmp_path / "msgs.log"),
            "-trace_err",
            "-error_file",
            str(tmp_path / "err.log"),
            "-nostdin",
            f"{PBX}:{SIP_PORT}",
        ],
        check=False,
        timeout=60,
    )
    guard.budget = 10.0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    counted = lab.take_count()
    log = (tmp_path / "msgs.log").read_text(errors="replace")
    sent = re.findall(r"UDP message sent.*?\n\n(REGISTER.*?)\n\n", log, re.S)
    got = re.findall(r"UDP message received.*?\n\n(SIP/2\.0.*?)\n\n", log, re.S)
    # two requests per call; more only if sipp retransmitted on a slow machine, and then
    # the nftables counter and sipp's own log must still agree
    assert counted == len(sent) >= 2 * calls
    assert len(got) >= 2 * calls
    branches = {_hdr(m, "Via").split("branch=")[1].split(";")[0]: m for m in sent}
    for resp in got:
        branch = _hdr(resp, "Via").split("branch=")[1].split(";")[0]
        req = branches[branch]  # every response names a request we sent
        for name in ("Call-ID", "CSeq", "From"):
            assert _hdr(resp, name) == _hdr(req, name)
        assert resp.startswith("SIP/2.0 401 ") == _hdr(req, "CSeq").startswith("1 ")


def _hdr(msg: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.*?)\s*$", msg, re.M | re.I)
    assert m, (name, msg)
    return m.group(1)


def test_spoofed_own_address_over_the_wire_gets_no_answer(lab: DecoyLab) -> None:
    """A packet claiming to come from the PBX itself but arriving on the veth: the kernel
    drops it unless accept_local=1; we turn that on so the decoy itself must refuse it."""
    dpkt = pytest.importorskip("dpkt")
    dev = lab.pbx.run(["ip", "-o", "link", "show", "type", "veth"]).stdout.split(":")[1].strip()
    dev = dev.split("@")[0]
    lab.pbx.sysctl(f"net.ipv4.conf.{dev}.accept_local", "1")
    lab.pbx.sysctl("net.ipv4.conf.all.rp_filter", "0")
    lab.pbx.sysctl(f"net.ipv4.conf.{dev}.rp_filter", "0")
    before = lab.running.decoy.summary.drops["loopback or own address not received on lo"]
    payload = _options(PBX)
    udp = dpkt.udp.UDP(sport=5060, dport=5070, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(PBX), dst=socket.inet_aton(PBX), p=17, ttl=64, data=udp)
    ip.len = len(ip)
    raw = lab.attacker.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.sendto(bytes(ip), (PBX, 0))
    finally:
        raw.close()
    # and a genuine request right after, which must be answered
    lab.flood(limit=2)
    after = lab.running.decoy.summary.drops["loopback or own address not received on lo"]
    assert after == before + 1


def _options(src: str) -> bytes:
    return (
        f"OPTIONS sip:100@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-9;rport\r\n"
        f"From: <sip:100@{PBX}>;tag=1\r\nTo: <sip:100@{PBX}>\r\nCall-ID: spoof\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
