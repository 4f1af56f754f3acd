"""A detection lab: a real Kamailio 5.6 registrar (sipdeflect.lab.kamailio, nonces bound
to the source address as docs/detection.md asks), a real SIPVicious svcrack attacker, a
bystander (think: the SIP trunk provider) whose address an attacker forges, and our
AF_PACKET wire observer on the PBX. Used by the lab tests and to regenerate the Kamailio
corpus under tests/vectors/logs/kamailio/."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from sipdeflect.detect.events import Event
from sipdeflect.detect.wire import WireDetector
from sipdeflect.lab.kamailio import Kamailio
from sipdeflect.lab.netns import Netns, hosts, link
from sipdeflect.sources.capture import ETH_P_ALL, open_capture, run_capture
from sipdeflect.sources.data import default_fingerprints
from tests.detect.sipmsg import invite, register

BIN = Path(sys.executable).parent
PBX_ATK, ATK = "203.0.113.1", "203.0.113.66"
PBX_BYS, BYS = "198.51.100.1", "198.51.100.20"
PASSWORD = "correct-horse-battery"


@dataclass
class Lab:
    pbx: Netns
    atk: Netns
    bys: Netns
    kam: Kamailio
    tmp: Path
    events: list[Event] = field(default_factory=list)

    def svcrack(self, user: str, guesses: int) -> None:
        words = self.tmp / f"words-{user}.txt"
        words.write_text("\n".join(f"guess{i}" for i in range(guesses)) + "\n")
        self.atk.run(
            [str(BIN / "sipvicious_svcrack"), "-u", user, "-d", str(words), "-p", "5060", PBX_ATK],
            check=False,
            timeout=90,
            input_="",
        )

    def spoof(self, count: int) -> int:
        """Forged UDP from the bystander's address, sent by the attacker: a scanner-like
        REGISTER/INVITE flood over many accounts, with guessed nonces and a real nonce the
        attacker obtained for itself (replayed). Returns packets sent."""
        real = self._real_nonce()
        raw = self.atk.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sent = 0
        try:
            for i in range(count):
                kind = i % 4
                if kind == 0:
                    payload = register(str(2000 + i), f"sp{i}", 1)
                elif kind == 1:
                    payload = invite(str(9000 + i), f"si{i}")
                elif kind == 2:
                    payload = register("1001", f"sg{i}", 2, nonce=f"guess{i:08x}")
                else:
                    payload = register("1001", f"sr{i}", 2, nonce=real)
                payload = payload.replace(b"198.51.100.9", BYS.encode())
                raw.sendto(_udp(BYS, 5062, PBX_ATK, 5060, payload), (PBX_ATK, 0))
                sent += 1
                if i % 50 == 49:
                    time.sleep(0.02)  # keep the veth queue and Kamailio's socket happy
        finally:
            raw.close()
        return sent

    def _real_nonce(self) -> str:
        s = self.atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(5)
            s.bind((ATK, 5070))
            s.sendto(
                register("1001", "own", 1).replace(b"198.51.100.9", ATK.encode()), (PBX_ATK, 5060)
            )
            data = s.recv(65535)
        finally:
            s.close()
        m = re.search(rb'nonce="([^"]+)"', data)
        assert m is not None, data
        return m.group(1).decode()


def _udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(
        src=socket.inet_aton(src),
        dst=socket.inet_aton(dst),
        p=dpkt.ip.IP_PROTO_UDP,
        ttl=64,
        data=udp,
    )
    ip.len = 20 + udp.ulen
    return bytes(ip)


@contextlib.contextmanager
def lab(tmp: Path, *, bind_nonce: bool = True) -> Iterator[Lab]:
    with hosts("pbx", "atk", "bys") as (pbx, atk, bys):
        link(pbx, [f"{PBX_ATK}/24"], atk, [f"{ATK}/24"])
        link(pbx, [f"{PBX_BYS}/24"], bys, [f"{BYS}/24"])
        for key in ("all", "default"):
            pbx.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        for line in pbx.run(["ip", "-o", "link"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            pbx.sysctl(f"net.ipv4.conf.{name}.rp_filter", "0")
        kam = Kamailio(
            pbx,
            tmp,
            [f"udp:{PBX_ATK}:5060", f"udp:{PBX_BYS}:5060"],
            {"1001": PASSWORD},
            bind_nonce=bind_nonce,
        )
        raw = pbx.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        cap = open_capture(None, [5060], raw)
        det = WireDetector(default_fingerprints())
        the_lab = Lab(pbx, atk, bys, kam, tmp)
        stop = threading.Event()
        t = threading.Thread(target=run_capture, args=(cap, det, the_lab.events.append, stop))
        t.start()
        try:
            kam.start()
            yield the_lab
        finally:
            time.sleep(0.3)  # let the last answers reach the capture
            stop.set()
            t.join(5)
            cap.close()
            kam.stop()
