# Builds the decoy's optional C accelerator (_cfast.c, see its opening comment) next to its
# source, with the C compiler and the headers of the Python that runs this. Idempotent: a
# build newer than the source is kept. `./dev setup` runs it; without a compiler or
# headers the decoy runs its Python twins (slower, same answers) and this says so.
#   python -m sipdeflect.decoy.cbuild [--force] [--check]
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "_cfast.c"
FLAGS = ["-O2", "-fPIC", "-shared", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
HARDEN = ["-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-Wl,-z,relro,-z,now"]


def target() -> Path:
    return HERE / ("_cfast" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def command(out: Path, extra: tuple[str, ...] = ()) -> list[str] | str:
    """The compiler argv (with ``extra`` flags, e.g. sanitizers), or why it cannot run."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (Debian: apt-get install gcc)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python.h in {include} (Debian: apt-get install python3-dev)"
    return [cc, *FLAGS, *HARDEN, *extra, f"-I{include}", str(SOURCE), "-o", str(out)]


def build(force: bool = False) -> tuple[bool, str]:
    """(built or current, message)."""
    out = target()
    if not force and out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return True, f"{out.name} is current"
    argv = command(out)
    if isinstance(argv, str):
        return False, f"decoy C accelerator not built: {argv}; the decoy runs in Python"
    tmp = out.with_suffix(".tmp")
    try:
        res = subprocess.run([*argv[:-1], str(tmp)], capture_output=True, text=True, check=False)
    except OSError as exc:  # e.g. CC names a compiler that is not there
        return False, f"decoy C accelerator not built: {argv[0]}: {exc.strerror}; Python is used"
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        return False, f"decoy C accelerator failed to build:\n{res.stderr.strip()}"
    tmp.replace(out)  # atomic: a running decoy keeps the file it mapped
    return True, f"built {out}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sipdeflect.decoy.cbuild", description=__doc__)
    ap.add_argument("--force", action="store_true", help="rebuild even when current")
    ap.add_argument("--check", action="store_true", help="exit 1 when it cannot be built")
    args = ap.parse_args(argv)
    ok, msg = build(args.force)
    print(msg, file=sys.stderr)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
