"""Shared bits for the decoy tests: vectors, a fixed clock, requests built from text."""

from __future__ import annotations

from pathlib import Path

from sipdeflect.decoy.events import DecoyEvent, Hub
from sipdeflect.decoy.guard import Guard
from sipdeflect.decoy.server import Decoy
from sipdeflect.sip import Request, parse

VECTORS = Path(__file__).parent.parent / "vectors" / "sip"
CAPTURED = {p.stem: p.read_bytes() for p in sorted((VECTORS / "captured").glob("*.sip"))}
SOURCE = ("198.51.100.7", 5060)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(name: str) -> Request:
    msg = parse(CAPTURED[name])
    assert isinstance(msg, Request)
    return msg


def sip(
    method: str, *, user: str = "100", extra: str = "", tag: str = "abc1", pad: int = 0
) -> bytes:
    """A plausible request, padded with a harmless header so size rules do not interfere."""
    padding = f"X-Pad: {'p' * pad}\r\n" if pad else ""
    return (
        f"{method} sip:{user}@192.0.2.10 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport\r\n"
        f'From: "{user}" <sip:{user}@192.0.2.10>;tag={tag}\r\n'
        f'To: "{user}" <sip:{user}@192.0.2.10>\r\n'
        "Call-ID: c1@198.51.100.7\r\n"
        f"CSeq: 1 {method}\r\n"
        "User-Agent: friendly-scanner\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}{padding}Content-Length: 0\r\n\r\n"
    ).encode()


def make_decoy(
    *, budget: float = 0.0, cap: int = 1024, local: tuple[str, ...] = (), clock: Clock | None = None
) -> tuple[Decoy, list[DecoyEvent]]:
    seen: list[DecoyEvent] = []
    hub = Hub([seen.append])
    decoy = Decoy(guard=Guard(budget=budget, cap=cap, local=local), hub=hub, clock=clock or Clock())
    return decoy, seen
