"""Frame decoding for capture and pcap replay, against frames built by dpkt."""

from __future__ import annotations

import ipaddress

import dpkt
import pytest

from sipdeflect.sources.bpf import pack, port_filter
from sipdeflect.sources.frames import DLT_EN10MB, DLT_LINUX_SLL, DLT_RAW, decode

V4 = ipaddress.ip_address("192.0.2.1").packed, ipaddress.ip_address("192.0.2.2").packed
V6 = ipaddress.ip_address("2001:db8::1").packed, ipaddress.ip_address("2001:db8::2").packed


def ip4(l4: dpkt.Packet, proto: int, off: int = 0) -> dpkt.ip.IP:
    ip = dpkt.ip.IP(src=V4[0], dst=V4[1], p=proto, data=l4)
    ip.offset = off * 8  # fragment offset in bytes
    ip.len = 20 + len(bytes(l4))
    return ip


def test_udp_v4_v6_tcp_vlan_sll_raw() -> None:
    udp = dpkt.udp.UDP(sport=5062, dport=5060, data=b"REGISTER x")
    udp.ulen = 8 + 10
    eth = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip4(udp, 17))
    seg = decode(bytes(eth), DLT_EN10MB)
    assert seg is not None
    assert (seg.src, seg.sport, seg.dst, seg.dport, seg.payload, seg.tcp) == (
        V4[0],
        5062,
        V4[1],
        5060,
        b"REGISTER x",
        False,
    )
    six = dpkt.ip6.IP6(src=V6[0], dst=V6[1], nxt=17, hlim=64, data=udp)
    six.plen = len(bytes(udp))
    eth6 = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP6, data=six)
    seg6 = decode(bytes(eth6))
    assert seg6 is not None
    assert seg6.src == V6[0]
    assert seg6.payload == b"REGISTER x"
    tcp = dpkt.tcp.TCP(sport=40000, dport=5060, data=b"OPTIONS y", flags=dpkt.tcp.TH_ACK)
    segt = decode(bytes(ip4(tcp, 6)), DLT_RAW)
    assert segt is not None
    assert segt.tcp
    assert segt.payload == b"OPTIONS y"
    empty = dpkt.tcp.TCP(sport=40000, dport=5060, flags=dpkt.tcp.TH_SYN)
    assert decode(bytes(ip4(empty, 6)), DLT_RAW) is None
    vlan = bytes(eth)[:12] + b"\x81\x00\x00\x05" + bytes(eth)[12:]
    segv = decode(vlan)
    assert segv is not None
    assert segv.payload == b"REGISTER x"
    sll = b"\x00\x00\x00\x01\x00\x06" + b"\x00" * 8 + b"\x08\x00" + bytes(ip4(udp, 17))
    segs = decode(sll, DLT_LINUX_SLL)
    assert segs is not None
    assert segs.dport == 5060


def test_fragments_truncation_and_other_protocols() -> None:
    udp = dpkt.udp.UDP(sport=5062, dport=5060, data=b"x" * 40)
    udp.ulen = 48
    later = ip4(udp, 17, off=10)  # a non-first fragment
    assert decode(bytes(later), DLT_RAW) is None
    whole = bytes(ip4(udp, 17))
    for cut in range(len(whole)):
        decode(whole[:cut], DLT_RAW)  # never raises
    icmp = ip4(dpkt.icmp.ICMP(type=3, data=b"x"), 1)
    assert decode(bytes(icmp), DLT_RAW) is None
    assert decode(b"", DLT_EN10MB) is None
    assert decode(b"\x00" * 30, 999) is None


def test_bpf_program_shape() -> None:
    prog = port_filter([5060, 5061])
    assert prog[-1][0] == 0x06  # ends with "accept"
    assert prog[-2] == (0x06, 0, 0, 0)  # and "drop" before it
    assert len(pack(prog)) == 8 * len(prog)
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # jumps stay inside the program
            assert i + 1 + jt < len(prog)
            assert i + 1 + jf < len(prog)
    with pytest.raises(ValueError, match="ports"):
        port_filter([])
