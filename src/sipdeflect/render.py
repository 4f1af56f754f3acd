# Safe text for attacker-controlled bytes (house rule 9), one place for every printer:
# control, bidi and line-separator characters are escaped (escape_line for one-line output,
# escape for multi-line text that keeps its newlines and tabs), and Authorization /
# Proxy-Authorization credentials are redacted, keeping only the scheme when there is one.
# Summaries for a terminal *and* a log: plain text columns that never cut a cell (an
# address is printed whole) and labelled paragraphs wrapped to the width, no box drawing.
from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

_BIDI = "\u2028\u2029\u202a-\u202e\u2066-\u2069"
_LINE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI}]")
_TEXT = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_BIDI}]")  # keeps \t and \n
# The scheme (Digest, Basic) is kept only when it is a token followed by whitespace, so a
# header without one ("Authorization: username=...") loses everything after the colon.
_AUTH = re.compile(
    r"(?im)^((?:proxy-)?authorization[ \t]*:)(?:[ \t]*([A-Za-z][A-Za-z0-9-]{0,20})(?=[ \t]))?"
    r"[^\r\n]*"
)
_AUTH_B = re.compile(_AUTH.pattern.encode())


def _code(m: re.Match[str]) -> str:
    c = ord(m[0])
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_line(text: str) -> str:
    """One-line form: every control, bidi and separator character as \\xNN / \\uNNNN."""
    return _LINE.sub(_code, text)


def escape(text: str) -> str:
    """Multi-line form: the same, but tabs and newlines are kept."""
    return _TEXT.sub(_code, text)


def redact(text: str) -> str:
    """Authorization values out; the scheme (Digest) kept when present."""
    return _AUTH.sub(lambda m: f"{m[1]} {m[2]} <redacted>" if m[2] else f"{m[1]} <redacted>", text)


def redact_bytes(raw: bytes) -> bytes:
    """redact() for raw message bytes."""
    return _AUTH_B.sub(
        lambda m: m[1] + b" " + m[2] + b" <redacted>" if m[2] else m[1] + b" <redacted>", raw
    )


def wire_text(data: bytes) -> str:
    """A SIP message from the wire, fit for a terminal or a log."""
    return escape(redact(data.decode("utf-8", "replace")))


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """Aligned columns (two spaces apart; ``right`` = indexes right-justified), a dashed
    rule under the header. Cells are never cut: keep long text out, in ``paragraph()``."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def paragraph(label: str, text: str, width: int = 80, indent: int = 2) -> list[str]:
    """``label: text`` wrapped to ``width`` with a hanging indent; words (addresses) whole."""
    head = " " * indent + label + ": "
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=head,
        subsequent_indent=" " * min(len(head), width // 2),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [head.rstrip()]
