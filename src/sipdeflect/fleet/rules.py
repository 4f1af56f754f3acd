# Pure fleet rules, no I/O: what a node shares (a decision's *basis*: how it was proven) and
# whether a row read from the shared store may become a local decision. A shared row is
# data from another machine, possibly hostile: it is parsed strictly and refused (with the
# reason, for the log) unless it is a block or release of one address or a narrow prefix
# with a bounded lifetime from an accepted node on an accepted basis. Local protection
# (allowlist, own addresses, shields) is the engine's and the daemon's job, not this one's.
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sipdeflect.decisions import Action, Decision, Level, Network

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ORIGIN_PREFIX = "fleet:"  # a local decision made from a shared row has origin fleet:NODE
BASES = ("attacker", "suspect", "watch", "quit", "operator", "probe", "release")
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the shared fleet_decisions table, as read (untrusted)."""

    seq: int
    node: str
    target: str
    action: str
    until: float | None
    basis: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Rules:
    """[fleet] share/accept settings, as plain values."""

    node: str
    share: frozenset[str] = frozenset({"attacker", "quit", "operator"})
    accept: frozenset[str] = frozenset({"attacker", "quit", "operator"})
    accept_from: frozenset[str] = frozenset()  # empty: every other node
    max_ttl: float = 30 * 86400.0  # longest block accepted, from the row's `at`
    widest_v4: int = 24
    widest_v6: int = 48


def basis(decision: Decision, level: Level | None) -> str:
    """How a local decision was proven: what the share/accept lists name."""
    if decision.action is Action.RELEASE:
        return "release"
    if decision.origin == "cli":
        return "operator"
    reason = decision.reason
    if reason.startswith("quit"):
        return "quit"  # a probe it quit on: it received the decoy's answer
    if reason.startswith("probe"):
        return "probe"  # forgeable evidence, not proven: a short local deflect only
    return (level or Level.WATCH).name.lower()


def to_share(decision: Decision, level: Level | None, rules: Rules) -> str | None:
    """The basis to publish this local decision with, or None when it stays local.
    Decisions taken from the fleet are never republished; releases are shared unless
    they end a probe (a probe's deflect was never shared) or are local bookkeeping."""
    if decision.origin not in ("engine", "cli"):
        return None  # fleet:NODE, config, reconcile: not this node's own finding
    if decision.action is Action.ALLOW:
        return None  # an allowlist is local by nature
    b = basis(decision, level)
    if b == "release":
        return None if decision.reason.startswith("probe-timeout") else b
    return b if b in rules.share else None


@dataclass(frozen=True, slots=True)
class Refused:
    row: Row
    why: str

    def line(self) -> str:
        """A log line that shows hostile text escaped, never raw."""
        return (
            f"fleet: refused row seq={self.row.seq} from {self.row.node[:64]!r} "
            f"target={self.row.target[:64]!r}: {self.why}"
        )


def judge(row: Row, rules: Rules, now: float) -> Decision | Refused | None:
    """A shared row -> the local decision it asks for, a refusal (log it), or None (not
    for us: our own row, a node or basis we do not accept, an expired block)."""
    if row.node == rules.node:
        return None
    if not NODE_NAME.match(row.node):
        return Refused(row, "malformed node name")
    if rules.accept_from and row.node not in rules.accept_from:
        return None
    try:
        action = Action(row.action)
    except ValueError:
        return Refused(row, "unknown action")
    if action not in (Action.BLOCK, Action.DEFLECT, Action.RELEASE):
        return Refused(row, f"action {action} is never taken from the fleet")
    target = _target(row.target, rules)
    if isinstance(target, str):
        return Refused(row, target)
    if not isinstance(row.at, float | int) or not (0 < row.at < now + 3600):
        return Refused(row, "decision time absent or in the future")
    reason = f"{row.node}: {_clean(row.reason)}"
    origin = ORIGIN_PREFIX + row.node
    if action is Action.RELEASE:
        return Decision(target, Action.RELEASE, None, origin, reason, now)
    if row.basis not in BASES:
        return Refused(row, "unknown basis")
    if row.basis not in rules.accept:
        return None
    if row.until is None:
        return Refused(row, "no expiry: fleet blocks must lapse")
    if row.until - row.at > rules.max_ttl:
        return Refused(row, f"lifetime {row.until - row.at:.0f}s beyond max_ttl")
    if row.until <= now:
        return None  # already over (catching up through history)
    # Shared evidence becomes a block here: this node has no decoy conversation with the
    # source to watch, and the publisher has already proven it.
    return Decision(target, Action.BLOCK, float(row.until), origin, reason, now)


def latest(rows: list[Row]) -> list[Row]:
    """Only each (node, target)'s last row, in sequence order: catching up through a
    stretch of history applies its outcome, not every step (a block released later in the
    same stretch never reaches the firewall)."""
    last: dict[tuple[str, str], Row] = {}
    for r in rows:
        last.pop((r.node, r.target), None)  # re-insert: dict order follows the last seq
        last[(r.node, r.target)] = r
    return list(last.values())


def _target(text: str, rules: Rules) -> Network | str:
    if not isinstance(text, str) or len(text) > 64:
        return "malformed address"
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return "malformed address"
    widest = rules.widest_v4 if net.version == 4 else rules.widest_v6
    if net.prefixlen < widest:
        return f"prefix {net} wider than /{widest}"
    first = net.network_address
    if first.is_unspecified or first.is_loopback or first.is_multicast or first.is_link_local:
        return f"special address {net}"
    return net


def _clean(text: object) -> str:
    s = str(text)[:MAX_REASON]
    return "".join(c if c.isprintable() else "?" for c in s)


def from_fleet(decision: Decision) -> str | None:
    """The node a local decision was taken from, or None if it is this node's own."""
    o = decision.origin
    return o[len(ORIGIN_PREFIX) :] if o.startswith(ORIGIN_PREFIX) else None
