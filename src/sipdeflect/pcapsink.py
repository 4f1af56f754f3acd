# What the decoy saw (and said), as a pcap file Wireshark, tshark and sngrep read: each SIP
# message is wrapped in Ethernet/IP/UDP (or TCP, with per-flow sequence numbers) by dpkt,
# which also computes the checksums. Timestamps are the caller's; nothing here reads a clock.
from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO

import dpkt

from sipdeflect.decoy.events import DecoyEvent

_MAC_A = b"\x02\x00\x00\x00\x00\x01"  # locally administered, never real hardware
_MAC_B = b"\x02\x00\x00\x00\x00\x02"


class PcapSink:
    """Append SIP messages as packets to a pcap file (LINKTYPE_ETHERNET)."""

    def __init__(self, out: BinaryIO, *, header: bool = True) -> None:
        self._out = out
        # Appending to an existing capture (a restarted daemon): dpkt writes the file
        # header in one write() at construction, which then goes nowhere.
        target: Any = out if header else _SkipFirstWrite(out)
        self._writer = dpkt.pcap.Writer(target, linktype=dpkt.pcap.DLT_EN10MB)
        self._seq: dict[tuple[str, int, str, int], int] = {}
        self.packets = 0

    def write(
        self,
        ts: float,
        src: tuple[str, int],
        dst: tuple[str, int],
        payload: bytes,
        transport: str = "udp",
    ) -> None:
        s_ip, d_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
        if transport == "tcp":
            key = (src[0], src[1], dst[0], dst[1])
            seq = self._seq.get(key, 1)
            self._seq[key] = (seq + len(payload)) & 0xFFFFFFFF
            l4: dpkt.Packet = dpkt.tcp.TCP(
                sport=src[1],
                dport=dst[1],
                seq=seq,
                flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK,
                data=payload,
            )
            proto = dpkt.ip.IP_PROTO_TCP
        else:
            l4 = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
            l4.ulen = 8 + len(payload)
            proto = dpkt.ip.IP_PROTO_UDP
        if s_ip.version == 4:
            ip: dpkt.Packet = dpkt.ip.IP(src=s_ip.packed, dst=d_ip.packed, p=proto, ttl=64, data=l4)
            ip.len = 20 + len(bytes(l4))
            eth_type = dpkt.ethernet.ETH_TYPE_IP
        else:
            ip = dpkt.ip6.IP6(src=s_ip.packed, dst=d_ip.packed, nxt=proto, hlim=64, data=l4)
            ip.plen = len(bytes(l4))
            eth_type = dpkt.ethernet.ETH_TYPE_IP6
        # Checksums: dpkt fills IP/UDP/TCP sums when the packet is serialised with its parent.
        frame = dpkt.ethernet.Ethernet(src=_MAC_A, dst=_MAC_B, type=eth_type, data=ip)
        self._writer.writepkt(bytes(frame), ts=ts)
        self.packets += 1

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> PcapSink:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _SkipFirstWrite:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._skipped = False

    def write(self, data: bytes) -> int:
        if not self._skipped:
            self._skipped = True
            return len(data)
        return self._out.write(data)

    def flush(self) -> None:
        self._out.flush()


def open_pcap(path: str, *, append: bool = False) -> PcapSink:
    """A pcap file to write; with ``append`` an existing non-empty one is continued."""
    if append and os.path.exists(path) and os.path.getsize(path) > 0:
        return PcapSink(open(path, "ab"), header=False)  # the sink owns the file
    return PcapSink(open(path, "wb"))


def decoy_sink(pcap: PcapSink, port: int) -> Callable[[DecoyEvent], None]:
    """A decoy event sink writing each message the decoy received to ``pcap``. The decoy
    listens on every address, so the destination is the unspecified address of the
    source's family with the decoy's port; the source, time and bytes are exact."""

    last_flush = [0.0]

    def write(ev: DecoyEvent) -> None:
        if not ev.raw:
            return
        dst = "::" if ":" in ev.source[0] else "0.0.0.0"  # noqa: S104 - a label, not a bind
        pcap.write(ev.time, ev.source, (dst, port), ev.raw, ev.transport)
        if ev.time - last_flush[0] >= 0.5:  # a kill -9 loses at most half a second
            last_flush[0] = ev.time
            pcap.flush()

    return write
