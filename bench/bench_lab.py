# How fast sipdeflect catches each attacker in the end-to-end lab (src/sipdeflect/lab/
# pbxlab.py, the one `sipdeflect demo` narrates): per round a fresh lab with Kamailio and
# `sipdeflect run`; svcrack, svwar -m INVITE and the write-up's flooder attack in turn. For
# each: packets that reached Kamailio (nftables counter on the PBX's input path) and the
# time from its first packet (a packet socket on the PBX's interface) to sipdeflect's
# deflect decision. Also the latency of one deflect reaching the kernel (element + conntrack
# flush) with `nft -f -` spawned per decision, libnftables in-process, and the netlink
# batch the daemon uses by default (sipdeflect.firewall.nfnl), in a netns.
# Needs root. Figures go to bench/results/lab.json.
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import save
from sipdeflect.lab.netns import hosts
from sipdeflect.lab.pbxlab import pbx_lab

APPLY = """
import ipaddress, statistics, sys, time
from sipdeflect.decisions import Action, Decision
from sipdeflect.enforce import FirewallEnforcer
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings
from sipdeflect.firewall.plan import plan_setup
s = FirewallSettings(sip_ports=(5060,), decoy_port=5070, table="sipdeflect")
mode = sys.argv[1]
b = get_backend("nftables", s, Runner(inproc=mode != "nft", netlink=mode == "netlink"))
b.apply(plan_setup(s))
e = FirewallEnforcer(b)
ms = []
for i in range(int(sys.argv[2])):
    t = ipaddress.ip_network(f"203.0.113.{i % 250 + 1}/32")
    plan = e.plan([Decision(t, Action.DEFLECT, time.time() + 300, "engine", "x", time.time())])
    t0 = time.perf_counter()
    b.apply(plan)
    ms.append((time.perf_counter() - t0) * 1000)
print(statistics.median(ms), max(ms))
"""


def apply_latency(mode: str, n: int) -> dict[str, float]:
    with hosts("bench") as (ns,):
        out = ns.run([sys.executable, "-c", APPLY, mode, str(n)], timeout=300).stdout.split()
    return {"median_ms": round(float(out[0]), 2), "max_ms": round(float(out[1]), 2)}


def lab_round() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, pbx_lab(Path(tmp)) as lab:
        lab.start_daemon()
        time.sleep(1.0)
        for attack in (lab.svcrack(), lab.svwar(), lab.flood()):
            if attack.to_deflect is None:
                raise RuntimeError(f"{attack.name} was not deflected: {attack.output[-500:]}")
            out[attack.name] = {
                "to_pbx": attack.to_pbx,
                "to_deflect_ms": round(attack.to_deflect * 1000, 1),
            }
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench lab")
    ap.add_argument("--rounds", type=int, default=5, help="fresh labs (default 5)")
    ap.add_argument("--applies", type=int, default=200, help="deflects timed per mode")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    rounds = [lab_round() for _ in range(args.rounds)]
    figures: dict[str, object] = {"rounds": args.rounds}
    for name in rounds[0]:
        pbx = [r[name]["to_pbx"] for r in rounds]
        ms = [r[name]["to_deflect_ms"] for r in rounds]
        figures[name] = {
            "to_pbx_max": max(pbx),
            "to_pbx_median": statistics.median(pbx),
            "first_packet_to_deflect_ms_median": statistics.median(ms),
            "first_packet_to_deflect_ms_max": max(ms),
        }
    figures["apply_one_deflect"] = {
        "nft_process": apply_latency("nft", args.applies),
        "libnftables": apply_latency("libnftables", args.applies),
        "netlink": apply_latency("netlink", args.applies),
    }
    if args.no_save:
        print(figures)
    else:
        save("lab", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
