# A two-host lab for the firewall tests: a PBX namespace with a "PBX" socket on the SIP
# port and a "decoy" socket on the decoy port (both families), and a scanner namespace
# holding several source addresses. Every packet stays inside these namespaces.
from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sipdeflect.firewall.backend import Backend, Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings
from sipdeflect.lab.netns import Netns, hosts, link

SIP, DECOY = 5060, 5070
SETTINGS = FirewallSettings(sip_ports=(SIP,), decoy_port=DECOY)
PBX4, PBX6 = "192.0.2.1", "2001:db8::1"
SRC4 = [f"192.0.2.{i}" for i in range(10, 16)]
SRC6 = [f"2001:db8::{i}" for i in range(10, 16)]
LINUX_BACKENDS = ["nftables", "iptables"]  # iptables = the system's iptables-nft here


@dataclass
class Lab:
    pbx: Netns
    scanner: Netns
    listeners: dict[tuple[int, int], socket.socket] = field(default_factory=dict)
    senders: list[socket.socket] = field(default_factory=list)

    def runner(self) -> Runner:
        return Runner(netns=self.pbx.name)

    def backend(self, name: str) -> Backend:
        return get_backend(name, SETTINGS, self.runner())

    def listen(self) -> None:
        for fam, any_ in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            for port in (SIP, DECOY):
                s = self.pbx.socket(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((any_, port))
                self.listeners[(fam, port)] = s

    def sender(self, src: str, sport: int = 0) -> socket.socket:
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        s = self.scanner.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, sport))
        self.senders.append(s)
        return s

    def drain(self) -> None:
        for s in self.listeners.values():
            s.setblocking(False)
            while True:
                try:
                    s.recvfrom(2048)
                except BlockingIOError:
                    break

    def probe(self, sock: socket.socket, wait: float = 3.0, quiet: float = 0.6) -> str | None:
        """Send one datagram to the PBX's SIP port; say which socket got it (or None)."""
        fam = sock.family
        dst = PBX6 if fam == socket.AF_INET6 else PBX4
        self.drain()
        tag = f"probe {sock.getsockname()[:2]}".encode()
        sock.sendto(tag, (dst, SIP))
        names = {self.listeners[(fam, SIP)]: "pbx", self.listeners[(fam, DECOY)]: "decoy"}
        # A packet that arrives does so within milliseconds; `quiet` bounds the wait for
        # one that never will, `wait` is the generous bound for one that should.
        ready, _, _ = select.select(list(names), [], [], quiet)
        if not ready:
            return None
        for s in ready:
            s.setblocking(False)
            data, _ = s.recvfrom(2048)
            if data == tag:
                return names[s]
        ready, _, _ = select.select(list(names), [], [], wait)
        return names[ready[0]] if ready else None

    def close(self) -> None:
        for s in [*self.listeners.values(), *self.senders]:
            s.close()


@pytest.fixture
def lab(netns_ok: None) -> Iterator[Lab]:
    with hosts("pbx", "scan") as (pbx, scanner):
        link(pbx, [f"{PBX4}/24", f"{PBX6}/64"], scanner, [])
        ifname = scanner.run(["ip", "-o", "link", "show", "type", "veth"]).stdout.split(":")[1]
        ifname = ifname.strip().split("@")[0]
        for a in SRC4:
            scanner.run(["ip", "addr", "add", f"{a}/24", "dev", ifname])
        for a in SRC6:
            scanner.run(["ip", "addr", "add", f"{a}/64", "dev", ifname, "nodad"])
        lab = Lab(pbx, scanner)
        lab.listen()
        try:
            yield lab
        finally:
            lab.close()
