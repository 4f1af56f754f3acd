# Decoy capacity benchmark. In a private network namespace (its own loopback and its own
# UdpRcvbufErrors counter), each target is pinned to one core and flooded over loopback by
# bench/loadgen.py pinned to the other core, from --sources addresses in 127.0.0.0/8, at
# paced rates that step up geometrically and then bisect. Capacity = the highest paced rate
# at which the target's kernel receive queue dropped under 1% of what was sent (the
# namespace's UdpRcvbufErrors counts those drops exactly; the generator drains its own
# sockets so only the target's drops count). Targets, measured in the same run:
#   decoy     python -m sipdeflect decoy --reply-budget 0 (every flood packet answered;
#             the default budget would drop most replies and flatter the figure)
#   kamailio  Debian's Kamailio, children=1, sl_send_reply("200","OK") (bench/data/)
#   ruby      the write-up's responder, verbatim, with Debian's ruby (bench/data/)
# plus the decoy's peak RSS. Results: bench/results/decoy.json.
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save
from sipdeflect.lab.netns import Netns

HERE = Path(__file__).parent
ROOT = HERE.parent
LOSS_LIMIT = 0.01
PORTS = {"decoy": 5060, "kamailio": 5062, "ruby": 5061}  # the Ruby script hard-codes 5061


def target_argv(name: str, port: int, quiet: bool, tmp: str) -> list[str]:
    if name == "decoy":
        argv = [sys.executable, "-m", "sipdeflect", "decoy", "--listen", f"127.0.0.1:{port}"]
        argv += ["--reply-budget", "0", "--no-tcp"]
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


def step(ns: Netns, port: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
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
        ],
        timeout=args.seconds * 3 + 30,
    )
    time.sleep(0.2)
    drops = ns.snmp_counter("Udp", "RcvbufErrors") - before
    out = json.loads(res.stdout)
    out.update(rate=int(rate), drops=drops, loss=round(drops / max(1, out["sent"]), 5))
    out["generator_limited"] = out["achieved_rate"] < 0.97 * rate
    return out


def capacity(ns: Netns, port: int, args: argparse.Namespace, alive: Any) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    good, bad = 0.0, 0.0
    rate = float(args.start)
    while rate <= args.max_rate and alive():
        s = step(ns, port, rate, args)
        steps.append(s)
        print(
            f"    {s['rate']:>7}/s sent {s['sent']:>7} loss {s['loss']:.2%}"
            f"{'  (generator-limited)' if s['generator_limited'] else ''}",
            flush=True,
        )
        if s["loss"] >= LOSS_LIMIT or s["generator_limited"]:
            bad = rate
            break
        good = rate
        rate *= args.factor
    for _ in range(args.bisect if bad and good else 0):
        rate = (good + bad) / 2
        if not alive():
            break
        s = step(ns, port, rate, args)
        steps.append(s)
        print(f"    {s['rate']:>7}/s sent {s['sent']:>7} loss {s['loss']:.2%}", flush=True)
        if s["loss"] < LOSS_LIMIT and not s["generator_limited"]:
            good = rate
        else:
            bad = rate
    limited = bool(steps) and steps[-1]["generator_limited"] and not bad
    return {"capacity": int(good), "generator_limited": limited, "steps": steps}


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    port = PORTS[name]
    with Netns(f"bench{name[:3]}") as ns, tempfile.TemporaryDirectory() as tmp:
        argv = ["taskset", "-c", str(args.target_core), *target_argv(name, port, args.quiet, tmp)]
        log = open(Path(tmp) / "target.log", "w")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = ns.popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            if not wait_answering(ns, port):
                log.flush()
                tail = (Path(tmp) / "target.log").read_text()[-500:]
                return {"error": f"{name} did not answer: {tail}"}
            print(f"  {name}: pinned to core {args.target_core}, port {port}", flush=True)
            result = capacity(ns, port, args, lambda: proc.poll() is None)
            if name == "decoy":
                result["peak_rss_mib"] = peak_rss_mib(proc.pid)
            if proc.poll() is not None:
                result["error"] = f"{name} exited with {proc.returncode} during the run"
            return result
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name == "decoy" else signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            log.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench decoy", description=__doc__)
    ap.add_argument("--targets", default="decoy,kamailio,ruby")
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=2.0, help="flood length per step")
    ap.add_argument("--start", type=float, default=5000)
    ap.add_argument("--factor", type=float, default=1.4)
    ap.add_argument("--bisect", type=int, default=3)
    ap.add_argument("--max-rate", type=float, default=400_000)
    ap.add_argument("--target-core", type=int, default=0)
    ap.add_argument("--gen-core", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="run the decoy with --quiet")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench decoy needs root (a private network namespace)", file=sys.stderr)
        return 2
    targets = [t for t in args.targets.split(",") if t]
    missing = [t for t in targets if t in ("kamailio", "ruby") and not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} (Debian packages)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    for name in targets:
        results[name] = run_target(name, args)
    figures: dict[str, Any] = {
        "command": "./dev bench decoy " + " ".join(argv),
        "method": "paced REGISTER flood over loopback in a private netns; capacity = highest "
        "rate with < 1% UdpRcvbufErrors; target and generator pinned to different cores",
        "sources": args.sources,
        "seconds_per_step": args.seconds,
        "capacity_per_s": {k: v.get("capacity") for k, v in results.items()},
    }
    cap = figures["capacity_per_s"]
    if cap.get("decoy"):
        for other in ("kamailio", "ruby"):
            if cap.get(other):
                figures[f"decoy_vs_{other}"] = round(cap["decoy"] / cap[other], 2)
        figures["decoy_peak_rss_mib"] = results["decoy"].get("peak_rss_mib")
    figures["targets"] = results
    save("decoy", figures)
    return 0 if all("error" not in r for r in results.values()) else 1
