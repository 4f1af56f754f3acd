"""Output: attacker bytes never reach the terminal raw, credentials never at all, and a flood
is summarised instead of printed line by line."""

from __future__ import annotations

import json

from sipdeflect.decoy.events import (
    DecoyEvent,
    Hub,
    JsonLines,
    LinePrinter,
    escape,
    redact,
    show,
)
from sipdeflect.decoy.guard import Guard
from sipdeflect.decoy.server import Decoy
from sipdeflect.sip import Request, parse
from tests.decoy.helpers import CAPTURED, Clock, sip

EVIL = (
    sip("REGISTER", user="100")
    .replace(b"friendly-scanner", "evil\x1b]0;pwned\x07\x1b[2J\u202e".encode())
    .replace(b'"100"', b'"\x1b[31mred"')
    .replace(b"sip:100@", b"sip:\x1b[1m@")
)


def event(data: bytes, src: tuple[str, int] = ("198.51.100.7", 5060)) -> DecoyEvent:
    msg = parse(data)
    assert isinstance(msg, Request)
    return DecoyEvent(1.5, src, "udp", data, msg, "challenge-401", 401, "why", 300)


def test_escape_leaves_no_control_or_bidi_characters() -> None:
    out = escape("a\x1b[31mb\x00c\x7f\u202ed\x85")
    assert out == "a\\x1b[31mb\\x00c\\x7f\\u202ed\\x85"


def test_redact_removes_every_authorization_value() -> None:
    raw = CAPTURED["register-sv-auth"]
    assert b'response="' in raw
    red = redact(raw.replace(b"Authorization:", b"Proxy-Authorization:") + raw)
    assert b"response=" not in red
    assert red.count(b"<redacted>") == 2
    assert b"username=" not in redact(raw.replace(b"Authorization", b"authorization"))


def test_show_is_escaped_and_redacted() -> None:
    text = show(CAPTURED["register-sv-auth"] + EVIL)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\r" not in text
    assert "<redacted>" in text
    assert 'response="' not in text


def test_line_and_json_escape_attacker_fields() -> None:
    ev = event(EVIL)
    line = ev.line()
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "\u202e" not in line
    assert "\\x1b]0;pwned" in line  # shown, escaped
    assert "198.51.100.7:5060 udp REGISTER" in line
    assert "-> 401 challenge-401" in line
    written: list[str] = []

    class Out:
        def write(self, s: str) -> None:
            written.append(s)

        def flush(self) -> None:
            pass

    JsonLines(Out())(ev)  # type: ignore[arg-type]
    record = json.loads(written[0])
    assert record["status"] == 401
    assert record["method"] == "REGISTER"
    assert "\x1b" not in record["from_user"] + record["user_agent"]


def test_line_printer_summarises_a_flood() -> None:
    clock = Clock()
    lines: list[str] = []
    printer = LinePrinter(lines.append, per_second=5, clock=clock)
    ev = event(sip("REGISTER"))
    other = event(sip("REGISTER"), ("203.0.113.9", 5060))
    for _ in range(1000):
        printer(ev)
    printer(other)
    clock.now += 1.0
    printer(ev)  # a new second: the held count is reported, then this one is printed
    assert len(lines) == 5 + 2 + 1
    assert "... 995 more messages from 198.51.100.7" in lines[5]
    assert "... 1 more messages from 203.0.113.9" in lines[6]


def test_a_flood_to_a_terminal_makes_records_only_for_the_lines_it_prints() -> None:
    """With only a LinePrinter listening, the decoy builds per_second records a second and
    counts the rest per source; the printer's summary still accounts for every message."""
    clock = Clock()
    lines: list[str] = []
    printer = LinePrinter(lines.append, per_second=5, clock=clock)
    hub = Hub([printer])
    decoy = Decoy(guard=Guard(budget=0), hub=hub, clock=clock)
    assert decoy.sample == 5
    a, b = ("198.51.100.7", 5060), ("203.0.113.9", 5060)
    for i in range(1000):
        assert decoy.handle(sip("REGISTER", tag=f"t{i}"), a) is not None
    decoy.handle(sip("REGISTER"), b)
    assert len(hub._q) == 5  # five records, nothing else yet
    decoy.hand_held()
    hub.drain()
    assert decoy.totals().messages == 1001
    clock.now += 1.0
    decoy.handle(sip("REGISTER"), b)  # a new second: a record again
    decoy.hand_held()
    hub.drain()
    assert len(lines) == 5 + 2 + 1
    assert "... 995 more messages from 198.51.100.7" in lines[5]
    assert "... 1 more messages from 203.0.113.9" in lines[6]
    assert "203.0.113.9:5060 udp REGISTER" in lines[7]


def test_any_sink_that_wants_every_message_gets_every_record() -> None:
    seen: list[DecoyEvent] = []
    printer = LinePrinter(lambda _: None, per_second=5)
    decoy = Decoy(guard=Guard(budget=0), hub=Hub([printer, seen.append]), clock=Clock())
    assert decoy.sample == 0
    for i in range(50):
        decoy.handle(sip("REGISTER", tag=f"t{i}"), ("198.51.100.7", 5060))
    decoy.hub.drain()
    assert len(seen) == 50
