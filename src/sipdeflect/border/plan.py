# Pure border planning: Decisions in, announce/withdraw commands out. A block qualifies
# when it is the engine's, proven by evidence the operator trusts (BorderPolicy.evidence),
# narrow enough and not refused by the firewall's own checks (allowlisted, own, special);
# qualifying blocks are candidates, the oldest max_prefixes of them are desired, and
# desired minus announced is what to announce (and the reverse what to withdraw). No
# speaker, socket or clock here: `now` is a parameter, so every rule is unit tested.
from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sipdeflect.decisions import Action, Decision, Network
from sipdeflect.engine import block_trigger
from sipdeflect.errors import UsageError
from sipdeflect.firewall.plan import check_enforceable


class Mode(StrEnum):
    RTBH = "rtbh"  # source-based RTBH: a /32 with the blackhole community (RFC 7999)
    FLOWSPEC = "flowspec"  # RFC 8955: source + UDP + SIP port, discard (IPv4 only here)
    BOTH = "both"


class Evidence(StrEnum):
    """How a block was earned. Only the engine's blocks after the scanner stopped are
    proven; the operator can also let their own blocks (``sipdeflect block``) through."""

    QUIET = "quiet"  # deflected on strong evidence, then gave up in the decoy
    QUIT = "quit"  # quit on the decoy's closing answer in a probe: it is the real sender
    DEFLECT_TIMEOUT = "deflect-timeout"  # still sending after max_deflect
    MANUAL = "manual"  # an operator's block


@dataclass(frozen=True, slots=True)
class BorderPolicy:
    evidence: frozenset[Evidence] = frozenset({Evidence.QUIET, Evidence.QUIT})
    max_prefixes: int = 100
    widest_v4: int = 32  # upstreams commonly accept /32 (and /128) blackholes only
    widest_v6: int = 128
    allow: tuple[Network, ...] = ()
    own: tuple[Network, ...] = ()
    versions: frozenset[int] = frozenset({4, 6})  # IP versions the session carries


@dataclass(frozen=True, slots=True)
class Entry:
    """One qualifying block: what the border announces and why."""

    target: Network
    since: float  # when the block was decided
    until: float | None
    evidence: Evidence
    reason: str


@dataclass(frozen=True, slots=True)
class Changes:
    announce: tuple[Entry, ...] = ()
    withdraw: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw)


def evidence_of(d: Decision) -> Evidence | None:
    if d.action is not Action.BLOCK:
        return None
    if d.origin == "cli":
        return Evidence.MANUAL
    trigger = block_trigger(d)
    return None if trigger is None else Evidence(trigger.value)


def refusal(target: Network, policy: BorderPolicy) -> str | None:
    """Why ``target`` may never be announced (None: it may). The same refusals as the
    firewall's plan (firewall.plan.check_enforceable), plus the border's own width."""
    if target.version not in policy.versions:
        return f"{target}: the BGP session carries no IPv{target.version} routes"
    widest = policy.widest_v4 if target.version == 4 else policy.widest_v6
    if target.prefixlen < widest:
        return f"{target} is wider than /{widest}"
    try:
        check_enforceable([target], allow=policy.allow, own=policy.own)
    except UsageError as exc:
        return str(exc)
    return None


def qualify(d: Decision, policy: BorderPolicy, now: float) -> Entry | None:
    ev = evidence_of(d)
    if ev is None or ev not in policy.evidence:
        return None
    if d.until is not None and d.until <= now:
        return None
    if refusal(d.target, policy) is not None:
        return None
    return Entry(d.target, d.at, d.until, ev, d.reason)


@dataclass
class Border:
    """What qualifies (candidates) and what the speaker was told (announced)."""

    policy: BorderPolicy
    candidates: dict[Network, Entry] = field(default_factory=dict)
    announced: dict[Network, Entry] = field(default_factory=dict)
    _next_expiry: float = float("inf")  # earliest candidate `until`: tick()'s fast path
    _dirty: bool = False

    def update(self, decisions: Sequence[Decision], now: float) -> Changes:
        """Decisions just taken (later ones about a target win) -> what to tell the speaker."""
        for d in decisions:
            entry = qualify(d, self.policy, now)
            if entry is None:
                if self.candidates.pop(d.target, None) is not None:  # released, deflected...
                    self._dirty = True
            else:
                self.candidates[d.target] = entry
                self._dirty = True
                if entry.until is not None:
                    self._next_expiry = min(self._next_expiry, entry.until)
        return self._converge(now)

    def reset(self, active: Iterable[Decision], now: float) -> Changes:
        """A fresh speaker (start, restart): announce exactly what is in force."""
        self.announced = {}
        self.candidates = {}
        self._next_expiry = float("inf")
        self._dirty = True
        return self.update(list(active), now)

    def retune(self, policy: BorderPolicy, active: Iterable[Decision], now: float) -> Changes:
        """New policy (reload): re-judge everything in force against it."""
        self.policy = policy
        self.candidates = {}
        self._next_expiry = float("inf")
        self._dirty = True
        return self.update(list(active), now)

    def tick(self, now: float) -> Changes:
        """Drop candidates whose block ran out even if no release came (belt and braces).
        Once a second from the daemon: nothing is scanned until the earliest one is due."""
        return self._converge(now)

    def waiting(self) -> int:
        """Qualifying blocks not announced because of max_prefixes."""
        return len(self.candidates) - len(self.announced)

    def _converge(self, now: float) -> Changes:
        if now >= self._next_expiry:
            cands = self.candidates
            for t in [t for t, e in cands.items() if e.until is not None and e.until <= now]:
                del cands[t]
            untils = [e.until for e in cands.values() if e.until is not None]
            self._next_expiry = min(untils, default=float("inf"))
            self._dirty = True
        if not self._dirty:
            return Changes()
        self._dirty = False
        want = desired(self.candidates, self.announced, self.policy.max_prefixes)
        changes = diff(want, self.announced)
        self.announced = want
        return changes


def desired(
    candidates: dict[Network, Entry], announced: dict[Network, Entry], limit: int
) -> dict[Network, Entry]:
    """At most ``limit`` candidates: those already announced first (no churn when the cap
    is reached), then the oldest blocks."""
    if len(candidates) <= limit:
        return dict(candidates)
    ranked = heapq.nsmallest(
        limit, candidates.values(), key=lambda e: (e.target not in announced, e.since)
    )
    return {e.target: e for e in ranked}


def diff(want: dict[Network, Entry], have: dict[Network, Entry]) -> Changes:
    """Announce what is wanted and not had (or had with other attributes, e.g. a renewed
    block); withdraw what is had and no longer wanted."""
    announce = tuple(e for t, e in want.items() if have.get(t) != e)
    withdraw = tuple(t for t in have if t not in want)
    return Changes(announce, withdraw)
