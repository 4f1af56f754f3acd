# The contract between detection and enforcement (after CrowdSec's Decision): what to do
# to which addresses, until when, who decided and why. Engine, store, firewall and CLI all
# speak these values; nothing else carries the truth about a source.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from sipdeflect.errors import UsageError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(StrEnum):
    ALLOW = "allow"  # never deflect or block; wins over everything
    DEFLECT = "deflect"  # SIP packets go to the decoy
    BLOCK = "block"  # every packet is dropped
    RELEASE = "release"  # none of the above any more


class Level(IntEnum):
    """How sure detection is that a source attacks. Only ATTACKER acts by default."""

    NONE = 0
    WATCH = 1
    SUSPECT = 2
    ATTACKER = 3


@dataclass(frozen=True, slots=True)
class Decision:
    target: Network
    action: Action
    until: float | None  # epoch seconds; None: until released
    origin: str  # "engine", "cli", "reconcile", ...
    reason: str
    at: float

    def remaining(self, now: float) -> float | None:
        return None if self.until is None else max(0.0, self.until - now)


def parse_target(text: str, *, widest_v4: int = 8, widest_v6: int = 32) -> Network:
    """An address or prefix typed by a user, normalised. Host bits must be clear (a typo
    otherwise) and prefixes wider than /widest are refused (0.0.0.0/0 is never meant)."""
    raw = text.strip()
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise UsageError(f"{text!r} is not an IP address or prefix") from None
        raise UsageError(f"{text!r} has host bits set; did you mean {loose}?") from None
    widest = widest_v4 if net.version == 4 else widest_v6
    if net.prefixlen < widest:
        raise UsageError(f"{net} is too wide: prefixes wider than /{widest} are refused")
    return net


def single(address: Address) -> Network:
    return ipaddress.ip_network(address)
