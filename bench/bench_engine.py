# Engine tick cost against the number of known sources (issue 19: "scales with what is
# due, not with what is known"). For 1k, 100k and 1M sources (blocked, their blocks far
# from expiry), time Engine.tick when nothing is due and when 100 deflected sources go
# quiet in the same second; the reference is the engine before the deadline heap, loaded
# from git (ef14e9c, the last commit with the per-second scan) and driven the same way.
# Also: building the state (signal + fire per source) and the process's peak RSS.
from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import peak_rss_mib, save
from sipdeflect.decisions import Level
from sipdeflect.engine import Engine, Policy

REF_COMMIT = "ef14e9c"
T0 = 1_750_000_000.0
DUE = 100


def reference() -> ModuleType:
    """sipdeflect.engine as of REF_COMMIT, importable beside today's."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(
        ["git", "-C", str(root), "show", f"{REF_COMMIT}:src/sipdeflect/engine.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "engine_ref.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("engine_ref", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["engine_ref"] = mod
    spec.loader.exec_module(mod)
    return mod


def populate(engine: Any, n: int) -> float:
    """n sources blocked (an hour to go), plus DUE deflected ones that will go quiet at
    the same moment; returns the seconds it took."""
    t = time.perf_counter()
    p = engine.policy
    for i in range(n):
        a = ipaddress.ip_address(0x0A000000 + i)  # never a packet: state only
        engine.signal(a, Level.ATTACKER, "attacker", T0)
    engine.tick(T0 + p.quiet_after)  # all quiet in the decoy: blocked
    for i in range(DUE):
        a = ipaddress.ip_address(0x0B000000 + i)
        engine.signal(a, Level.ATTACKER, "attacker", T0 + 100)
    return time.perf_counter() - t


def time_ticks(engine: Any, start: float, count: int) -> list[float]:
    out = []
    for k in range(count):
        t = time.perf_counter()
        engine.tick(start + k)
        out.append(time.perf_counter() - t)
    return out


def one(mod: Any, n: int, label: str) -> dict[str, object]:
    eng = mod.Engine(mod.Policy(max_sources=2 * n + 2 * DUE))  # room for all: no eviction
    built = populate(eng, n)
    q = eng.policy.quiet_after
    idle = time_ticks(eng, T0 + 100 + 1, 5)  # nothing due: the deflected are still fresh
    t = time.perf_counter()
    fired = eng.tick(T0 + 100 + q)  # the DUE deflected ones go quiet together
    busy = time.perf_counter() - t
    assert len(fired) == DUE, (label, len(fired))
    return {
        "engine": label,
        "sources": n + DUE,
        "build_s": round(built, 2),
        "tick_idle_us": round(min(idle) * 1e6, 1),
        "tick_100_due_us": round(busy * 1e6, 1),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="./dev bench engine")
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--no-ref", action="store_true", help="skip the pre-heap engine")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    ref = None if args.no_ref else reference()
    rows: list[dict[str, object]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        cur = {"Engine": Engine, "Policy": Policy}
        rows.append(one(type("M", (), cur), n, "heap"))
        print(json.dumps(rows[-1]))
        if ref is not None:
            rows.append(one(ref, n, f"scan ({REF_COMMIT})"))
            print(json.dumps(rows[-1]))
    if not args.no_save:
        save("engine", {"ticks": rows, "peak_rss_mib": round(peak_rss_mib(), 1)})
    return 0
