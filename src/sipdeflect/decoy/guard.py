# Anti-reflection and bounded per-source state. One table holds, per source address, what
# the strategy needs to know (the AOR we last challenged), the reply token bucket for that
# address as a destination, and a cached verdict on whether it may ever be answered
# (broadcast, multicast, unspecified, reserved: never; loopback and our own addresses: only
# when the packet arrived on the loopback interface). The table is an insertion-ordered
# dict capped at `cap` entries: a new source past the cap evicts the oldest (O(1)), so a
# flood from a million spoofed sources keeps memory flat. No clock is read here: `now` is
# passed in.
from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_CAP = 65_536
DEFAULT_BUDGET = 10.0  # replies per second per destination address; burst = one second's worth

# Verdicts cached per address.
OK, NEVER, LOCAL_ONLY = 0, 1, 2

_THIS_NET = ipaddress.ip_network("0.0.0.0/8")  # RFC 1122 3.2.1.3: never a valid source


class SourceState:
    """What the decoy keeps per source address (mutable, slotted: ~100 bytes + key)."""

    __slots__ = ("challenged", "closed", "first", "last", "requests", "stamp", "tokens", "verdict")

    def __init__(self, verdict: int, now: float, tokens: float) -> None:
        self.verdict = verdict
        self.tokens = tokens
        self.stamp = now
        self.first = now
        self.last = now
        self.requests = 0
        self.challenged = 0  # aor_key of the AOR we last challenged from this source
        self.closed = False  # the last answer we sent it was one a scanner takes as final


def classify(ip: str, local: frozenset[str], bcast: frozenset[str] = frozenset()) -> int:
    """May replies ever go to ``ip``? OK, NEVER, or LOCAL_ONLY (only if it came over lo)."""
    # Fast path for the common case, a unicast IPv4 source outside 0/8, 127/8 and 224/3.
    head, dot, _ = ip.partition(".")
    if dot and head.isdigit() and 0 < int(head) < 224 and head != "127" and ip.count(".") == 3:
        if ip in local:
            return LOCAL_ONLY
        return NEVER if ip in bcast else OK
    try:
        addr = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return NEVER
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if (
        addr.is_multicast
        or addr.is_unspecified
        or (isinstance(addr, ipaddress.IPv4Address) and (addr in _THIS_NET or addr.is_reserved))
        or str(addr) in bcast
        or str(addr) == "255.255.255.255"
    ):
        return NEVER
    if addr.is_loopback or str(addr) in local:
        return LOCAL_ONLY
    return OK


def local_broadcasts(local: frozenset[str]) -> frozenset[str]:
    """Broadcast addresses are kept in ``local`` with a 'bcast:' prefix."""
    return frozenset(a.removeprefix("bcast:") for a in local if a.startswith("bcast:"))


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


class Guard:
    """The bounded source table plus the checks that keep the decoy from reflecting."""

    def __init__(
        self,
        *,
        budget: float = DEFAULT_BUDGET,
        cap: int = DEFAULT_CAP,
        local: Iterable[str] = (),
    ) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.budget = budget  # 0 = unlimited
        self.burst = max(1.0, budget)
        self.cap = cap
        self.table: OrderedDict[str, SourceState] = OrderedDict()
        self.created = 0  # sources ever added (counts a source again after eviction)
        self.evicted = 0
        # arrived_on_lo() of the last ancillary tuple seen: the batch receivers hand out
        # one shared, immutable tuple per distinct control buffer, so a loopback flood
        # asks about the same one again and again.
        self._anc: object = None
        self._on_lo = False
        self.set_local(local)

    def set_local(self, local: Iterable[str]) -> None:
        """Our own addresses (and 'bcast:ADDR' broadcasts); cached verdicts are redone."""
        self.local = frozenset(local)
        self._bcast = local_broadcasts(self.local)
        for ip, st in self.table.items():
            st.verdict = classify(ip, self.local, self._bcast)

    def state(self, ip: str, now: float) -> SourceState:
        st = self.table.get(ip)
        if st is None:
            if len(self.table) >= self.cap:
                self.table.popitem(last=False)
                self.evicted += 1
            st = self.table[ip] = SourceState(
                classify(ip, self.local, self._bcast), now, self.burst
            )
            self.created += 1
        return st

    def refuse(
        self, st: SourceState, port: int, ancdata: Sequence[tuple[int, int, bytes]] | None
    ) -> str | None:
        """Why no reply may go to this destination, or None. ``ancdata`` is the datagram's
        IP_PKTINFO; it is read only for loopback and own-address sources (None = not lo)."""
        if st.verdict == OK:
            return None if port else "source port 0"
        if st.verdict == NEVER:
            return "broadcast/multicast/unspecified/reserved source"
        if ancdata is self._anc:
            on_lo = self._on_lo
        else:
            on_lo = ancdata is not None and arrived_on_lo(ancdata)
            if type(ancdata) is tuple:  # immutable: safe to remember by identity
                self._anc, self._on_lo = ancdata, on_lo
        if not on_lo:
            return "loopback or own address not received on lo"
        return None if port else "source port 0"

    def take(self, st: SourceState, now: float) -> bool:
        """One reply from this destination's token bucket (always True when unlimited)."""
        if not self.budget:
            return True
        tokens = st.tokens + (now - st.stamp) * self.budget
        st.stamp = now
        tokens = min(tokens, self.burst)
        if tokens < 1.0:
            st.tokens = tokens
            return False
        st.tokens = tokens - 1.0
        return True

    def stopped(self) -> int:
        """Sources whose last request got a final answer and which sent nothing after it."""
        return sum(1 for st in self.table.values() if st.closed)


LO_INDEX = socket.if_nametoindex("lo") if hasattr(socket, "if_nametoindex") else 1


def arrived_on_lo(ancdata: Sequence[tuple[int, int, bytes]], lo_index: int = LO_INDEX) -> bool:
    """True when IP_PKTINFO / IPV6_PKTINFO ancillary data names the loopback interface."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 4:
            return int.from_bytes(data[:4], "little") == lo_index  # struct in_pktinfo
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            return int.from_bytes(data[16:20], "little") == lo_index  # struct in6_pktinfo
    return False


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
