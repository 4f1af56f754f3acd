# Pure planning (house rule 1): user intent + what is known about the host (its own
# addresses, the current allowlist) -> a Plan of set operations, or a UsageError before
# anything is touched. Backends translate a Plan into one batch and apply it once.
#
# Semantics: allow wins (block/deflect of an allowlisted or own address is refused, and
# allowing an address removes it from the other sets); deflect takes an address out of
# block; block leaves a deflect entry alone because the block rule drops before the
# redirect is ever considered (removing it would double the cost of bulk bans).
from __future__ import annotations

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
    """Add elements (refreshing the timeout of those already present)."""

    set: SetName
    elements: tuple[Element, ...]


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


def check_enforceable(
    targets: Iterable[Network], *, allow: Iterable[Network], own: Iterable[Network]
) -> None:
    """Refuse block/deflect of allowlisted, own, loopback or non-unicast addresses."""
    allow_l, own_l = list(allow), list(own)
    for t in targets:
        addr = t.network_address
        if t.is_loopback or addr.is_unspecified or t.is_multicast or t.is_link_local:
            raise UsageError(f"{show_target(t)} is not a routable unicast source")
        hit = _overlaps(t, own_l)
        if hit is not None:
            raise UsageError(f"{show_target(t)} covers this host's own address {hit}")
        hit = _overlaps(t, allow_l)
        if hit is not None:
            raise UsageError(f"{show_target(t)} overlaps allowlisted {show_target(hit)}")


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
    ts = _unique(targets)
    check_enforceable(ts, allow=allow, own=own)
    return Plan((Put(SetName.BLOCK, tuple(Element(t, timeout) for t in ts)), FlushFlows(ts)))


def plan_deflect(
    targets: Iterable[Network],
    timeout: int | None,
    *,
    allow: Iterable[Network] = (),
    own: Iterable[Network] = (),
) -> Plan:
    ts = _unique(targets)
    check_enforceable(ts, allow=allow, own=own)
    return Plan(
        (
            Remove(SetName.BLOCK, ts),
            Put(SetName.DEFLECT, tuple(Element(t, timeout) for t in ts)),
            FlushFlows(ts),
        )
    )


def plan_allow(targets: Iterable[Network], timeout: int | None = None) -> Plan:
    ts = _unique(targets)
    return Plan(
        (
            Remove(SetName.BLOCK, ts),
            Remove(SetName.DEFLECT, ts),
            Put(SetName.ALLOW, tuple(Element(t, timeout) for t in ts)),
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
