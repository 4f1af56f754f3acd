# A two-host lab for the decoy, shared by `sipdeflect demo` and the end-to-end tests: an
# attacker (203.0.113.66) and a PBX host (192.0.2.10) in their own network namespaces joined
# by veth. In the PBX namespace nftables redirects the attacker's SIP (5060) to the decoy's
# port, as the firewall does in production, and a named counter on the input path counts
# every packet the attacker gets to the decoy: an independent count of "requests sent".
# The decoy runs in this process on sockets made inside the PBX namespace; the scanners are
# the real SIPVicious scripts run inside the attacker namespace.
from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sipdeflect.decoy.events import Sink
from sipdeflect.decoy.runner import Running, start
from sipdeflect.decoy.server import Listen
from sipdeflect.decoy.strategy import Persona
from sipdeflect.lab.netns import Netns, hosts, link

ATTACKER = "203.0.113.66"
PBX = "192.0.2.10"
SIP_PORT = 5060
DECOY_PORT = 5070
TOOL_TIMEOUT = 60.0

_NFT_RULES = f"""
table ip sdflab {{
    counter decoy {{ }}
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip saddr {ATTACKER} udp dport {SIP_PORT} redirect to :{DECOY_PORT}
    }}
    chain in {{
        type filter hook input priority filter; policy accept;
        ip saddr {ATTACKER} udp dport {DECOY_PORT} counter name "decoy"
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class ToolRun:
    tool: str
    argv: tuple[str, ...]
    sent: int  # packets the PBX's nftables counter saw from the attacker to the decoy
    conclusion: str
    seconds: float
    returncode: int
    output: str


def tool_path(name: str) -> str:
    """A console script installed next to this interpreter (the locked environment)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return str(path)


def dictionary(path: Path, words: int = 1000) -> Path:
    """A password dictionary of ``words`` distinct, plausible-looking words."""
    stems = ["password", "secret", "voip", "sip", "admin", "letmein", "qwerty", "pbx"]
    path.write_text("\n".join(f"{stems[i % len(stems)]}{i}" for i in range(words)) + "\n")
    return path


class DecoyLab:
    """Attacker and PBX namespaces, the redirect + counter, and the decoy running on the PBX."""

    def __init__(self, attacker: Netns, pbx: Netns, running: Running) -> None:
        self.attacker = attacker
        self.pbx = pbx
        self.running = running

    # -- the independent counter ---------------------------------------------------------
    def take_count(self) -> int:
        """Packets counted since the last call (nft reset counter returns and zeroes)."""
        out = self.pbx.run(["nft", "-j", "reset", "counter", "ip", "sdflab", "decoy"]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise ValueError("no counter in nft output")

    # -- scanners --------------------------------------------------------------------
    def run_tool(self, tool: str, args: list[str]) -> ToolRun:
        self.take_count()
        argv = [tool_path(f"sipvicious_{tool}"), *args]
        t0 = time.monotonic()
        res = self.attacker.run(argv, check=False, timeout=TOOL_TIMEOUT)
        seconds = time.monotonic() - t0
        output = res.stdout + res.stderr
        return ToolRun(
            tool,
            tuple(args),
            self.take_count(),
            conclude(tool, output),
            seconds,
            res.returncode,
            output,
        )

    def flood(self, *, limit: int = 200, interval: float = 0.02, deadline: float = 10.0) -> ToolRun:
        """The write-up's flooder against the decoy (see ``flood``)."""
        self.take_count()
        t0 = time.monotonic()
        conclusion = flood_from(
            self.attacker,
            ATTACKER,
            (PBX, SIP_PORT),
            limit=limit,
            interval=interval,
            seconds=deadline,
        )
        return ToolRun(
            "flooder",
            ("REGISTER x N",),
            self.take_count(),
            conclusion,
            time.monotonic() - t0,
            0,
            "",
        )


FLOOD_PORT = 5182  # the flooder's one fixed source port
FLOOD_CALL_ID = b"Call-ID: 3361196543"


def flood(
    sock: socket.socket,
    pbx: tuple[str, int],
    *,
    limit: int = 200,
    interval: float = 0.02,
    seconds: float = 10.0,
) -> tuple[int, str]:
    """The write-up's flooder on a bound socket: the same unauthenticated REGISTER, sent
    every ``interval`` until a 200 OK for it comes back (bounded in count and time).
    Returns (requests sent, what it concluded)."""
    src = sock.getsockname()
    msg = flood_register(src[0], src[1], pbx[0])
    t0 = time.monotonic()
    sent = 0
    while sent < limit and time.monotonic() - t0 < seconds:
        sock.sendto(msg, pbx)
        sent += 1
        if _liked(sock, t0 + sent * interval):
            return sent, f"got its 200 OK after {sent} requests: stopped"
    return sent, f"gave up after {sent} requests"


def flood_from(
    ns: Netns,
    src: str,
    pbx: tuple[str, int],
    *,
    limit: int = 200,
    interval: float = 0.02,
    seconds: float = 10.0,
) -> str:
    """flood() from ``src``:FLOOD_PORT inside ``ns``; what the flooder concluded."""
    sock = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((src, FLOOD_PORT))
        return flood(sock, pbx, limit=limit, interval=interval, seconds=seconds)[1]
    finally:
        sock.close()


def _liked(sock: socket.socket, until: float) -> bool:
    """Read answers until ``until`` (monotonic): was one of them the 200 it wants?"""
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            reply, _ = sock.recvfrom(65535)
        except TimeoutError:
            return False
        if reply.startswith(b"SIP/2.0 200 ") and FLOOD_CALL_ID in reply:
            return True
    return False


def flood_register(src: str, port: int, dst: str) -> bytes:
    """The REGISTER from the write-up (friendly-scanner), with a fixed Call-ID."""
    return (
        f"REGISTER sip:{dst} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-2528031440;rport\r\n"
        "Content-Length: 0\r\n"
        f'From: "2011" <sip:2011@{dst}>\r\n'
        "Accept: application/sdp\r\n"
        "User-Agent: friendly-scanner\r\n"
        f'To: "2011" <sip:2011@{dst}>\r\n'
        "Contact: sip:123@1.1.1.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"{FLOOD_CALL_ID.decode()}\r\n"
        "Max-Forwards: 70\r\n\r\n"
    ).encode()


_LOGLINE = re.compile(r"^(?:ERROR|WARNING|INFO|CRITICAL):[^:]*:(.*)$")
_TABLE_ROW = re.compile(r"^\|\s*(.+?)\s*\|\s*(.+?)\s*\|")


def conclude(tool: str, output: str) -> str:
    """What the scanner told its user, in one line: its results table or its last word."""
    rows = [
        m.groups()
        for line in output.splitlines()
        if (m := _TABLE_ROW.match(line.strip()))
        and m.group(1) not in {"Extension", "SIP Device", "User Agent"}
    ]
    if rows:
        return "reported: " + "; ".join(" ".join(r) for r in rows[:3])
    said = [m.group(1).strip() for line in output.splitlines() if (m := _LOGLINE.match(line))]
    skip = ("scan started", "Total time", "trying to get self ip", "using an INVITE scan")
    interesting = [s for s in said if not s.startswith(skip)]
    if not interesting:
        return said[-1] if said else "(no output)"
    return "; ".join(interesting[-2:])


@contextlib.contextmanager
def decoy_lab(*, sinks: list[Sink] | None = None, budget: float = 10.0) -> Iterator[DecoyLab]:
    """Build the lab, run the decoy, tear everything down on exit (even on Ctrl-C)."""
    with hosts("atk", "pbx") as (attacker, pbx):
        link(attacker, [f"{ATTACKER}/24"], pbx, [f"{PBX}/24"])
        attacker.run(["ip", "route", "add", "192.0.2.0/24", "dev", _dev(attacker)], check=False)
        pbx.run(["ip", "route", "add", "203.0.113.0/24", "dev", _dev(pbx)], check=False)
        pbx.run(["nft", "-f", "-"], input_=_NFT_RULES)
        running = start(
            [Listen("0.0.0.0", DECOY_PORT)],  # noqa: S104 - all of the PBX namespace
            budget=budget,
            cap=65_536,
            persona=Persona(),
            sinks=list(sinks or []),
            socket_factory=pbx.socket,
            local=[PBX, "127.0.0.1", "::1", "bcast:192.0.2.255"],
        )
        try:
            yield DecoyLab(attacker, pbx, running)
        finally:
            running.stop()


def _dev(ns: Netns) -> str:
    out = ns.run(["ip", "-j", "link", "show"]).stdout
    names = [str(i["ifname"]) for i in json.loads(out)]
    return next(n for n in names if n != "lo")
