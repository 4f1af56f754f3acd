# Wire detector throughput on one core, what traffic accounting adds to its per-packet cost
# (issue 8: under 5%), and peak RSS under a flood from a million distinct spoofed sources in
# one minute. No network: datagrams are built in-process (the shapes
# SIPVicious sends, the PBX's 401s) and fed to WireDetector.packet + the default policy,
# as the capture loop does. The flood runs in a fresh interpreter so its peak RSS is the
# detector's, not this process's. Figures go to bench/results/wire.json.
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

from bench.common import peak_rss_mib, save

PBX = bytes([203, 0, 113, 1])
REG = (
    b"REGISTER sip:203.0.113.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK-%d;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "%d" <sip:%d@203.0.113.1>\r\n'
    b'From: "%d" <sip:%d@203.0.113.1>;tag=3130303a31323334\r\n'
    b"User-Agent: friendly-scanner\r\n"
    b"Call-ID: %d\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: sip:100@198.51.100.9\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n\r\n"
)
CHAL = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.9:5062;branch=z9hG4bK-%d;rport=5062\r\n"
    b'To: "%d" <sip:%d@203.0.113.1>;tag=srv\r\n'
    b'From: "%d" <sip:%d@203.0.113.1>;tag=3130303a31323334\r\n'
    b"Call-ID: %d\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="lab", nonce="%x", qop="auth"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def vm_hwm_mib() -> float:
    """Peak RSS of this process image from /proc (VmHWM). Unlike getrusage's ru_maxrss it
    does not inherit the parent's peak across fork+exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def _pair(i: int, account: int) -> tuple[bytes, bytes]:
    a = account
    return REG % (i, a, a, a, a, i), CHAL % (i, a, a, a, a, i, i * 2654435761 % (1 << 32))


def throughput(n: int) -> dict[str, float]:
    from sipdeflect.detect.verdict import Verdicts
    from sipdeflect.detect.wire import WireDetector
    from sipdeflect.sources.data import default_fingerprints

    det, verdicts = WireDetector(default_fingerprints()), Verdicts()
    # 1000 sources, each walking accounts (enumeration) and being challenged.
    pkts = _packets(n)
    t0 = time.perf_counter()
    now = 1_700_000_000.0
    for k, (s, sp, d, dp, data) in enumerate(pkts):
        for ev in det.packet(s, sp, d, dp, data, now=now + k * 1e-4):
            verdicts.feed(ev)
    dt = time.perf_counter() - t0
    return {"packets": len(pkts), "seconds": round(dt, 3), "packets_per_s": round(len(pkts) / dt)}


def _packets(n: int) -> list[tuple[bytes, int, bytes, int, bytes]]:
    pkts = []
    for i in range(n // 2):
        src = (0xC6336400 + i % 1000).to_bytes(4, "big")
        req, chal = _pair(i, 100 + i // 1000)
        pkts.append((src, 5062, PBX, 5060, req))
        pkts.append((PBX, 5060, src, 5062, chal))
    return pkts


def accounting_overhead(n: int, rounds: int) -> dict[str, object]:
    """Per-packet CPU cost of the capture loop's work (sources/capture.py) in three
    variants: "bare" (the detector and policy alone), "shipped without accounting" (plus
    the check that skips diverted sources, 50 of them; detection needs it whatever the
    accounting: the decoy's answers must not count as the PBX's), and "with accounting"
    (plus the tally in the detector and a hand-over once a simulated second, every 10,000
    packets, as the capture does). Accounting's overhead is the last against the second.
    Rounds rotate the order so drift and noise hit all alike; medians are compared."""
    from sipdeflect.accounting import Diverted, Tally
    from sipdeflect.decisions import Action, Decision, parse_target
    from sipdeflect.detect.verdict import Verdicts
    from sipdeflect.detect.wire import WireDetector
    from sipdeflect.sources.data import default_fingerprints

    pkts = _packets(n)
    diverted = Diverted()
    diverted.apply(
        Decision(parse_target(f"192.0.2.{i}"), Action.BLOCK, None, "b", "", 0) for i in range(50)
    )

    def bare() -> float:
        det, verdicts = WireDetector(default_fingerprints()), Verdicts()
        now = 1_700_000_000.0
        t0 = time.process_time()
        for k, (s, sp, d, dp, data) in enumerate(pkts):
            for ev in det.packet(s, sp, d, dp, data, now=now + k * 1e-4):
                verdicts.feed(ev)
        return time.process_time() - t0

    def capture(accounting: bool) -> float:
        det, verdicts = WireDetector(default_fingerprints()), Verdicts()
        tally = det.tally = Tally() if accounting else None
        rows = 0
        t = 1_700_000_000.0
        due = t + 1.0
        t0 = time.process_time()
        for k, (s, sp, d, dp, data) in enumerate(pkts):
            now = t + k * 1e-4
            if tally is not None and now >= due:
                due = now + 1.0
                rows += len(tally.drain(now))
            if (
                s in diverted.addrs
                or d in diverted.addrs
                or (diverted.nets and diverted.covers(s, d))
            ):
                continue
            for ev in det.packet(s, sp, d, dp, data, now=now):
                verdicts.feed(ev)
        if tally is not None:
            rows += len(tally.drain(t))
            assert rows > 0
        return time.process_time() - t0

    runs: dict[str, list[float]] = {"bare": [], "without": [], "with": []}
    variants = [
        ("bare", bare),
        ("without", lambda: capture(False)),
        ("with", lambda: capture(True)),
    ]
    for i in range(rounds):  # rotate the order; collect garbage before each
        for name, fn in variants[i % 3 :] + variants[: i % 3]:
            gc.collect()
            runs[name].append(fn())
    med = {k: statistics.median(v) for k, v in runs.items()}
    us = {k: round(v / len(pkts) * 1e6, 3) for k, v in med.items()}
    return {
        "packets": len(pkts),
        "rounds": rounds,
        "us_per_packet_bare": us["bare"],
        "us_per_packet_without": us["without"],
        "us_per_packet_with": us["with"],
        "overhead_percent": round((med["with"] / med["without"] - 1) * 100, 2),
        "overhead_vs_bare_percent": round((med["with"] / med["bare"] - 1) * 100, 2),
        "clock": "CPU seconds (process_time), median of rotated rounds",
    }


def flood(sources: int) -> dict[str, object]:
    """A million distinct spoofed sources in one (virtual) minute: each sends a REGISTER
    with a scanner User-Agent and gets the PBX's 401."""
    from sipdeflect.detect.verdict import Verdicts
    from sipdeflect.detect.wire import WireDetector
    from sipdeflect.sources.data import default_fingerprints

    base_rss = vm_hwm_mib()
    det, verdicts = WireDetector(default_fingerprints()), Verdicts()
    now, step = 1_700_000_000.0, 60.0 / sources
    t0 = time.perf_counter()
    for i in range(sources):
        src = (0x0A000000 + i).to_bytes(4, "big")  # 10.0.0.0/8: a million distinct
        req, chal = _pair(i, 1000)
        for ev in det.packet(src, 5062, PBX, 5060, req, now=now):
            verdicts.feed(ev)
        det.packet(PBX, 5060, src, 5062, chal, now=now)
        now += step
    dt = time.perf_counter() - t0
    return {
        "sources": sources,
        "packets": 2 * sources,
        "seconds": round(dt, 1),
        "packets_per_s": round(2 * sources / dt),
        "rss_before_mib": round(base_rss, 1),
        "peak_rss_mib": round(vm_hwm_mib(), 1),
        "tables": {
            "sources": len(det.sources),
            "challenges": len(det.challenges),
            "verdicts": len(verdicts),
        },
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench wire")
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--sources", type=int, default=1_000_000)
    ap.add_argument("--cpu", type=int, default=0, help="core to pin to")
    ap.add_argument("--rounds", type=int, default=9, help="rotated rounds, accounting")
    ap.add_argument("--flood-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    if args.flood_child:
        print(json.dumps(flood(args.sources)))
        return 0
    figures: dict[str, object] = {
        "pinned_cpu": args.cpu,
        "throughput": throughput(args.packets),
        "accounting": accounting_overhead(args.packets // 2, args.rounds),
    }
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "wire",
            "--flood-child",
            "--sources",
            str(args.sources),
            "--cpu",
            str(args.cpu),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    figures["flood"] = json.loads(child.stdout.strip().splitlines()[-1])
    save("wire", figures)
    return 0
