"""Parse + build of a typical scanner REGISTER on one core: the decoy's per-packet budget.

    ./dev bench sip [--seconds S]

Times parse() alone, build_response() alone and both together over a real SIPVicious
svcrack REGISTER (tests/vectors/sip/captured), pinned to one core when possible, best of
five runs of at least S/5 seconds each.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import save
from sipdeflect.sip import Request, build_response, parse

VECTOR = Path(__file__).parent.parent / "tests/vectors/sip/captured/register-sv-noauth.sip"


def rate(fn: Callable[[], object], seconds: float) -> float:
    best = 0.0
    for _ in range(5):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds / 5
        while True:
            for _ in range(1000):
                fn()
            n += 1000
            if time.perf_counter() >= deadline:
                break
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="./dev bench sip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    raw = VECTOR.read_bytes()
    req = parse(raw)
    assert isinstance(req, Request)
    src = ("203.0.113.5", 5182)
    figures = {
        "message_bytes": len(raw),
        "parse_per_s": round(rate(lambda: parse(raw), args.seconds)),
        "build_per_s": round(rate(lambda: build_response(req, 200, source=src), args.seconds)),
        "parse_build_per_s": round(
            rate(lambda: build_response(parse(raw), 200, source=src), args.seconds)  # type: ignore[arg-type]
        ),
    }
    figures["parse_build_us"] = round(1e6 / figures["parse_build_per_s"], 2)
    save("sip", figures)
    return 0
