from __future__ import annotations

import socket

from sipdeflect.lab.netns import hosts, leftover_namespaces, link, parse_snmp


def test_parse_snmp_pairs_header_and_values() -> None:
    text = "Udp: InDatagrams NoPorts RcvbufErrors\nUdp: 5 1 7\nIp: Forwarding\nIp: 1\n"
    assert parse_snmp(text)["Udp"] == {"InDatagrams": 5, "NoPorts": 1, "RcvbufErrors": 7}


def test_two_hosts_exchange_datagrams_both_families(netns_ok: None) -> None:
    with hosts("a", "b") as (a, b):
        link(a, ["192.0.2.1/24", "2001:db8::1/64"], b, ["192.0.2.2/24", "2001:db8::2/64"])
        for fam, dst, src in (
            (socket.AF_INET, "192.0.2.1", "192.0.2.2"),
            (socket.AF_INET6, "2001:db8::1", "2001:db8::2"),
        ):
            srv = a.socket(fam, socket.SOCK_DGRAM)
            srv.bind((dst, 5060))
            cli = b.socket(fam, socket.SOCK_DGRAM)
            cli.sendto(b"ping", (dst, 5060))
            srv.settimeout(5)
            data, addr = srv.recvfrom(100)
            assert (data, addr[0]) == (b"ping", src)
            srv.close()
            cli.close()
        # IPv4 only: IPv6 UDP is counted in /proc/net/snmp6
        assert a.snmp_counter("Udp", "InDatagrams") == 1
    assert leftover_namespaces() == []
