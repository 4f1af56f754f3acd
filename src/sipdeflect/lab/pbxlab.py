# The whole product in a throwaway lab, shared by `sipdeflect demo` and the end-to-end test:
# a PBX host (Kamailio from Debian as a registrar with digest auth, plus `sipdeflect run`
# with default settings but for the paths and a shorter quiet_after), an attacker host with
# one address per tool (so each tool's detection stands on its own) and a customer whose
# phone (sipp) registers with the right password every second. Independent witnesses, none
# of them part of sipdeflect: nftables counters in the PBX namespace count what each
# attacker got into the PBX's SIP socket, into the decoy and into anything at all, and a
# packet socket on the PBX's attacker-side interface timestamps each attacker's first SIP
# packet. Addresses are documentation ranges; every loop is bounded in count and time.
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipdeflect.control import ControlClient, ControlError
from sipdeflect.lab.bird import Bird
from sipdeflect.lab.bird import config as bird_config
from sipdeflect.lab.decoylab import (
    conclude,
    dictionary,
    flood_from,
    flood_register,
    tool_path,
)
from sipdeflect.lab.kamailio import Kamailio, register_customer
from sipdeflect.lab.netns import LabError, Netns, hosts, link, parse_snmp

PBX_ATK, PBX_CUST = "203.0.113.1", "198.51.100.1"
CUSTOMER = "198.51.100.20"
BYSTANDER = "198.51.100.77"  # never logs in; the attacker forges it too (control case)
CUSTOMER_USER, CUSTOMER_PASSWORD = "1001", "correct-horse-battery"
SIP_PORT, DECOY_PORT = 5060, 5070
# One address per attacking tool; "late" is the attack running while sipdeflect is killed.
ATTACKERS = {
    "svcrack": "203.0.113.66",
    "svwar": "203.0.113.67",
    "flooder": "203.0.113.68",
    "late": "203.0.113.69",
}
# Every attacker and the customer get nftables counters (the lab's witnesses).
WITNESSED = {**ATTACKERS, "customer": CUSTOMER}
QUIET_AFTER = 4.0  # seconds (default 15): the lab would otherwise mostly wait
# The border variant (router=True): a BIRD router between the attacker/customer and the
# PBX, eBGP over a /30 link; the PBX keeps PBX_ATK and PBX_CUST as /32s behind it.
PBX_UPLINK, RTR_DOWNLINK = "192.0.2.1", "192.0.2.2"
RTR_ATK, RTR_CUST = "203.0.113.254", "198.51.100.254"
PBX_AS, RTR_AS = 64512, 64513
ETH_P_IP = 0x0800


def _counter_rules() -> str:
    rules = []
    for name, addr in WITNESSED.items():
        rules += [
            f'ip saddr {addr} udp dport {SIP_PORT} counter name "pbx_{name}"',
            f'ip saddr {addr} udp dport {DECOY_PORT} counter name "decoy_{name}"',
            f'ip saddr {addr} counter name "any_{name}"',
        ]
    counters = "\n".join(
        f"    counter {kind}_{n} {{ }}"
        for n in WITNESSED
        for kind in ("pbx", "decoy", "any", "sent")
    )
    body = "\n        ".join(rules)
    sent = "\n        ".join(
        f'ip saddr {addr} counter name "sent_{name}"' for name, addr in WITNESSED.items()
    )
    # Input at filter priority: after sipdeflect's prerouting chains (raw and dstnat), so a
    # deflected packet arrives here with the decoy's port and a blocked one never does.
    # "sent" counts on prerouting before sipdeflect's raw chain: everything that arrived.
    return f"""
table inet sdflab {{
{counters}
    chain in {{
        type filter hook input priority filter; policy accept;
        {body}
    }}
    chain arrived {{
        type filter hook prerouting priority raw - 10; policy accept;
        {sent}
    }}
}}
"""


def config_text(workdir: Path, kamailio_log: Path, quiet_after: float = QUIET_AFTER) -> str:
    """sipdeflect's defaults, but for where things live, quiet_after and how often the
    block set's counters are read (the lab is short)."""
    return f"""# the lab's sipdeflect.toml: defaults except paths, quiet_after, counters_every
[decoy]
port = {DECOY_PORT}
pcap = "{workdir / "decoy.pcap"}"
[[detect.logs]]
path = "{kamailio_log}"
format = "kamailio"
[policy]
quiet_after = "{quiet_after:g}s"
[store]
path = "{workdir / "state.db"}"
counters_every = "2s"
[control]
socket = "{workdir / "run" / "ctl.sock"}"
"""


@dataclass
class Attack:
    """What one tool did, as the lab's own witnesses saw it."""

    name: str
    source: str
    conclusion: str = ""
    seconds: float = 0.0
    to_pbx: int = 0  # packets that reached the PBX's SIP socket (nftables, input)
    to_decoy: int = 0
    first_packet: float | None = None  # epoch, from the packet socket
    deflected_at: float | None = None  # epoch, from sipdeflect's decision history
    how: str = ""  # the reason sipdeflect gave
    output: str = ""

    @property
    def to_deflect(self) -> float | None:
        if self.first_packet is None or self.deflected_at is None:
            return None
        return self.deflected_at - self.first_packet


@dataclass
class Customer:
    """A phone registering every second; results are (epoch, succeeded)."""

    ns: Netns
    results: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="customer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 900  # bounded whatever happens to the caller
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.time()
            ok = (
                register_customer(
                    self.ns, PBX_CUST, CUSTOMER_USER, CUSTOMER_PASSWORD, count=1
                ).returncode
                == 0
            )
            self.results.append((t, ok))
            self._stop.wait(max(0.0, 1.0 - (time.time() - t)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    @property
    def failures(self) -> int:
        return sum(1 for _, ok in self.results if not ok)


class FirstPackets:
    """Epoch of each attacker's first UDP packet to the SIP port, from a packet socket on
    the PBX's attacker-side interface (the kernel's copy, before any firewall hook)."""

    def __init__(self, pbx: Netns, ifname: str) -> None:
        self.seen: dict[str, float] = {}
        self._watch = {socket.inet_aton(a): a for a in ATTACKERS.values()}
        self._sock = pbx.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self._sock.bind((ifname, ETH_P_IP))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="first-packets", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                pkt = self._sock.recv(128)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            if len(pkt) < 28 or pkt[9] != socket.IPPROTO_UDP:
                continue
            addr = self._watch.get(pkt[12:16])
            ihl = (pkt[0] & 0x0F) * 4
            if addr is None or addr in self.seen or len(pkt) < ihl + 4:
                continue
            if int.from_bytes(pkt[ihl + 2 : ihl + 4], "big") == SIP_PORT:
                self.seen[addr] = now

    def forget(self, addr: str) -> None:
        self.seen.pop(addr, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class PbxLab:
    def __init__(  # noqa: PLR0917 - the lab's parts, built by pbx_lab only
        self,
        workdir: Path,
        pbx: Netns,
        atk: Netns,
        cust: Netns,
        kam: Kamailio,
        pbx_if: str,
        router: Router | None = None,
    ) -> None:
        self.workdir = workdir
        self.pbx, self.atk, self.cust, self.kam = pbx, atk, cust, kam
        self.router = router
        self.atk_if = _ifname(atk, ATTACKERS["svcrack"])
        self.config = workdir / "sipdeflect.toml"
        self.config.write_text(
            config_text(workdir, kam.log) + (border_text(workdir) if router else "")
        )
        self.control = ControlClient(workdir / "run" / "ctl.sock", timeout=10)
        self.customer = Customer(cust)
        self.first = FirstPackets(pbx, pbx_if)  # the PBX's attacker-side interface
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = workdir / "daemon.log"
        self.words = dictionary(workdir / "words.txt")
        pbx.run(["nft", "-f", "-"], input_=_counter_rules())

    # -- sipdeflect ---------------------------------------------------------------------------
    def start_daemon(self, timeout: float = 60.0) -> None:
        argv = [sys.executable, "-m", "sipdeflect", "run", "--config", str(self.config)]
        with self.daemon_log.open("ab") as log:
            self.daemon = self.pbx.popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise LabError(f"sipdeflect exited: {self.daemon_log.read_text()[-2000:]}")
            with contextlib.suppress(ControlError, OSError):
                if self.control.call("status"):
                    return
            time.sleep(0.2)
        raise LabError("sipdeflect did not open its control socket in time")

    def kill_daemon(self) -> None:
        """kill -9: no chance to clean up or flush anything."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(30)

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(10)

    def status(self) -> dict[str, Any]:
        return self.control.call("status")

    def show(self, addr: str) -> dict[str, Any]:
        return self.control.call("show", address=addr)

    def state(self, addr: str) -> str:
        src = self.show(addr).get("source")
        return "unknown" if src is None else str(src["state"])

    def wait_state(self, addr: str, states: set[str], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError, OSError):
                if self.state(addr) in states:
                    return True
            time.sleep(0.25)
        return False

    # -- witnesses -------------------------------------------------------------------------------
    def counter(self, name: str) -> int:
        out = self.pbx.run(["nft", "-j", "list", "counter", "inet", "sdflab", name]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise LabError(f"no counter {name}")

    def counts(self, name: str) -> tuple[int, int, int]:
        """(to the PBX's SIP socket, to the decoy, to anything) for one attacker."""
        pbx, decoy, anything = (self.counter(f"{k}_{name}") for k in ("pbx", "decoy", "any"))
        return pbx, decoy, anything

    def dropped(self, name: str) -> int:
        """Packets from one attacker that arrived but reached no local input (the block)."""
        return self.counter(f"sent_{name}") - self.counter(f"any_{name}")

    def element_count(self, set_name: str, addr: str) -> int:
        out = self.pbx.run(["nft", "list", "set", "inet", "sipdeflect", set_name]).stdout
        return out.count(addr)

    def ruleset(self) -> str:
        return self.pbx.run(["nft", "-a", "list", "table", "inet", "sipdeflect"]).stdout

    # -- attacks -----------------------------------------------------------------------------------
    def attack(self, name: str, tool: str, args: list[str], *, timeout: float = 120) -> Attack:
        src = ATTACKERS[name]
        # SIPVicious 0.3.8 ignores its -b option, so pick the source address by route.
        self.atk.run(["ip", "route", "replace", f"{PBX_ATK}/32", "dev", self.atk_if, "src", src])
        argv = [tool_path(f"sipvicious_{tool}"), *args]
        t0 = time.monotonic()
        res = self.atk.run(argv, check=False, timeout=timeout, input_="")
        out = res.stdout + res.stderr
        seconds = time.monotonic() - t0
        return self._finish(Attack(name, src, conclude(tool, out), seconds, output=out))

    def svcrack(self, name: str = "svcrack") -> Attack:
        return self.attack(name, "svcrack", ["-u", CUSTOMER_USER, "-d", str(self.words), PBX_ATK])

    def svwar(self, name: str = "svwar", method: str = "INVITE") -> Attack:
        return self.attack(name, "svwar", ["-e", "100-999", "-m", method, PBX_ATK])

    def flood(
        self,
        name: str = "flooder",
        *,
        limit: int = 500,
        interval: float = 0.02,
        seconds: float = 15.0,
    ) -> Attack:
        """The write-up's flooder (decoylab.flood) from this attacker's address."""
        src = ATTACKERS[name]
        t0 = time.monotonic()
        conclusion = flood_from(
            self.atk, src, (PBX_ATK, SIP_PORT), limit=limit, interval=interval, seconds=seconds
        )
        return self._finish(Attack(name, src, conclusion, time.monotonic() - t0))

    def send_raw(self, src: str, payloads: list[bytes], *, port: int = 5099) -> int:
        """Datagrams from ``src`` (an address of the attacker host, or one it forges) to the
        PBX's SIP port; nothing is read back. Returns how many were sent."""
        sock = self.atk.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((src, port))
            for p in payloads:
                sock.sendto(p, (PBX_ATK, SIP_PORT))
                time.sleep(0.002)
        finally:
            sock.close()
        return len(payloads)

    def _finish(self, attack: Attack) -> Attack:
        time.sleep(0.3)  # let the last packets land and the daemon record its decision
        attack.to_pbx, attack.to_decoy, _ = self.counts(attack.name)
        attack.first_packet = self.first.seen.get(attack.source)
        with contextlib.suppress(ControlError, OSError):
            story = self.show(attack.source)
            deflects = [h for h in story.get("history", []) if h["action"] == "deflect"]
            if deflects:
                attack.deflected_at = float(deflects[0]["at"])
                attack.how = str(deflects[0]["reason"])
        return attack


def _ifname(ns: Netns, prefix: str) -> str:
    out = ns.run(["ip", "-j", "addr", "show"]).stdout
    for item in json.loads(out):
        for a in item.get("addr_info", []):
            if a.get("local") == prefix:
                return str(item["ifname"])
    raise LabError(f"no interface with {prefix} in {ns.name}")


def forged_burst(src: str) -> list[bytes]:
    """What a spoofer sends "from" the customer: a scanner flood, an INVITE sweep and
    credentials with a nonce it never received (it never sees an answer)."""
    out = [flood_register(src, 5099, PBX_ATK) for _ in range(60)]
    out += [
        (
            f"INVITE sip:{ext}@{PBX_ATK} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src}:5099;branch=z9hG4bK-f{ext}\r\n"
            f"From: <sip:{ext}@{PBX_ATK}>;tag=f{ext}\r\nTo: <sip:{ext}@{PBX_ATK}>\r\n"
            f"Call-ID: forged-{ext}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            "User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for ext in range(100, 140)
    ]
    out.append(
        (
            f"REGISTER sip:{PBX_ATK} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5099;branch=z9hG4bK-a\r\n"
            f"From: <sip:1001@{PBX_ATK}>;tag=a\r\nTo: <sip:1001@{PBX_ATK}>\r\n"
            "Call-ID: forged-auth\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
            'Authorization: Digest username="1001", realm="lab", nonce="guessed", '
            f'uri="sip:{PBX_ATK}", response="00000000000000000000000000000000"\r\n'
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    return out


def border_text(workdir: Path, **overrides: object) -> str:
    """The [border] section of the router variant: RTBH and FlowSpec to the lab's BIRD;
    the operator's own blocks qualify too (the tests use them for expiry and restarts)."""
    values: dict[str, object] = {
        "enabled": True,
        "mode": "both",
        "evidence": ["quiet", "quit", "manual"],
        "communities": ["65535:666", f"{RTR_AS}:666"],
        "peer": RTR_DOWNLINK,
        "peer_as": RTR_AS,
        "local_address": PBX_UPLINK,
        "local_as": PBX_AS,
        "workdir": str(workdir / "run" / "border"),
        **overrides,
    }
    lines = ["[border]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Router:
    """The border variant's router namespace, its interfaces and its BIRD."""

    ns: Netns
    atk_if: str  # faces the attacker: strict uRPF here
    cust_if: str
    pbx_if: str
    bird: Bird

    def rp_filter_drops(self) -> int:
        """Packets the router's kernel dropped by reverse-path filtering (TcpExt)."""
        text = self.ns.run(["cat", "/proc/net/netstat"]).stdout
        return parse_snmp(text)["TcpExt"]["IPReversePathFilter"]

    def rx_packets(self, ifname: str) -> int:
        out = self.ns.run(["ip", "-s", "-j", "link", "show", "dev", ifname]).stdout
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def tx_packets(self, ifname: str) -> int:
        out = self.ns.run(["ip", "-s", "-j", "link", "show", "dev", ifname]).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["packets"])

    def blackholes(self) -> set[str]:
        """Blackhole routes in the router's kernel table (what BIRD installed)."""
        out = self.ns.run(["ip", "-j", "route", "show", "type", "blackhole"]).stdout
        return {str(r["dst"]) for r in json.loads(out or "[]")}


def _router_topology(workdir: Path, pbx: Netns, atk: Netns, cust: Netns, rtr: Netns) -> Router:
    """attacker -- router -- PBX, customer -- router: the PBX's addresses become /32s behind
    the router, which answers ARP for them (proxy_arp) so the hosts' own config is as in the
    flat lab."""
    addrs = list(ATTACKERS.values())
    atk_if, _ = link(rtr, [f"{RTR_ATK}/24"], atk, [f"{a}/24" for a in addrs])
    cust_if, _ = link(rtr, [f"{RTR_CUST}/24"], cust, [f"{CUSTOMER}/24"])
    pbx_if, _ = link(
        rtr, [f"{RTR_DOWNLINK}/30"], pbx, [f"{PBX_UPLINK}/30", f"{PBX_ATK}/32", f"{PBX_CUST}/32"]
    )
    # Routes to the lab's own ranges only, no default: Kamailio's start-up DNS lookups must
    # fail at once (as in the flat lab), not wait on a resolver nobody can reach.
    for net in ("203.0.113.0/24", "198.51.100.0/24"):
        pbx.run(["ip", "route", "add", net, "via", RTR_DOWNLINK])
    for dst in (PBX_ATK, PBX_CUST):
        rtr.run(["ip", "route", "add", f"{dst}/32", "via", PBX_UPLINK])
    rtr.sysctl("net.ipv4.ip_forward", "1")
    for ifname in (atk_if, cust_if):
        rtr.sysctl(f"net.ipv4.conf.{ifname}.proxy_arp", "1")
    for conf in ("all", "default", cust_if, pbx_if):
        rtr.sysctl(f"net.ipv4.conf.{conf}.rp_filter", "0")
    # Strict uRPF facing the attacker: a source whose route is a blackhole is dropped.
    rtr.sysctl(f"net.ipv4.conf.{atk_if}.rp_filter", "1")
    bird = Bird(rtr, workdir, bird_config(RTR_DOWNLINK, RTR_DOWNLINK, RTR_AS, PBX_UPLINK, PBX_AS))
    return Router(rtr, atk_if, cust_if, pbx_if, bird.start())


@contextlib.contextmanager
def pbx_lab(workdir: Path, *, router: bool = False) -> Iterator[PbxLab]:
    """Build the lab, start Kamailio and the witnesses (not sipdeflect: the caller starts
    it), tear everything down on exit, even on Ctrl-C. ``router``: the border variant."""
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    os.chmod(workdir / "run", 0o700)
    roles = ("pbx", "atk", "cust", "rtr") if router else ("pbx", "atk", "cust")
    with hosts(*roles) as made:
        pbx, atk, cust = made[:3]
        addrs = list(ATTACKERS.values())
        rtr: Router | None = None
        if router:
            rtr = _router_topology(workdir, pbx, atk, cust, made[3])
        else:
            link(pbx, [f"{PBX_ATK}/24"], atk, [f"{a}/24" for a in addrs])
            link(pbx, [f"{PBX_CUST}/24"], cust, [f"{CUSTOMER}/24"])
        # The attacker can forge the customer's address (it is on its interface, so it can
        # bind to it); replies go to the real customer. The PBX must not drop them by
        # reverse-path filtering, like most hosts on the internet.
        for forged in (CUSTOMER, BYSTANDER):
            atk.run(["ip", "addr", "add", f"{forged}/32", "dev", _ifname(atk, addrs[0])])
        for conf in ("all", "default", _ifname(pbx, PBX_ATK)):
            pbx.sysctl(f"net.ipv4.conf.{conf}.rp_filter", "0")
        kam = Kamailio(
            pbx,
            workdir,
            [f"udp:{PBX_ATK}:{SIP_PORT}", f"udp:{PBX_CUST}:{SIP_PORT}"],
            {CUSTOMER_USER: CUSTOMER_PASSWORD},
        ).start()
        lab = PbxLab(workdir, pbx, atk, cust, kam, _ifname(pbx, PBX_ATK), rtr)
        try:
            yield lab
        finally:
            lab.customer.stop()
            lab.stop_daemon()
            lab.first.close()
            kam.stop()
            if rtr is not None:
                rtr.bird.stop()
