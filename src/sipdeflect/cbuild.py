# Builds the optional C accelerators next to their sources, with the C compiler and the
# headers of the Python that runs this: the decoy's (decoy/_cfast.c) and the log scanner's
# (detect/logs/_clog.c); see each file's opening comment. Idempotent: a build newer than
# its source is kept. `./dev setup` runs it; without a compiler or headers the decoy and
# the log parsers run their Python twins (slower, same results) and this says so.
#   python -m sipdeflect.cbuild [--force] [--check]
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "decoy" / "_cfast.c"  # the decoy's (the default of the functions below)
SOURCES = (SOURCE, HERE / "detect" / "logs" / "_clog.c")
FLAGS = ["-O2", "-fPIC", "-shared", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
HARDEN = ["-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-Wl,-z,relro,-z,now"]
WHAT = {"_cfast": "decoy", "_clog": "log scanner"}


def target(source: Path = SOURCE) -> Path:
    return source.with_name(source.stem + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def command(out: Path, extra: tuple[str, ...] = (), source: Path = SOURCE) -> list[str] | str:
    """The compiler argv (with ``extra`` flags, e.g. sanitizers), or why it cannot run."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (Debian: apt-get install gcc)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python.h in {include} (Debian: apt-get install python3-dev)"
    return [cc, *FLAGS, *HARDEN, *extra, f"-I{include}", str(source), "-o", str(out)]


def build(force: bool = False, source: Path = SOURCE) -> tuple[bool, str]:
    """(built or current, message)."""
    out = target(source)
    what = f"{WHAT.get(source.stem, source.stem)} C accelerator"
    if not force and out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return True, f"{out.name} is current"
    argv = command(out, source=source)
    if isinstance(argv, str):
        return False, f"{what} not built: {argv}; Python is used instead"
    tmp = out.with_suffix(".tmp")
    try:
        res = subprocess.run([*argv[:-1], str(tmp)], capture_output=True, text=True, check=False)
    except OSError as exc:  # e.g. CC names a compiler that is not there
        return False, f"{what} not built: {argv[0]}: {exc.strerror}; Python is used instead"
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        return False, f"{what} failed to build:\n{res.stderr.strip()}"
    tmp.replace(out)  # atomic: a running process keeps the file it mapped
    return True, f"built {out}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sipdeflect.cbuild", description=__doc__)
    ap.add_argument("--force", action="store_true", help="rebuild even when current")
    ap.add_argument("--check", action="store_true", help="exit 1 when one cannot be built")
    args = ap.parse_args(argv)
    rc = 0
    for source in SOURCES:
        ok, msg = build(args.force, source)
        print(msg, file=sys.stderr)
        rc |= 0 if ok or not args.check else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
