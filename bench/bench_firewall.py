# Firewall benchmark, entirely inside throwaway network namespaces (never the host's
# ruleset). 1) Apply N block elements (100k, 1M) as one plan through the backend (one
# `nft -f -` transaction): wall time of planning and of applying, and kernel memory as the change

# in /proc/meminfo Slab (machine-wide, so approximate). 2) Per-packet cost vs set size:
# a scanner namespace sends a fixed number of UDP datagrams from a source that is NOT
# in the set (so every packet pays the lookups and is delivered) to the PBX namespace;
# we time how long the receiver takes to get them all, with 0, 100k and 1M elements.
from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import time
from pathlib import Path

from bench.common import save
from sipdeflect.firewall import nftables
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings
from sipdeflect.firewall.plan import plan_block, plan_setup, plan_teardown
from sipdeflect.lab.netns import hosts, link

SETTINGS = FirewallSettings()


def slab_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def targets(n: int) -> list[ipaddress.IPv4Network]:
    # Set contents only (no packet is ever sent to or from these): 10.0.0.0/8 has room.
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [ipaddress.IPv4Network(base + i) for i in range(n)]


def blast(sender: socket.socket, receiver: socket.socket, count: int) -> float:
    """Seconds until `count` datagrams sent in a paced loop have all arrived."""
    receiver.setblocking(False)
    got = 0
    start = time.perf_counter()
    deadline = start + 60
    sent = 0
    while got < count and time.perf_counter() < deadline:
        if sent < count and sent - got < 256:  # stay under the socket buffer
            sender.send(b"x" * 64)
            sent += 1
            continue
        select.select([receiver], [], [], 0.05)
        while True:
            try:
                receiver.recv(128)
                got += 1
            except BlockingIOError:
                break
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench firewall")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    figures: dict[str, object] = {"backend": "nftables", "apply": [], "per_packet": []}
    with hosts("pbx", "scan") as (pbx, scan):
        link(pbx, ["192.0.2.1/24"], scan, ["192.0.2.10/24"])
        be = get_backend("nftables", SETTINGS, Runner(netns=pbx.name, timeout=600))
        rx = pbx.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("192.0.2.1", 5060))
        tx = scan.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(("192.0.2.1", 5060))

        def per_packet(n: int) -> None:
            blast(tx, rx, 2000)  # warm up
            secs = min(blast(tx, rx, args.packets) for _ in range(3))
            row = {
                "elements": n,
                "packets": args.packets,
                "us_per_packet": secs / args.packets * 1e6,
            }
            figures["per_packet"].append(row)  # type: ignore[attr-defined]
            print(json.dumps(row))

        be.apply(plan_setup(SETTINGS))
        per_packet(0)
        for n in sizes:
            be.apply(plan_teardown(SETTINGS))
            be.apply(plan_setup(SETTINGS))
            ts = targets(n)
            t0 = time.perf_counter()
            plan = plan_block(ts, 3600)
            t1 = time.perf_counter()
            script = nftables.element_script(plan, SETTINGS.table)
            t2 = time.perf_counter()
            slab0 = slab_kib()
            t3 = time.perf_counter()
            be.apply(plan)  # the real path: renders the script again, nft -f, conntrack
            t4 = time.perf_counter()
            slab1 = slab_kib()
            listed = be.runner.run(["nft", "list", "set", "inet", SETTINGS.table, "block4"])
            count = listed.count("timeout 1h")
            row = {
                "elements": n,
                "in_set": count,
                "plan_s": round(t1 - t0, 3),
                "render_s": round(t2 - t1, 3),
                "apply_s": round(t4 - t3, 3),
                "total_s": round((t1 - t0) + (t4 - t3), 3),  # plan + apply (which renders)
                "script_mib": round(len(script) / 2**20, 1),
                "slab_delta_mib": round((slab1 - slab0) / 1024, 1),
                "slab_bytes_per_element": round((slab1 - slab0) * 1024 / n),
            }
            figures["apply"].append(row)  # type: ignore[attr-defined]
            print(json.dumps(row))
            per_packet(n)
        be.apply(plan_teardown(SETTINGS))
        rx.close()
        tx.close()
    if not args.no_save:
        save("firewall", figures)
    return 0
