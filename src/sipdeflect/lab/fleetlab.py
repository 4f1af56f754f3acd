# Three PBXs sharing one fleet, for the fleet's end-to-end test and benchmark: three copies
# of the single-PBX lab (pbxlab.py: Kamailio, `sipdeflect run`, an attacker host, a
# customer, nftables counters as witnesses), each in its own namespaces, and one
# throwaway PostgreSQL (lab/postgres.py) in a database host namespace with a link to each
# PBX; each daemon reaches it over TCP on its own link (so a rule in one PBX's namespace
# can cut that PBX off: a partition), the test itself over the server's unix socket.
# Each PBX's attacker host carries the same addresses, so "the scanner" is one source
# address that reaches every PBX over that PBX's own link, as a sweep across a provider's
# PBXs would. Addresses are documentation ranges; every wait is bounded.
from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipdeflect.control import ControlError
from sipdeflect.lab.netns import Netns, hosts, link
from sipdeflect.lab.pbxlab import PbxLab, pbx_lab
from sipdeflect.lab.postgres import Postgres, postgres

NODES = ("pbx1", "pbx2", "pbx3")


DB_ADDRS = {"pbx1": "192.0.2.1", "pbx2": "192.0.2.5", "pbx3": "192.0.2.9"}  # on the db host


def fleet_config(pg: Postgres, node: str, allow: Sequence[str] = ()) -> str:
    listed = ", ".join(f'"{a}"' for a in allow)
    return f"""
[allow]
addresses = [{listed}]
[fleet]
enabled = true
dsn = "{pg.tcp_dsn(DB_ADDRS[node])}"
node = "{node}"
"""


@dataclass
class FleetLab:
    pg: Postgres
    labs: dict[str, PbxLab]

    def start(self, allow: dict[str, Sequence[str]] | None = None) -> None:
        for name, lab in self.labs.items():
            extra = fleet_config(self.pg, name, (allow or {}).get(name, ()))
            lab.config.write_text(lab.config.read_text() + extra)
            lab.start_daemon()
        for lab in self.labs.values():
            if not self.wait(lambda lab=lab: bool(lab.status()["fleet"]["connected"]), 30):
                raise ControlError(f"a daemon never reached the shared store: {lab.status()}")

    @staticmethod
    def wait(cond: Any, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(ControlError, OSError, KeyError, TypeError):
                if cond():
                    return True
            time.sleep(0.1)
        with contextlib.suppress(ControlError, OSError, KeyError, TypeError):
            return bool(cond())
        return False

    def cut(self, node: str) -> None:
        """A silent partition: ``node``'s namespace drops everything to and from the
        database host (no RST, no ICMP: the link just goes quiet)."""
        db = DB_ADDRS[node]
        rules = f"""table inet sdfcut {{
    chain out {{ type filter hook output priority 0; ip daddr {db} drop; }}
    chain in {{ type filter hook input priority 0; ip saddr {db} drop; }}
}}"""
        self.labs[node].pbx.run(["nft", "-f", "-"], input_=rules)

    def heal(self, node: str) -> None:
        self.labs[node].pbx.run(["nft", "delete", "table", "inet", "sdfcut"])

    def fleet_history(self, node: str, addr: str, origin: str) -> list[dict[str, Any]]:
        """The decisions ``node`` holds about ``addr`` that came from ``origin``."""
        story = self.labs[node].show(addr)
        return [h for h in story["history"] if h["origin"] == origin]


def _ifaces(ns: Netns) -> list[tuple[str, str, list[ipaddress.IPv4Interface]]]:
    """(ifname, MAC, IPv4 addresses) of each interface with a MAC and an IPv4 address."""
    out = []
    for item in json.loads(ns.run(["ip", "-j", "addr", "show"]).stdout):
        v4 = [
            ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for a in item.get("addr_info", [])
            if a.get("family") == "inet"
        ]
        if v4 and item.get("address") and item["ifname"] != "lo":
            out.append((str(item["ifname"]), str(item["address"]), v4))
    return out


def pin_neighbours(a: Netns, b: Netns) -> None:
    """Permanent ARP entries, both ways, on the veths joining ``a`` and ``b``. The kernel's
    neighbour table is one for all namespaces (gc_thresh3, 1024 by default): other
    work on the machine that talks to many addresses fills it ("neighbor table
    overflow"), and then a lab link cannot resolve its peer and goes silent for seconds.
    Permanent entries are exempt from that limit."""
    ia, ib = _ifaces(a), _ifaces(b)
    for x, xs, ys in ((a, ia, ib), (b, ib, ia)):
        for if_x, _, addrs_x in xs:
            nets = {i.network for i in addrs_x if i.network.prefixlen < 32}
            for _, mac_y, addrs_y in ys:
                # the other end of this link: its subnet addresses (not /32 extras such
                # as the addresses an attacker host forges) inside this interface's nets
                peers = [i.ip for i in addrs_y if i.network.prefixlen < 32]
                for ip in (p for p in peers if any(p in n for n in nets)):
                    argv = ["ip", "neigh", "replace", str(ip), "lladdr", mac_y, "dev", if_x]
                    x.run([*argv, "nud", "permanent"])


@contextlib.contextmanager
def fleet_lab(workdir: Path) -> Iterator[FleetLab]:
    """PostgreSQL and three PBX labs (daemons not started: FleetLab.start does), all torn
    down on exit."""
    with hosts("db") as (db,), contextlib.ExitStack() as stack:
        labs = {}
        for name in NODES:
            labs[name] = stack.enter_context(pbx_lab(workdir / name))
            peer = str(ipaddress.ip_address(DB_ADDRS[name]) + 1)
            link(db, [f"{DB_ADDRS[name]}/30"], labs[name].pbx, [f"{peer}/30"])
            for a, b in ((db, labs[name].pbx), (labs[name].pbx, labs[name].atk)):
                pin_neighbours(a, b)
            pin_neighbours(labs[name].pbx, labs[name].cust)
        with postgres(db, listen=",".join(DB_ADDRS.values())) as pg:
            yield FleetLab(pg, labs)
