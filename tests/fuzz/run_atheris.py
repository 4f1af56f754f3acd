"""Coverage-guided fuzzing of the SIP core with atheris (not part of the suite).

    uv run python tests/fuzz/run_atheris.py -runs=1000000 -seed=1 tests/fuzz/corpus

Seeds come from tests/vectors/sip; the invariant is tests/fuzz/target.py. A crash means an
exception other than SipParseError escaped (or a built response failed to parse).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from tests.fuzz.target import exercise


def main() -> None:
    corpus = Path(__file__).parent / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        for p in (Path(__file__).parent.parent / "vectors" / "sip").rglob("*.sip"):
            shutil.copy(p, corpus / p.name)
    atheris.Setup(sys.argv, exercise)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
