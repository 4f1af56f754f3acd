# The daemon at scale (issue 19): a real `sipdeflect run` in a network namespace (its own
# nftables table there), fed through its real log follower: Kamailio's auth-failed line
# (the documented xlog; a failed login that answered the PBX's challenge) for 50,000
# distinct source addresses (198.18.0.0/15) on one account within 60 s, written at an even
# rate. The account is under distributed attack after the tenth address, so each later
# one is deflected at its first failure. Measured outside the daemon: decision latency
# (the line's write time to the decision's time in the daemon's store), the daemon's CPU
# seconds (/proc/PID/stat) and peak RSS (VmHWM). Engine tick cost: `./dev bench engine`.
#   --soak SECONDS: a pool of addresses attacking at a steady rate with short blocks, so
#   sources cycle deflect -> block -> release -> again; RSS sampled every 30 s: flat is
#   the goal (no state that grows with time rather than with what is in force).
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import save
from sipdeflect.control import ControlClient, ControlError
from sipdeflect.lab.netns import hosts

NET = ipaddress.ip_network("198.18.0.0/15")
LINE = (
    " 1(7493) WARNING: <script>: sipdeflect: auth-failed src={src} port=5060 proto=udp "
    "reason=wrong-password user=1001 ua=Linphone/3.6.1\n"
)


def config(work: Path, log: Path, soak: bool) -> str:
    extra = 'block_base = "60s"\n' if soak else ""
    return f"""[detect]
wire = false
[[detect.logs]]
path = "{log}"
format = "kamailio"
[policy]
quiet_after = "4s"
{extra}[decoy]
port = 5070
[store]
path = "{work / "state.db"}"
[control]
socket = "{work / "run" / "ctl.sock"}"
"""


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = 0.0
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            rss = int(ln.split()[1]) / 1024
    return ticks / 100, rss


def peak_rss(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1]) / 1024
    return 0.0


def feed(log: Path, addrs: list[str], seconds: float, written: dict[str, float]) -> None:
    """Append one line per address, evenly over ``seconds``, in 10 ms batches."""
    t0 = time.time()
    n = len(addrs)
    i = 0
    with log.open("a") as f:
        while i < n:
            due = min(n, int((time.time() - t0) / seconds * n) + 1)
            now = time.time()
            for a in addrs[i:due]:
                f.write(LINE.format(src=a))
                written.setdefault(a, now)
            f.flush()
            i = due
            time.sleep(0.01)


def latencies(db: Path, written: dict[str, float]) -> list[float]:
    con = sqlite3.connect(db)
    first: dict[str, float] = {}
    for at, target in con.execute("SELECT at, target FROM decisions ORDER BY at"):
        first.setdefault(target.split("/")[0], at)
    con.close()
    return [first[a] - t for a, t in written.items() if a in first]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench scale")
    ap.add_argument("--sources", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--soak", type=float, default=0.0, help="soak this many seconds instead")
    ap.add_argument("--pool", type=int, default=20_000, help="soak: addresses that cycle")
    ap.add_argument("--rate", type=float, default=200.0, help="soak: lines per second")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    soak = args.soak > 0
    with tempfile.TemporaryDirectory() as tmp, hosts("pbx") as (pbx,):
        work = Path(tmp)
        (work / "run").mkdir(mode=0o700)
        log = work / "kamailio.log"
        log.touch()
        cfg = work / "sipdeflect.toml"
        cfg.write_text(config(work, log, soak))
        out = (work / "daemon.log").open("wb")
        daemon = pbx.popen(
            [sys.executable, "-m", "sipdeflect", "run", "--config", str(cfg)],
            stdout=out,
            stderr=out,
        )
        ctl = ControlClient(work / "run" / "ctl.sock")
        try:
            for _ in range(300):
                with contextlib.suppress(ControlError, OSError):
                    ctl.call("status")
                    break
                time.sleep(0.1)
            cpu0, _ = proc_stat(daemon.pid)
            if soak:
                figures = run_soak(args, log, daemon.pid, ctl)
            else:
                figures = run_burst(args, log, work, daemon.pid, ctl, cpu0)
        finally:
            daemon.terminate()
            daemon.wait(60)
            out.close()
    print(json.dumps(figures, indent=2))
    if not args.no_save:
        save("scale-soak" if soak else "scale", figures)
    return 0


def run_burst(
    args: argparse.Namespace, log: Path, work: Path, pid: int, ctl: ControlClient, cpu0: float
) -> dict[str, object]:
    addrs = [str(NET.network_address + 1 + i) for i in range(args.sources)]
    written: dict[str, float] = {}
    t0 = time.time()
    feed(log, addrs, args.seconds, written)
    fed = time.time() - t0
    deadline = time.time() + 120
    while time.time() < deadline:  # every source decided (deflected or already blocked)
        st = ctl.call("status")
        if st["active"]["deflect"] + st["active"]["block"] >= args.sources:
            break
        time.sleep(0.5)
    cpu1, rss = proc_stat(pid)
    lat = sorted(latencies(work / "state.db", written))
    return {
        "sources": args.sources,
        "fed_in_s": round(fed, 1),
        "decided": len(lat),
        "latency_ms": {
            "median": round(statistics.median(lat) * 1000, 1),
            "p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
            "max": round(lat[-1] * 1000, 1),
        },
        "daemon_cpu_s": round(cpu1 - cpu0, 1),
        "daemon_rss_mib": round(rss, 1),
        "daemon_peak_rss_mib": round(peak_rss(pid), 1),
        "status": ctl.call("status")["sources"],
    }


def run_soak(
    args: argparse.Namespace, log: Path, pid: int, ctl: ControlClient
) -> dict[str, object]:
    pool = [str(NET.network_address + 1 + i) for i in range(args.pool)]
    samples: list[dict[str, float]] = []
    t0 = time.time()
    next_sample = t0
    k = 0
    with log.open("a") as f:
        while time.time() - t0 < args.soak:
            due = int((time.time() - t0) * args.rate)
            while k < due:
                f.write(LINE.format(src=pool[k % len(pool)]))
                k += 1
            f.flush()
            if time.time() >= next_sample:
                cpu, rss = proc_stat(pid)
                st = ctl.call("status")
                samples.append(
                    {
                        "t": round(time.time() - t0),
                        "rss_mib": round(rss, 1),
                        "cpu_s": cpu,
                        "known": sum(st["sources"].values()),
                        "blocked": st["active"]["block"],
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
                next_sample += 30
            time.sleep(0.05)
    five = max(1, len(samples) // 6)
    first = statistics.mean(s["rss_mib"] for s in samples[:five])
    last = statistics.mean(s["rss_mib"] for s in samples[-five:])
    return {
        "seconds": args.soak,
        "pool": args.pool,
        "rate": args.rate,
        "lines": k,
        "rss_first_sixth_mib": round(first, 1),
        "rss_last_sixth_mib": round(last, 1),
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "samples": samples,
    }
