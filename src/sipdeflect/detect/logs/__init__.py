# PBX log formats by name, and format detection: sniff the first lines of a file and pick
# the format whose typical lines (and failure markers) occur most. Pure: text in, name out.
from __future__ import annotations

from sipdeflect.detect.logs import asterisk, freeswitch, kamailio
from sipdeflect.detect.logs.base import Context, LogFormat
from sipdeflect.errors import SipDeflectError

FORMATS: dict[str, LogFormat] = {
    f.name: f for f in (asterisk.FORMAT, freeswitch.FORMAT, kamailio.FORMAT)
}


class UnknownFormatError(SipDeflectError):
    """The log format could not be recognised."""


def detect_format(sample: str) -> LogFormat:
    """The format of a log, judged from a sample of its first lines."""
    scores: dict[str, int] = {}
    for name, fmt in FORMATS.items():
        sniffed = len(fmt.sniff.findall(sample))
        marked = sum(sample.count(m) for m in fmt.markers)
        scores[name] = sniffed + 10 * marked
    best = max(scores, key=lambda n: scores[n])
    if scores[best] == 0:
        raise UnknownFormatError(
            f"cannot tell the log format from its first lines; use --format ({', '.join(FORMATS)})"
        )
    return FORMATS[best]


def get_format(name: str) -> LogFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(
            f"unknown log format {name!r}; have {', '.join(FORMATS)}"
        ) from None


__all__ = ["FORMATS", "Context", "LogFormat", "UnknownFormatError", "detect_format", "get_format"]
