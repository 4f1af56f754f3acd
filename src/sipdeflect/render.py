# Safe terminal text for attacker-controlled bytes (house rule 9): control characters are
# escaped, Authorization credentials redacted, rich markup disabled by the caller.
from __future__ import annotations

import re

_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_AUTH = re.compile(r"(?im)^((?:proxy-)?authorization[ \t]*:[ \t]*\S+)[^\r\n]*")


def escape(text: str) -> str:
    """Control characters (except tab and newline) shown as \\xNN."""
    return _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def redact(text: str) -> str:
    """Keep the scheme of Authorization headers, drop the credentials."""
    return _AUTH.sub(r"\1 <redacted>", text)


def wire_text(data: bytes) -> str:
    """A SIP message from the wire, fit for a terminal or a log."""
    return escape(redact(data.decode("utf-8", "replace")))
