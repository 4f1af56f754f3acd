# A real border router for the lab: BIRD 2 from Debian in its own namespace, peered over
# eBGP with the PBX's speaker. Its import filter turns a route carrying the BLACKHOLE
# community (RFC 7999, 65535:666) into a blackhole route in the kernel, which with strict
# uRPF (rp_filter=1 on the attacker-facing interface) drops everything *from* that source:
# source-based RTBH. FlowSpec routes land in a flow4 table (BIRD shows them; it does not
# program the Linux data path with them). What the router knows is read from its own CLI.
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sipdeflect.lab.netns import LabError, Netns

BLACKHOLE = "65535:666"


def config(router_id: str, local: str, local_as: int, peer: str, peer_as: int) -> str:
    return f"""# the lab's border router
router id {router_id};
protocol device {{}}
protocol kernel {{ ipv4 {{ export all; }}; }}
flow4 table flowtab4;
protocol bgp pbx {{
    local {local} as {local_as};
    neighbor {peer} as {peer_as};
    hold time 9;
    connect retry time 2;
    error wait time 1, 4;
    ipv4 {{
        import filter {{
            if ({BLACKHOLE.replace(":", ",")}) ~ bgp_community then {{
                dest = RTD_BLACKHOLE;
                accept;
            }}
            reject;
        }};
        export none;
    }};
    flow4 {{ table flowtab4; import all; export none; }};
}}
"""


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    dest: str  # "blackhole", "unicast", ...
    communities: tuple[str, ...]


class Bird:
    def __init__(self, ns: Netns, workdir: Path, conf: str) -> None:
        self.ns = ns
        self.dir = workdir / f"bird-{ns.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "bird.conf"
        self.conf.write_text(conf)
        self.socket = self.dir / "bird.ctl"
        self.pidfile = self.dir / "bird.pid"

    def start(self) -> Bird:
        self.ns.run(["bird", "-c", str(self.conf), "-s", str(self.socket), "-P", str(self.pidfile)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.socket.exists() and self.birdc("show", "status", check=False):
                return self
            time.sleep(0.1)
        raise LabError("bird did not open its control socket")

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def birdc(self, *args: str, check: bool = True) -> str:
        res = self.ns.run(["birdc", "-s", str(self.socket), *args], check=check)
        return res.stdout

    def routes(self, table: str = "master4") -> dict[str, Route]:
        """`birdc show route all table T`, parsed: prefix -> destination and communities."""
        return parse_routes(self.birdc("show", "route", "all", "table", table))

    def flows(self) -> list[str]:
        """The flow4 table's routes as BIRD prints them (one line per flow)."""
        text = self.birdc("show", "route", "table", "flowtab4")
        return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("flow4")]

    def session(self) -> str:
        """ "Established", "Active", ... for the protocol towards the PBX."""
        for line in self.birdc("show", "protocols", "pbx").splitlines():
            if line.startswith("pbx"):
                return line.split()[-1]
        return "unknown"


_HEAD = re.compile(r"^(\S+/\d+)\s+(\w+)")


def parse_routes(text: str) -> dict[str, Route]:
    out: dict[str, Route] = {}
    prefix, dest = "", ""
    comms: tuple[str, ...] = ()
    for line in text.splitlines():
        m = _HEAD.match(line)
        if m and not line.startswith(("BIRD", "Table")):
            if prefix:
                out[prefix] = Route(prefix, dest, comms)
            prefix, dest, comms = m.group(1), m.group(2), ()
        elif "BGP.community:" in line and prefix:
            found = re.findall(r"\((\d+),(\d+)\)", line)
            comms = tuple(f"{a}:{b}" for a, b in found)
    if prefix:
        out[prefix] = Route(prefix, dest, comms)
    return out
