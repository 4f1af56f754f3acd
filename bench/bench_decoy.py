# Decoy capacity benchmark. In a private network namespace (its own loopback and its own
# UdpRcvbufErrors counter), each target is pinned to one core and flooded over loopback by
# bench/loadgen.py pinned to the other core, from --sources addresses in 127.0.0.0/8, at
# paced rates that step up geometrically and then bisect. Capacity = the highest paced rate
# at which the target's kernel receive queue dropped under 1% of what was sent (the
# namespace's UdpRcvbufErrors counts those drops exactly; the generator drains its own
# sockets so only the target's drops count). Targets, measured in the same run:
#   decoy     python -m sipdeflect decoy --reply-budget 0 (every flood packet answered;
#             the default budget would drop most replies and flatter the figure)
#   decoy-unique  the same decoy flooded with datagrams that all differ (loadgen --unique):
#             no repeat can be answered from its per-datagram memo
#   decoy-kbuf  the same with --rcvbuf 0: the kernel's default receive buffer, as the
#             other targets run with
#   decoy-plain (only with --targets) --batch 0: one recvmsg/sendto per datagram, to weigh
#             recvmmsg/sendmmsg through ctypes against the plain loop
#   decoy-unique-py (only with --targets) decoy-unique without its C accelerator
#             (SIPDEFLECT_NO_C=1): what the pure-Python scan/build manage
#   kamailio  Debian's Kamailio, children=1, sl_send_reply("200","OK") (bench/data/)
#   ruby      the write-up's responder, verbatim, with Debian's ruby (bench/data/)
# plus the decoy's peak RSS. Results: bench/results/decoy.json.
# With --cpu-at RATE there is no capacity search: each target gets one paced flood at RATE
# (--seconds, default here 3) and the CPU its processes used is read from /proc (user and
# system ticks of the target and its children, per datagram that reached its socket: sent
# minus the kernel's drops), with the loss seen;
# results: bench/results/decoy-cpu.json.
# With --in-process there are no sockets: Decoy.handle_batch() over 200k datagrams that all
# differ (1000 loopback sources, batches of 64, IP_PKTINFO saying "lo"), CPU time per
# datagram, best of 5, with the terminal's sink (20 lines a second) and with none; plus
# fastpath.scan(), strategy.prepare() and fastpath.build() alone, and with the C
# accelerator's View, view() and View.reply() alone. Only Decoy(), Guard(), Hub() and
# LinePrinter are used, so the same file measures older commits too. Results:
# bench/results/decoy-inprocess.json.
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from bench.common import save
from bench.loadgen import register, source_address
from sipdeflect.decoy import fastpath
from sipdeflect.decoy.events import Hub, LinePrinter
from sipdeflect.decoy.guard import IP_PKTINFO, Guard
from sipdeflect.decoy.server import Decoy
from sipdeflect.decoy.strategy import prepare
from sipdeflect.lab.netns import Netns

HERE = Path(__file__).parent
ROOT = HERE.parent
LOSS_LIMIT = 0.01
# The Ruby script hard-codes 5061. "decoy-kbuf" is the decoy with the kernel's default
# receive buffer, like the other two targets: it separates the decoy's speed from the
# burst absorption its 4 MiB buffer buys.
PORTS = {
    "decoy": 5060,
    "kamailio": 5062,
    "ruby": 5061,
    "decoy-kbuf": 5063,
    "decoy-unique": 5064,
    "decoy-plain": 5065,
    "decoy-unique-py": 5066,
}
UNIQUE = {"decoy-unique", "decoy-unique-py"}  # flooded with loadgen --unique
DECOYS = [name for name in PORTS if name.startswith("decoy")]


def target_argv(name: str, port: int, quiet: bool, tmp: str) -> list[str]:
    if name.startswith("decoy"):
        argv = [sys.executable, "-m", "sipdeflect", "decoy", "--listen", f"127.0.0.1:{port}"]
        argv += ["--reply-budget", "0", "--no-tcp"]
        if name == "decoy-kbuf":
            argv += ["--rcvbuf", "0"]
        if name == "decoy-plain":
            argv += ["--batch", "0"]
        return argv + (["--quiet"] if quiet else [])
    if name == "kamailio":
        cfg = HERE / "data" / "kamailio-stateless.cfg"
        return [
            "kamailio",
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-m",
            "64",
            "-M",
            "8",
            "-l",
            f"udp:127.0.0.1:{port}",
            "-Y",
            tmp,
            "-P",
            f"{tmp}/kamailio.pid",
        ]
    if name == "ruby":
        return ["ruby", str(HERE / "data" / "seed_responder.rb")]
    raise ValueError(name)


def wait_answering(ns: Netns, port: int, deadline: float = 15.0) -> bool:
    from bench.loadgen import register

    sock = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.settimeout(0.2)
    msg = register("127.0.0.2", sock.getsockname()[1], "127.0.0.1", 0)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < deadline:
            sock.sendto(msg, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                if sock.recv(65535).startswith(b"SIP/2.0 "):
                    return True
    finally:
        sock.close()
    return False


def step(
    ns: Netns, port: int, rate: float, args: argparse.Namespace, unique: bool = False
) -> dict[str, Any]:
    before = ns.snmp_counter("Udp", "RcvbufErrors")
    res = ns.run(
        [
            "taskset",
            "-c",
            str(args.gen_core),
            sys.executable,
            str(HERE / "loadgen.py"),
            "--dst",
            f"127.0.0.1:{port}",
            "--sources",
            str(args.sources),
            "--rate",
            str(int(rate)),
            "--seconds",
            str(args.seconds),
            *(["--unique"] if unique else []),
        ],
        timeout=args.seconds * 3 + 30,
    )
    time.sleep(0.2)
    drops = ns.snmp_counter("Udp", "RcvbufErrors") - before
    out = json.loads(res.stdout)
    out.update(rate=int(rate), drops=drops, loss=round(drops / max(1, out["sent"]), 5))
    out["generator_limited"] = out["achieved_rate"] < 0.97 * rate
    return out


class Search:
    """One target's capacity search: geometric steps up until loss >= 1% (or the generator
    cannot keep the pace), then bisection between the last good and first bad rate."""

    def __init__(self, name: str, port: int, args: argparse.Namespace) -> None:
        self.name, self.port, self.args = name, port, args
        self.rate = float(args.start)
        self.good = 0.0
        self.bad = 0.0
        self.bisections = 0
        self.steps: list[dict[str, Any]] = []
        self.generator_limited = False

    @property
    def done(self) -> bool:
        if self.bad:
            return self.bisections >= self.args.bisect or not self.good
        return self.rate > self.args.max_rate or self.generator_limited

    def next_rate(self) -> float:
        return (self.good + self.bad) / 2 if self.bad else self.rate

    def record(self, s: dict[str, Any]) -> None:
        self.steps.append(s)
        ok = s["loss"] < LOSS_LIMIT and not s["generator_limited"]
        rate = float(s["rate"])
        if self.bad:
            self.bisections += 1
            if ok:
                self.good = max(self.good, rate)
            else:
                self.bad = rate
        elif ok:
            self.good = rate
            self.rate *= self.args.factor
        elif s["generator_limited"] and s["loss"] < LOSS_LIMIT:
            self.generator_limited = True  # the target kept up; the generator did not
        else:
            self.bad = rate

    def result(self) -> dict[str, Any]:
        return {
            "capacity": int(self.good),
            "generator_limited": self.generator_limited,
            "steps": self.steps,
        }


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def tree_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks used so far by ``pid`` and its descendants (Kamailio's
    UDP worker is a child process)."""
    parent: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
            stats[int(entry.name)] = fields
    mine = {pid}
    grew = True
    while grew:
        more = {p for p, pp in parent.items() if pp in mine} - mine
        grew = bool(more)
        mine |= more
    user = sum(int(stats[p][11]) for p in mine if p in stats)
    system = sum(int(stats[p][12]) for p in mine if p in stats)
    return user, system


def cpu_at(
    ns: Netns, name: str, proc: subprocess.Popen[Any], args: argparse.Namespace
) -> dict[str, Any]:
    u0, s0 = tree_ticks(proc.pid)
    s = step(ns, PORTS[name], args.cpu_at, args, name in UNIQUE)
    u1, s1 = tree_ticks(proc.pid)
    hz = os.sysconf("SC_CLK_TCK")
    handled = s["sent"] - s["drops"]  # what reached the target's socket
    per = 1e6 / hz / max(1, handled)
    return {
        "rate": s["rate"],
        "sent": s["sent"],
        "handled": handled,
        "loss": s["loss"],
        "user_us_per_datagram": round((u1 - u0) * per, 2),
        "system_us_per_datagram": round((s1 - s0) * per, 2),
    }


def run_all(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Start every target in one namespace, each pinned to the same core, then search their
    capacities interleaved (one step per target in turn) so that a noisy neighbour on the
    machine hits them all alike. Only one target is flooded at a time."""
    results: dict[str, Any] = {}
    procs: dict[str, subprocess.Popen[Any]] = {}
    with Netns("bench") as ns, tempfile.TemporaryDirectory() as tmp:
        try:
            for name in names:
                port = PORTS[name]
                argv = [
                    "taskset",
                    "-c",
                    str(args.target_core),
                    *target_argv(name, port, args.quiet, tmp),
                ]
                log = open(Path(tmp) / f"{name}.log", "w")  # noqa: SIM115
                env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
                if name.endswith("-py"):
                    env["SIPDEFLECT_NO_C"] = "1"
                procs[name] = ns.popen(  # per-message output to /dev/null, errors kept
                    argv, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=ROOT
                )
                if not wait_answering(ns, port):
                    tail = (Path(tmp) / f"{name}.log").read_text()[-500:]
                    results[name] = {"error": f"{name} did not answer: {tail}"}
                    continue
                print(f"  {name}: pinned to core {args.target_core}, port {port}", flush=True)
            if args.cpu_at:
                for name in names:
                    if name not in results:
                        results[name] = cpu_at(ns, name, procs[name], args)
                        print(f"    {name:9s} {results[name]}", flush=True)
                return results
            for _ in range(args.rounds):
                searches = [Search(n, PORTS[n], args) for n in names if n not in results]
                while any(not x.done for x in searches):
                    for x in searches:
                        if x.done or procs[x.name].poll() is not None:
                            continue
                        s = step(ns, x.port, x.next_rate(), args, x.name in UNIQUE)
                        x.record(s)
                        print(
                            f"    {x.name:9s} {s['rate']:>7}/s sent {s['sent']:>7} "
                            f"loss {s['loss']:.2%}"
                            f"{'  (generator-limited)' if s['generator_limited'] else ''}",
                            flush=True,
                        )
                    if all(procs[x.name].poll() is not None for x in searches):
                        break
                for x in searches:
                    best = results.get(f"_{x.name}")
                    if best is None or x.good > best["capacity"]:
                        results[f"_{x.name}"] = x.result()
            for name in names:
                if f"_{name}" in results:
                    results[name] = results.pop(f"_{name}")
                if procs[name].poll() is not None and "error" not in results.get(name, {}):
                    results.setdefault(name, {})["error"] = (
                        f"{name} exited with {procs[name].returncode} during the run"
                    )
            for name in DECOYS:
                if name in procs and name in results:
                    results[name]["peak_rss_mib"] = peak_rss_mib(procs[name].pid)
        finally:
            for name, proc in procs.items():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT if name == "decoy" else signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
    return results


def in_process(n: int = 200_000, batch: int = 64) -> dict[str, Any]:
    """CPU microseconds per datagram of Decoy.handle_batch (see the opening comment)."""

    lo = socket.if_nametoindex("lo")
    anc = ((socket.IPPROTO_IP, IP_PKTINFO, lo.to_bytes(4, "little") + bytes(8)),)
    srcs = [(source_address(i), 40000 + i) for i in range(1000)]
    base = [bytearray(register(h, p, "127.0.0.1", i)) for i, (h, p) in enumerate(srcs)]
    packets = []
    for k in range(n):
        m = base[k % len(base)]
        at = m.index(b"z9hG4bK-") + 8
        m[at : at + 10] = b"%010d" % k
        packets.append((bytes(m), srcs[k % len(srcs)], anc))
    batches = [packets[i : i + batch] for i in range(0, n, batch)]
    out: dict[str, Any] = {"datagrams": n, "batch": batch}
    for name, sinks in (("terminal", True), ("no_sink", False)):
        hub = Hub([LinePrinter(io.StringIO().write)] if sinks else [])
        decoy = Decoy(guard=Guard(budget=0, local=["127.0.0.1"]), hub=hub)
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for b in batches:
                decoy.handle_batch(b)
            best = min(best, time.process_time() - t0)
        out[f"handle_batch_us_{name}"] = round(best / n * 1e6, 2)
        print(f"    handle_batch ({name}): {out[f'handle_batch_us_{name}']} us", flush=True)
    data, src, _ = packets[0]
    scanned = fastpath.scan(data)
    assert scanned is not None
    method, index, vias = scanned
    parts: list[tuple[str, Any]] = [
        ("scan", lambda: fastpath.scan(data)),
        ("prepare", lambda: prepare(method, index)),
        ("build", lambda: fastpath.build(index, vias, 200, src)),
    ]
    view = getattr(fastpath.C_MODULE, "view", None)  # the C View (not in older commits)
    if view is not None:
        v = view(data)
        parts += [("view", lambda: view(data)), ("reply", lambda: v.reply(200, *src, b""))]
    for name, fn in parts:
        took = min(timeit.repeat(fn, number=100_000, repeat=5)) / 100_000
        out[f"{name}_us"] = round(took * 1e6, 3)
        print(f"    {name}: {out[f'{name}_us']} us", flush=True)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench decoy", description=__doc__)
    ap.add_argument("--targets", default="decoy,decoy-unique,decoy-kbuf,kamailio,ruby")
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--seconds", type=float, help="flood length per step (2; 3 with --cpu-at)")
    ap.add_argument("--start", type=float, default=2000)
    ap.add_argument("--factor", type=float, default=1.4)
    ap.add_argument("--bisect", type=int, default=3)
    ap.add_argument("--max-rate", type=float, default=400_000)
    ap.add_argument("--target-core", type=int, default=0)
    ap.add_argument("--gen-core", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="run the decoy with --quiet")
    ap.add_argument("--rounds", type=int, default=1, help="repeat; keep each target's best")
    ap.add_argument(
        "--cpu-at",
        type=float,
        metavar="RATE",
        help="no capacity search: CPU per datagram of each target under one flood at RATE/s",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="no sockets: CPU per datagram of Decoy.handle_batch (needs no root)",
    )
    args = ap.parse_args(argv)
    if args.in_process:
        save(
            "decoy-inprocess",
            {
                "command": "./dev bench decoy " + " ".join(argv),
                "c_accelerator": fastpath.ACCELERATED,
                **in_process(),
            },
        )
        return 0
    if args.seconds is None:
        args.seconds = 3.0 if args.cpu_at else 2.0
    if os.geteuid() != 0:
        print("bench decoy needs root (a private network namespace)", file=sys.stderr)
        return 2
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in PORTS]
    if unknown:
        print(f"unknown targets {unknown}; have {', '.join(PORTS)}", file=sys.stderr)
        return 2
    missing = [t for t in targets if t in ("kamailio", "ruby") and not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages)", file=sys.stderr)
        return 2
    results = run_all(targets, args)
    if args.cpu_at:
        save(
            "decoy-cpu",
            {
                "command": "./dev bench decoy " + " ".join(argv),
                "method": "one paced flood per target; /proc user and system ticks of the "
                "target's processes divided by the datagrams that reached its socket (sent "
                "minus UdpRcvbufErrors; 10 ms ticks: noisy)",
                "c_accelerator": fastpath.ACCELERATED,
                "targets": results,
            },
        )
        return 0 if all("error" not in r for r in results.values()) else 1
    figures: dict[str, Any] = {
        "command": "./dev bench decoy " + " ".join(argv),
        "method": "paced REGISTER flood over loopback in a private netns; capacity = highest "
        "rate with < 1% UdpRcvbufErrors; target and generator pinned to different cores",
        "sources": args.sources,
        "seconds_per_step": args.seconds,
        "rounds": args.rounds,
        "capacity_per_s": {k: v.get("capacity") for k, v in results.items()},
    }
    cap = figures["capacity_per_s"]
    for mine in DECOYS:
        for other in ("kamailio", "ruby"):
            if cap.get(mine) and cap.get(other):
                figures[f"{mine}_vs_{other}"] = round(cap[mine] / cap[other], 2)
    if "decoy" in results:
        figures["decoy_peak_rss_mib"] = results["decoy"].get("peak_rss_mib")
    figures["c_accelerator"] = fastpath.ACCELERATED
    figures["targets"] = results
    save("decoy", figures)
    return 0 if all("error" not in r for r in results.values()) else 1
