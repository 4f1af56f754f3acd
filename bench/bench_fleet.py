# Fleet benchmark on a real PostgreSQL (Debian's, throwaway, unix socket; lab/postgres.py):
# one publishing node in this process, two receiving nodes in their own processes, each a
# FleetLink as the daemon runs it, whose received decisions go through a real Engine (the
# firewall and the local SQLite store are not in this measurement: see bench_firewall).
# 1) Latency: N single decisions, 20 ms apart; for each, decision time on the publisher ->
#    taken into the receiver's engine (one host, one clock). Median, p90, max.
# 2) Burst: 10k decisions offered as fast as the loop lets them (100 per loop turn); time
#    from the first offer to the last one taken in on each receiver; the publisher's cost
#    per decision: offer() alone (the outbox write on the daemon's loop) and all CPU of the
#    publishing process (offer + publishing) divided by the count.
# 3) --lab N (root): the three-PBX lab of tests/lab/test_fleet_e2e.py (three `sipdeflect
#    run` daemons, Kamailio, one PostgreSQL); N operator blocks on PBX 1, 200 ms apart;
#    for each, PBX 1's decision time -> the time PBX 2 and PBX 3 took it into their
#    engines (their own `show` history; one host, one clock). The whole daemon path:
#    local SQLite commit, outbox, PostgreSQL, NOTIFY, catch-up read, judge, engine.
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.common import save
from sipdeflect.decisions import Action, Decision, Level
from sipdeflect.engine import Engine
from sipdeflect.fleet.link import FleetLink
from sipdeflect.fleet.outbox import Outbox
from sipdeflect.fleet.rules import Rules
from sipdeflect.lab.postgres import postgres

BASE = ipaddress.ip_address("2001:db8:1::")


def target(i: int) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(f"{BASE + i}/128")


def receiver(name: str, dsn: str, tmp: str, expect: int, pipe: Connection) -> None:
    arrivals: dict[str, float] = {}
    engine = Engine()

    def deliver(decisions: list[Decision]) -> None:
        now = time.time()
        for d in decisions:
            if engine.remote_decision(d, now):
                arrivals[str(d.target)] = now

    async def main() -> None:
        link = FleetLink(dsn, Rules(node=name), Outbox(Path(tmp) / f"{name}.db"), deliver)
        task = asyncio.create_task(link.run())
        end = time.monotonic() + 60
        while not link.connected and time.monotonic() < end:
            await asyncio.sleep(0.05)
        pipe.send("ready")
        end = time.monotonic() + 300
        while len(arrivals) < expect and time.monotonic() < end:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    pipe.send(arrivals)


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median_ms": round(statistics.median(xs) * 1000, 2),
        "p90_ms": round(xs[int(0.9 * (len(xs) - 1))] * 1000, 2),
        "max_ms": round(xs[-1] * 1000, 2),
    }


async def publish(link: FleetLink, singles: int, burst: int) -> dict[str, object]:
    task = asyncio.create_task(link.run())
    end = time.monotonic() + 60
    while not link.connected and time.monotonic() < end:
        await asyncio.sleep(0.05)
    decided: dict[str, float] = {}

    def offer(i: int) -> float:
        now = time.time()
        d = Decision(target(i), Action.BLOCK, now + 3600, "engine", "quiet: bench", now)
        t = time.perf_counter()
        link.offer([d], {d.target.network_address: Level.ATTACKER})
        decided[str(d.target)] = now
        return time.perf_counter() - t

    for i in range(singles):
        offer(i)
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)
    cpu0, t0 = time.process_time(), time.time()
    costs = []
    for i in range(singles, singles + burst):
        costs.append(offer(i))
        if i % 100 == 0:
            await asyncio.sleep(0)
    end = time.monotonic() + 300
    while len(link.outbox) and time.monotonic() < end:
        await asyncio.sleep(0.005)
    published_s = time.time() - t0
    cpu = time.process_time() - cpu0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        "decided": decided,
        "burst_start": t0,
        "published_s": published_s,
        "offer_us": statistics.mean(costs) * 1e6,
        "cpu_us": cpu / burst * 1e6,
    }


def lab_latency(n: int) -> dict[str, object]:
    from sipdeflect.lab.fleetlab import fleet_lab  # root only: imported when asked

    with tempfile.TemporaryDirectory(prefix="sdf-fleet-lab-") as tmp, fleet_lab(Path(tmp)) as lab:
        lab.start()
        p1 = lab.labs["pbx1"]
        # (192.0.2.100 on: clear of the lab's database links, whose PBX ends are own addresses)
        addrs = [str(ipaddress.ip_address("192.0.2.100") + i) for i in range(min(n, 100))]
        for a in addrs:
            p1.control.call("block", target=a, duration="1h", reason="bench")
            time.sleep(0.2)
        out: dict[str, object] = {}
        for node in ("pbx2", "pbx3"):
            delays = []
            for a in addrs:
                ok = lab.wait(lambda a=a, node=node: lab.fleet_history(node, a, "fleet:pbx1"), 10)
                if not ok:
                    continue
                mine = next(h for h in p1.show(a)["history"] if h["action"] == "block")["at"]
                delays.append(lab.fleet_history(node, a, "fleet:pbx1")[0]["at"] - mine)
            out[node] = {**stats(delays), "missing": len(addrs) - len(delays)} if delays else None
        return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench fleet", description=__doc__)
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--lab", type=int, default=0, help="operator blocks through the 3-PBX lab")
    args = ap.parse_args(argv)
    lab = lab_latency(args.lab) if args.lab else None
    total = args.singles + args.burst
    with postgres() as pg, tempfile.TemporaryDirectory(prefix="sdf-fleet-bench-") as tmp:
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        for name in ("rx1", "rx2"):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=receiver, args=(name, pg.dsn, tmp, total, theirs))
            p.start()
            pipes.append(mine)
            procs.append(p)
        for pipe in pipes:
            if not pipe.poll(90) or pipe.recv() != "ready":
                raise SystemExit("a receiver did not connect")
        link = FleetLink(pg.dsn, Rules(node="pub"), Outbox(Path(tmp) / "pub.db", total + 1), print)
        out = asyncio.run(publish(link, args.singles, args.burst))
        decided: dict[str, float] = out.pop("decided")  # type: ignore[assignment]
        t0: float = out.pop("burst_start")  # type: ignore[assignment]
        receivers = {}
        for name, pipe, proc in zip(("rx1", "rx2"), pipes, procs, strict=True):
            got: dict[str, float] = pipe.recv() if pipe.poll(320) else {}
            proc.join(30)
            singles = [
                got[str(target(i))] - decided[str(target(i))]
                for i in range(args.singles)
                if str(target(i)) in got
            ]
            burst = [
                got[str(target(i))] for i in range(args.singles, total) if str(target(i)) in got
            ]
            receivers[name] = {
                "received": len(got),
                "expected": total,
                "single_latency": stats(singles) if singles else None,
                "burst_time_to_last_s": round(max(burst) - t0, 3) if burst else None,
            }
    save(
        "fleet",
        {
            "postgres": "Debian 15, same host, fsync=off (throwaway); link rows over its unix "
            "socket, lab rows over TCP on a veth from each PBX namespace",
            "singles": args.singles,
            "burst": args.burst,
            "publisher": {
                "offer_us_per_decision": round(float(out["offer_us"]), 1),  # type: ignore[arg-type]
                "cpu_us_per_decision": round(float(out["cpu_us"]), 1),  # type: ignore[arg-type]
                "burst_published_s": round(float(out["published_s"]), 3),  # type: ignore[arg-type]
            },
            "receivers": receivers,
            "lab_daemon_to_daemon": lab,
            "command": f"./dev bench fleet --singles {args.singles} --burst {args.burst}"
            + (f" --lab {args.lab}" if args.lab else ""),
        },
    )
    return 0
