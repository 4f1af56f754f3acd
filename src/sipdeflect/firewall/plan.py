# Pure planning (house rule 1): user intent + what is known about the host (its own
# addresses, the current allowlist) -> a Plan of set operations, or a UsageError before
# anything is touched. Backends translate a Plan into one batch and apply it once.
#
# Semantics: allow wins (block/deflect of an allowlisted or own address is refused, and
# allowing an address removes it from the other sets); deflect takes an address out of
# block; block leaves a deflect entry alone because the block rule drops before the
# redirect is ever considered (removing it would double the cost of bulk bans).
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sipdeflect.errors import UsageError
from sipdeflect.firewall.model import (
    Element,
    FirewallSettings,
    Network,
    SetName,
    show_target,
)


@dataclass(frozen=True, slots=True)
class Setup:
    """Create (or update in place) our own table/chains/sets; keeps existing elements."""

    settings: FirewallSettings


@dataclass(frozen=True, slots=True)
class Teardown:
    """Remove everything we own and nothing else; a no-op when nothing is there."""

    settings: FirewallSettings


@dataclass(frozen=True, slots=True)
class Put:
    """Add elements (refreshing the timeout of those already present).

    Targets and their timeouts are parallel tuples rather than a tuple of Element objects:
    a plan of a million blocks would spend most of its time building those objects.
    """

    set: SetName
    targets: tuple[Network, ...]
    timeouts: tuple[int | None, ...]

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.timeouts):
            raise ValueError("Put needs one timeout per target")

    @classmethod
    def of(cls, set_: SetName, elements: Iterable[Element]) -> Put:
        es = tuple(elements)
        return cls(set_, tuple(e.target for e in es), tuple(e.timeout for e in es))

    @classmethod
    def same(cls, set_: SetName, targets: tuple[Network, ...], timeout: int | None) -> Put:
        return cls(set_, targets, (timeout,) * len(targets))

    @property
    def elements(self) -> tuple[Element, ...]:
        return tuple(Element(t, x) for t, x in zip(self.targets, self.timeouts, strict=True))


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove targets from a set; absent targets are not an error."""

    set: SetName
    targets: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class FlushFlows:
    """Forget tracked flows (conntrack entries / pf states) to or from these targets."""

    targets: tuple[Network, ...]


Op = Setup | Teardown | Put | Remove | FlushFlows


@dataclass(frozen=True, slots=True)
class Plan:
    ops: tuple[Op, ...]

    def describe(self) -> list[str]:
        """One human-readable line per op (the dry-run output)."""
        return [describe_op(op) for op in self.ops]


def describe_op(op: Op) -> str:
    if isinstance(op, Setup | Teardown):
        s = op.settings
        ports = ",".join(map(str, s.sip_ports))
        verb = "setup" if isinstance(op, Setup) else "teardown"
        return f"{verb} table={s.table} sip_ports={ports} decoy_port={s.decoy_port}"
    if isinstance(op, Put):
        items = " ".join(
            show_target(e.target) + (f" timeout={e.timeout}s" if e.timeout else "")
            for e in op.elements
        )
        return f"put {op.set} {items}"
    if isinstance(op, Remove):
        return f"remove {op.set} " + " ".join(map(show_target, op.targets))
    return "flush-flows " + " ".join(map(show_target, op.targets))


def _overlaps(target: Network, others: Iterable[Network]) -> Network | None:
    for other in others:
        if other.version == target.version and target.overlaps(other):
            return other
    return None


# Addresses no plan may block or deflect, whatever the allowlist says.
SPECIAL = {
    4: ("127.0.0.0/8", "0.0.0.0/32", "224.0.0.0/4", "169.254.0.0/16", "255.255.255.255/32"),
    6: ("::1/128", "::/128", "ff00::/8", "fe80::/10"),
}


def _span(t: Network) -> tuple[int, int]:
    lo = int(t.network_address)
    return lo, lo | ((1 << (t.max_prefixlen - t.prefixlen)) - 1)


class _Forbidden:
    """Merged, sorted integer ranges per IP version, probed with bisect: O(log n) a target
    instead of ipaddress property checks, which dominated planning a million blocks."""

    def __init__(self, nets: Iterable[Network]) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for n in nets:
            spans[n.version].append(_span(n))
        self.starts: dict[int, list[int]] = {}
        self.ends: dict[int, list[int]] = {}
        for v, rs in spans.items():
            merged: list[list[int]] = []
            for lo, hi in sorted(rs):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self.starts[v] = [lo for lo, _ in merged]
            self.ends[v] = [hi for _, hi in merged]

    def hits(self, t: Network) -> bool:
        lo, hi = _span(t)
        i = bisect.bisect_right(self.starts[t.version], hi) - 1
        return i >= 0 and self.ends[t.version][i] >= lo


def check_enforceable(
    targets: Iterable[Network], *, allow: Iterable[Network], own: Iterable[Network]
) -> None:
    """Refuse block/deflect of allowlisted, own, loopback or non-unicast addresses."""
    _checked_unique(targets, allow, own)


def _checked_unique(
    targets: Iterable[Network], allow: Iterable[Network], own: Iterable[Network]
) -> tuple[Network, ...]:
    """Deduplicate and check in one pass: the hot loop of planning a million blocks.

    Keyed on plain integers in one set per (IP version, prefix length): ints hash in C
    (ipaddress networks hash in Python) and need no tuple per target. Targets arrive in
    runs of one kind (a list of IPv4 addresses), so the per-kind lookups are redone only
    when the kind changes.
    """
    allow_l, own_l = list(allow), list(own)
    special = [ipaddress.ip_network(n) for v in (4, 6) for n in SPECIAL[v]]
    forbidden = _Forbidden([*special, *allow_l, *own_l])
    seen: dict[tuple[int, int], set[int]] = {}
    out: list[Network] = []
    right = bisect.bisect_right
    kind: tuple[type, int] | None = None
    here: set[int] = set()
    starts: list[int] = []
    ends: list[int] = []
    span = 0
    for t in targets:
        prefix = t.prefixlen
        if kind is None or type(t) is not kind[0] or prefix != kind[1]:
            kind = (type(t), prefix)
            v = t.version
            here = seen.setdefault((v, prefix), set())
            starts, ends = forbidden.starts[v], forbidden.ends[v]
            span = (1 << (t.max_prefixlen - prefix)) - 1
        lo = int(t.network_address)
        if lo in here:
            continue
        here.add(lo)
        i = right(starts, lo | span) - 1
        if i >= 0 and ends[i] >= lo:
            _explain(t, allow_l, own_l)
        out.append(t)
    return tuple(out)


def _explain(t: Network, allow_l: list[Network], own_l: list[Network]) -> None:
    """The slow, descriptive check for a target that hit a forbidden range."""
    addr = t.network_address
    if t.is_loopback or addr.is_unspecified or t.is_multicast or t.is_link_local:
        raise UsageError(f"{show_target(t)} is not a routable unicast source")
    hit = _overlaps(t, own_l)
    if hit is not None:
        raise UsageError(f"{show_target(t)} covers this host's own address {hit}")
    hit = _overlaps(t, allow_l)
    if hit is not None:
        raise UsageError(f"{show_target(t)} overlaps allowlisted {show_target(hit)}")
    raise UsageError(f"{show_target(t)} is not a routable unicast source")


def _unique(targets: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(dict.fromkeys(targets))


def plan_setup(settings: FirewallSettings) -> Plan:
    return Plan((Setup(settings),))


def plan_teardown(settings: FirewallSettings) -> Plan:
    return Plan((Teardown(settings),))


def plan_block(
    targets: Iterable[Network],
    timeout: int | None,
    *,
    allow: Iterable[Network] = (),
    own: Iterable[Network] = (),
) -> Plan:
    ts = _checked_unique(targets, allow, own)
    return Plan((Put.same(SetName.BLOCK, ts, timeout), FlushFlows(ts)))


def plan_deflect(
    targets: Iterable[Network],
    timeout: int | None,
    *,
    allow: Iterable[Network] = (),
    own: Iterable[Network] = (),
) -> Plan:
    ts = _checked_unique(targets, allow, own)
    return Plan(
        (
            Remove(SetName.BLOCK, ts),
            Put.same(SetName.DEFLECT, ts, timeout),
            FlushFlows(ts),
        )
    )


def plan_allow(targets: Iterable[Network], timeout: int | None = None) -> Plan:
    ts = _unique(targets)
    return Plan(
        (
            Remove(SetName.BLOCK, ts),
            Remove(SetName.DEFLECT, ts),
            Put.same(SetName.ALLOW, ts, timeout),
            FlushFlows(ts),
        )
    )


def plan_release(targets: Iterable[Network]) -> Plan:
    ts = _unique(targets)
    return Plan(
        (
            Remove(SetName.BLOCK, ts),
            Remove(SetName.DEFLECT, ts),
            Remove(SetName.ALLOW, ts),
            FlushFlows(ts),
        )
    )
