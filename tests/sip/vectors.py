"""The SIP vectors under tests/vectors/sip: real captures and handmade edge cases."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent.parent / "vectors" / "sip"
CAPTURED = sorted((ROOT / "captured").glob("*.sip"))
HANDMADE = sorted((ROOT / "handmade").glob("*.sip"))
ALL = CAPTURED + HANDMADE
EXPECTED: dict[str, dict[str, object]] = json.loads(
    (ROOT / "handmade" / "expected.json").read_text()
)


def ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.stem}" for p in paths]
