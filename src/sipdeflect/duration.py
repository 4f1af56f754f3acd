# Durations as people write them: 90, "90s", "15m", "1h30m", "7d", "2w". One parser for the
# config file and every CLI --for option.
from __future__ import annotations

import re

from sipdeflect.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: str | float) -> float:
    """Seconds from a number or a string such as "1h30m"; raises UsageError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"negative duration: {value}")
        return float(value)
    s = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise UsageError(f"not a duration: {value!r} (examples: 90s, 15m, 1h30m, 7d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Compact human form: 3725 -> "1h2m5s"."""
    rest = round(seconds)
    if rest <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out
