# Which optional C accelerators this process loaded, for `--version` and `status`. The
# build backend compiles them when a compiler and Python's headers are there (see
# pyproject.toml); otherwise, or with SIPDEFLECT_NO_C=1, their Python twins run, with
# the same results and less speed.
from __future__ import annotations

import os


def loaded() -> dict[str, str]:
    """Part -> "C" or why it runs in Python ("python: not built" / "python: SIPDEFLECT_NO_C")."""
    from sipdeflect.decoy import fastpath  # noqa: PLC0415 - only for those who ask
    from sipdeflect.detect.logs import base  # noqa: PLC0415

    off = "python: SIPDEFLECT_NO_C" if os.environ.get("SIPDEFLECT_NO_C") else "python: not built"
    return {
        "decoy": "C" if fastpath.C_MODULE is not None else off,
        "log scanner": "C" if base.JSON_LINES is not None else off,
    }


def summary() -> str:
    """One line: ``accelerators: decoy C, log scanner python: not built``."""
    return "accelerators: " + ", ".join(f"{k} {v}" for k, v in loaded().items())
