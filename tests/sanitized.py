"""Running a C accelerator built with ASan and UBSan: the module is compiled (with the
flags of pyproject.toml's ext-modules table, which the build backend uses) into a
temporary folder and imported there by a driver script, in a child Python whose only C
accelerator it is (SIPDEFLECT_NO_C), with the allocator on the malloc heap where ASan sees
overruns. The first report aborts the child."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
SRC = ROOT / "src" / "sipdeflect"
CFAST = SRC / "decoy" / "_cfast.c"
CLOG = SRC / "detect" / "logs" / "_clog.c"


def extensions() -> list[dict[str, object]]:
    """pyproject.toml's [[tool.setuptools.ext-modules]]: what the build backend compiles."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    exts: list[dict[str, object]] = data["tool"]["setuptools"]["ext-modules"]
    return exts


def compile_argv(source: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """gcc argv building ``source`` as the backend does (its table's flags) plus ``extra``."""
    (ext,) = [e for e in extensions() if ROOT / str(e["sources"][0]) == source]  # type: ignore[index]
    include = sysconfig.get_paths()["include"]
    return [
        os.environ.get("CC") or "gcc",
        "-fPIC",
        "-shared",
        *ext["extra-compile-args"],  # type: ignore[misc]
        *extra,
        *ext["extra-link-args"],  # type: ignore[misc]
        f"-I{include}",
        str(source),
        "-o",
        str(out),
    ]


def run_sanitized(
    tmp_path: Path, source: Path, driver: str, *args: str, cflags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Build ``source`` sanitized (plus ``cflags``) into tmp_path and run ``driver``
    (python -c) with tmp_path and ``args`` as its arguments; skips when gcc has no
    libasan."""
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not libasan.startswith("/"):
        pytest.skip("gcc's libasan is not installed (Debian: gcc)")
    out = tmp_path / (source.stem + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    subprocess.run(compile_argv(source, out, (*FLAGS, *cflags)), check=True)
    env = {
        **os.environ,
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
        "PYTHONMALLOC": "malloc",
        "SIPDEFLECT_NO_C": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", driver, str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
