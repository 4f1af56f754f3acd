# Firewall vocabulary as frozen values: three sets (allow, deflect, block) holding
# normalised IPv4/IPv6 networks (a single address is a /32 or /128), elements with an
# optional kernel timeout, and the settings a ruleset is built from. Parsing of user
# input (addresses, durations) lives here so every front end rejects the same things.
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from sipdeflect.decisions import parse_target as _parse_target
from sipdeflect.duration import parse_duration as _parse_duration
from sipdeflect.errors import UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_SIP_PORTS: tuple[int, ...] = (5060,)
DEFAULT_DECOY_PORT = 5070
DEFAULT_TABLE = "sipdeflect"
# Widest prefixes we accept: anything wider is almost certainly a typo (0.0.0.0/0).
MIN_PREFIX = {4: 8, 6: 32}
# ipset caps timeouts at 2147483 s; use the same cap everywhere so plans are portable.
MAX_TIMEOUT = 2_147_483


class SetName(StrEnum):
    ALLOW = "allow"
    DEFLECT = "deflect"
    BLOCK = "block"


class Element(NamedTuple):
    """One member of a set; timeout in whole seconds, None = until released.

    A NamedTuple rather than a dataclass: immutable all the same, and built in C, which
    matters when a plan carries a million of them (bench/bench_firewall.py).
    """

    target: Network
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """A set member as the kernel reports it (what `list` shows)."""

    set: SetName
    target: Network
    timeout: int | None = None  # as added, when the backend remembers it
    expires: int | None = None  # seconds left, None = no expiry
    packets: int | None = None  # None where the backend has no per-element counters
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class FirewallSettings:
    sip_ports: tuple[int, ...] = DEFAULT_SIP_PORTS
    decoy_port: int = DEFAULT_DECOY_PORT
    table: str = DEFAULT_TABLE

    def __post_init__(self) -> None:
        if not self.sip_ports:
            raise UsageError("at least one SIP port is needed")
        for port in (*self.sip_ports, self.decoy_port):
            if not 1 <= port <= 65535:
                raise UsageError(f"port {port} is not in 1-65535")
        if self.decoy_port in self.sip_ports:
            raise UsageError(f"decoy port {self.decoy_port} is also a SIP port")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,23}", self.table):
            raise UsageError(f"table name {self.table!r}: use 1-24 of [a-z0-9_], letter first")


def parse_target(text: str) -> Network:
    """An address or prefix typed by a user (sipdeflect.decisions.parse_target)."""
    return _parse_target(text, widest_v4=MIN_PREFIX[4], widest_v6=MIN_PREFIX[6])


def parse_duration(text: str) -> int:
    """A kernel element timeout: '90', '15m', '1h30m', '2d' -> whole seconds, 1..MAX_TIMEOUT."""
    seconds = _parse_duration(text)
    if not 1 <= seconds <= MAX_TIMEOUT or seconds != int(seconds):
        raise UsageError(f"duration {text!r} must be whole seconds between 1 and {MAX_TIMEOUT}")
    return int(seconds)


def is_single(net: Network) -> bool:
    return net.prefixlen == net.max_prefixlen


def show_target(net: Network) -> str:
    """A single address without its /32 or /128; prefixes as CIDR."""
    return str(net.network_address) if is_single(net) else str(net)
