# Traffic accounting: per-source packets, bytes and replies over time, from the two places
# that see them: the wire capture (what reached the PBX and what it answered) and the
# firewall's own per-element counters (what the block set dropped). The decoy counts what
# it handled itself. Pure: the capture thread fills a Tally and hands it over whole; the
# daemon turns firewall counter readings into deltas. Memory is bounded: a Tally keeps at
# most `cap` rows between hand-overs and pools the rest under OTHER, so a spoofed flood
# from a million addresses costs a fixed number of rows, not a million.
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipdeflect.decisions import Action, Decision, Network
from sipdeflect.firewall.model import Listed

OTHER = "other"  # the pooled row when a Tally is full (never a valid address)

Row = tuple[str, float, str, int, int, int]  # source, time, place, packets, bytes, replies


class Tally:
    """Packets and bytes from each source to the PBX, and the PBX's replies to it, since
    the last hand-over. Called once per captured packet, so kept lean: one dict lookup and
    two additions, no clock. The capture hands a tally over every second or so, and its
    rows are stamped with the hand-over time: a packet lands in the store's bucket of that
    moment (at most one hand-over interval late). Sources are packed addresses, as the
    capture decodes them; they become text only when drained."""

    __slots__ = ("cap", "pooled", "rows")

    def __init__(self, cap: int = 4096) -> None:
        self.rows: dict[bytes, list[int]] = {}
        self.cap = cap
        self.pooled = 0  # packets counted under OTHER because the tally was full

    def row(self, source: bytes) -> list[int]:
        """The [packets, bytes, replies] counters of a source, created if new (pooled under
        OTHER once the tally is full). The hot path inlines `rows.get(src) or row(src)`."""
        acc = self.rows.get(source)
        if acc is None:
            if len(self.rows) >= self.cap:
                self.pooled += 1
                source = b""
                acc = self.rows.get(source)
            if acc is None:
                acc = self.rows[source] = [0, 0, 0]
        return acc

    def add(self, source: bytes, size: int, reply: bool) -> None:
        acc = self.rows.get(source) or self.row(source)
        if reply:
            acc[2] += 1
        else:
            acc[0] += 1
            acc[1] += size

    def __len__(self) -> int:
        return len(self.rows)

    def drain(self, now: float, place: str = "pbx") -> list[Row]:
        """Every row as (source, now, place, packets, bytes, replies); empties the tally."""
        out = [(_text(src), now, place, p, n, r) for src, (p, n, r) in self.rows.items()]
        self.rows = {}
        return out


def _text(packed: bytes) -> str:
    """An address as ipaddress prints it; IPv4 through inet_ntop (same text, ~10x faster),
    IPv6 through ipaddress (its forms for mapped addresses differ from inet_ntop's)."""
    if not packed:
        return OTHER
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return str(ipaddress.ip_address(packed))


@dataclass(slots=True)
class CounterDeltas:
    """Turns successive readings of the firewall's per-element counters into increments.

    A reading lower than the last one means the element was removed and added again (its
    counter restarted), so the whole reading is new. An element that disappears between
    two readings takes with it what it counted since the last one: at most one poll
    interval, stated in the docs."""

    last: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def update(self, listed: Iterable[Listed]) -> list[tuple[Listed, int, int]]:
        """(element, new packets, new bytes) for each element that counted something."""
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        out = []
        for e in listed:
            if e.packets is None or e.bytes is None:
                continue
            key = (e.set.value, str(e.target))
            seen[key] = (e.packets, e.bytes)
            p0, b0 = self.last.get(key, (0, 0))
            dp, db = (e.packets - p0, e.bytes - b0) if e.packets >= p0 else (e.packets, e.bytes)
            if dp > 0:
                out.append((e, dp, max(db, 0)))
        self.last = seen
        return out


class Diverted:
    """The addresses the firewall sends to the decoy or drops, as the capture thread asks
    about them: their packets on the wire are neither detection evidence (the decoy judges
    a deflected source, and its answers leave with the PBX's port, so the wire would take
    a decoy's "200 OK" for a login the PBX accepted) nor traffic that reached the PBX.
    Updated from decisions on the daemon's loop thread; read from the capture thread (set
    membership and add/discard are atomic under the GIL)."""

    __slots__ = ("addrs", "nets")

    def __init__(self) -> None:
        self.addrs: set[bytes] = set()
        self.nets: tuple[Network, ...] = ()  # prefixes (rare: only by hand)

    def __contains__(self, packed: bytes) -> bool:
        return packed in self.addrs or (bool(self.nets) and self.covers(packed))

    def covers(self, *packed: bytes) -> bool:
        """Whether a diverted prefix holds any of these addresses (the slow path; the
        capture asks only when there are prefixes)."""
        for p in packed:
            addr = ipaddress.ip_address(p)
            if any(addr.version == n.version and addr in n for n in self.nets):
                return True
        return False

    def apply(self, decisions: Iterable[Decision]) -> None:
        nets = list(self.nets)
        for d in decisions:
            on = d.action in (Action.DEFLECT, Action.BLOCK)
            if d.target.num_addresses == 1:
                packed = d.target.network_address.packed
                if on:
                    self.addrs.add(packed)
                else:
                    self.addrs.discard(packed)
            elif on and d.target not in nets:
                nets.append(d.target)
            elif not on and d.target in nets:
                nets.remove(d.target)
        self.nets = tuple(nets)

    def reset(self, active: Iterable[Decision]) -> None:
        self.addrs = set()
        self.nets = ()
        self.apply(active)
