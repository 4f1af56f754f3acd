"""Benchmarks: `./dev bench` lists them, `./dev bench NAME [ARGS]` runs one."""
