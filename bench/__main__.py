# Benchmark runner. Each bench/bench_NAME.py has main(argv: list[str]) -> int and writes its
# figures as JSON to bench/results/NAME.json (with machine and date) for the README.
from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main() -> int:
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )
    if len(sys.argv) < 2 or sys.argv[1] in {"-h", "--help", "list"}:
        print("usage: ./dev bench NAME [ARGS]   (NAME --help for its options)")
        print("benchmarks:", ", ".join(names) or "(none yet)")
        return 0
    name = sys.argv[1]
    if name not in names:
        print(f"unknown benchmark {name!r}; have: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.bench_{name}")
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
