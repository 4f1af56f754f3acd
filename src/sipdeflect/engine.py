# Pure decision engine. Per source: watched -> deflected (to the decoy) -> blocked (after
# the scanner went quiet in the decoy, or stayed too long) -> released (block expired) ->
# deflected again on the next offence, with a longer block. Forgeable evidence (UDP) never
# deflects outright; it can start a *probe*: watched -> probing (a short deflect) -> blocked
# only if the source quits right after a decoy answer that ends its scan (only the real
# sender receives that answer: a spoofed flood keeps going), else released after probe_for
# (and not probed again for probe_every). Inputs are detection levels,
# decoy activity and the passage of time (`now` is always a parameter); outputs are
# Decisions. Transitions live in one table and thresholds in Policy. Allowlisted and own
# addresses are never acted on. Memory is bounded: beyond max_sources the least recently
# seen watched/released records are forgotten (deflected/blocked ones never are).
# Time costs what is due, not what is known: each source has one live entry in a deadline
# heap (the earliest moment its state could change with no new input); tick() pops only
# what is due and checks it against the current state, re-arming it when a later packet
# moved its deadline (a scanner still sending in the decoy). Superseded entries are
# skipped by a per-source arm number and the heap is rebuilt when they pile up.
from __future__ import annotations

import heapq
import ipaddress
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from sipdeflect.decisions import Action, Address, Decision, Level, Network, single
from sipdeflect.errors import UsageError

RECHECK = 0.25  # seconds: how soon a due probe that cannot be decided yet is looked at again


class State(StrEnum):
    WATCHED = "watched"
    DEFLECTED = "deflected"
    BLOCKED = "blocked"
    RELEASED = "released"
    PROBING = "probing"  # deflected briefly on forgeable evidence, to see if it quits


class Trigger(StrEnum):
    DETECTED = "detected"  # detection reached Policy.act_at
    QUIET = "quiet"  # the decoy heard nothing for quiet_after: the scanner gave up
    DEFLECT_TIMEOUT = "deflect-timeout"  # still sending after max_deflect: drop it anyway
    EXPIRED = "expired"  # the block's time is up
    PROBE = "probe"  # forgeable evidence enough to try the decoy on it
    QUIT = "quit"  # quiet right after the decoy's closing answer: it received it
    PROBE_TIMEOUT = "probe-timeout"  # kept sending through the probe: proves nothing


# Why the engine blocks, as written into a block's reason (live: "TRIGGER: WHY"; restored
# from the store: WHY alone, the source's last note). block_trigger() reads either back.
BLOCK_WHY: dict[Trigger, str] = {
    Trigger.QUIET: "went quiet in the decoy",
    Trigger.DEFLECT_TIMEOUT: "kept sending",
    Trigger.QUIT: "quit on the decoy's answer: it was listening, so it is the sender",
}


TRANSITIONS: dict[tuple[State, Trigger], tuple[State, Action]] = {
    (State.WATCHED, Trigger.DETECTED): (State.DEFLECTED, Action.DEFLECT),
    (State.RELEASED, Trigger.DETECTED): (State.DEFLECTED, Action.DEFLECT),
    (State.DEFLECTED, Trigger.QUIET): (State.BLOCKED, Action.BLOCK),
    (State.DEFLECTED, Trigger.DEFLECT_TIMEOUT): (State.BLOCKED, Action.BLOCK),
    (State.BLOCKED, Trigger.EXPIRED): (State.RELEASED, Action.RELEASE),
    (State.WATCHED, Trigger.PROBE): (State.PROBING, Action.DEFLECT),
    (State.RELEASED, Trigger.PROBE): (State.PROBING, Action.DEFLECT),
    (State.PROBING, Trigger.QUIT): (State.BLOCKED, Action.BLOCK),
    (State.PROBING, Trigger.PROBE_TIMEOUT): (State.WATCHED, Action.RELEASE),
    (State.PROBING, Trigger.DETECTED): (State.DEFLECTED, Action.DEFLECT),
}


@dataclass(frozen=True, slots=True)
class Policy:
    act_at: Level = Level.ATTACKER  # the level at which a source is deflected
    quiet_after: float = 15.0  # seconds without a packet in the decoy: it gave up
    max_deflect: float = 300.0  # seconds in the decoy before blocking regardless
    block_base: float = 3600.0  # first block; each repeat offence multiplies it
    block_factor: float = 4.0
    block_max: float = 30 * 86400.0
    spread: float = 0.2  # +-20% per source, so mass bans do not lapse together
    forget_after: float = 30 * 86400.0  # released records (offence counts) kept this long
    max_sources: int = 100_000  # records kept; least recently seen watched ones go first
    probe_for: float = 10.0  # a probe lasts at most this long
    probe_quiet: float = 2.0  # silence after the decoy's closing answer that proves it quit
    probe_grace: float = 0.5  # packets already in flight after that answer still count...
    probe_after: int = 4  # ...up to this many (a short forged burst sends many more)
    probe_every: float = 3600.0  # at most one probe per source this often

    def block_ttl(self, address: Address, offences: int) -> float:
        ttl = min(self.block_base * self.block_factor ** max(0, offences - 1), self.block_max)
        # Deterministic spread in [-spread, +spread]: the same source and offence always get
        # the same TTL (replays and tests agree), different sources scatter uniformly.
        u = zlib.crc32(address.packed + offences.to_bytes(4, "big")) / 0xFFFFFFFF
        return ttl * (1 + self.spread * (2 * u - 1))

    def deflect_ttl(self) -> float:
        """Kernel expiry of a deflect element: outlives the engine's own deadline so the
        engine decides, but lapses by itself if the daemon is gone."""
        return self.max_deflect + self.quiet_after + 60.0


@dataclass(slots=True)
class Source:
    address: Address
    state: State
    level: Level
    first_seen: float
    last_seen: float
    since: float  # when it entered this state
    until: float | None = None  # expiry of the current deflect/block
    offences: int = 0  # times deflected
    last_decoy: float | None = None  # last packet the decoy saw from it
    reasons: list[str] = field(default_factory=list)  # newest last, at most 8
    closed_at: float | None = None  # first decoy answer (in this state) meant to end its scan
    probed_at: float | None = None  # last probe started
    after_close: int = 0  # decoy packets since closed_at
    armed: int = field(default=0, compare=False)  # the live deadline entry's number

    def note(self, reason: str) -> None:
        if not self.reasons or self.reasons[-1] != reason:
            self.reasons.append(reason)
            del self.reasons[:-8]


class Engine:
    def __init__(
        self,
        policy: Policy | None = None,
        allow: Iterable[Network] = (),
        own: Iterable[Address] = (),
    ) -> None:
        self.policy = policy or Policy()
        self.allow: list[Network] = list(allow)
        self.own: set[Address] = set(own)
        self.sources: dict[Address, Source] = {}
        self.manual: dict[Network, Decision] = {}  # operator decisions on prefixes/addresses
        # (when, arm number, address): each source's next possible change (module comment)
        self._due: list[tuple[float, int, Address]] = []
        self._arms = 0
        self.states: dict[State, int] = dict.fromkeys(State, 0)  # sources in each state

    # -- protection ----------------------------------------------------------------------
    def protected(self, address: Address) -> str | None:
        """Why this address must never be acted on, or None."""
        if address in self.own:
            return "own address"
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            return "special address"
        for net in self.allow:
            if net.version == address.version and address in net:
                return f"allowlisted ({net})"
        return None

    def _protected_net(self, target: Network) -> str | None:
        for net in self.allow:
            if net.version == target.version and net.overlaps(target):
                return f"overlaps allowlisted {net}"
        for own in self.own:
            if own.version == target.version and own in target:
                return f"contains own address {own}"
        return None

    # -- inputs ----------------------------------------------------------------------------
    def signal(self, address: Address, level: Level, reason: str, now: float) -> list[Decision]:
        """Detection says this source reached ``level`` because of ``reason``."""
        if self.protected(address):
            return []
        src = self.sources.get(address)
        if src is None:
            self._bound()  # before adding: the newcomer is never the one forgotten
            src = Source(address, State.WATCHED, level, now, now, now)
            self.sources[address] = src
            self.states[State.WATCHED] += 1
            self._arm(src)
        src.last_seen = now
        src.level = max(src.level, level)
        src.note(reason)
        if level >= self.policy.act_at:
            return self._fire(src, Trigger.DETECTED, now, reason)
        return []

    def probe(self, address: Address, reason: str, now: float) -> list[Decision]:
        """Forgeable evidence says this source may be a scanner: deflect it briefly and see
        whether it quits on the decoy's answer (see tick). At most once per probe_every."""
        if self.protected(address):
            return []
        src = self.sources.get(address)
        if src is None:
            self._bound()  # before adding: the newcomer is never the one forgotten
            src = Source(address, State.WATCHED, Level.WATCH, now, now, now)
            self.sources[address] = src
            self.states[State.WATCHED] += 1
            self._arm(src)
        src.last_seen = now
        if src.probed_at is not None and now - src.probed_at < self.policy.probe_every:
            return []
        src.note(reason)
        return self._fire(src, Trigger.PROBE, now, reason)

    def decoy_seen(self, address: Address, now: float, *, closes: bool = False) -> None:
        """The decoy received a packet from this source (it is still trying); ``closes``:
        the decoy's answer was one meant to end the scan."""
        src = self.sources.get(address)
        if src is not None:
            src.last_decoy = now
            src.last_seen = now
            if src.closed_at is not None:
                src.after_close += 1
            elif closes:
                src.closed_at = now  # the first one: whatever it sends after that counts

    def tick(self, now: float) -> list[Decision]:
        """Time-driven transitions: quiet or overstaying scanners get blocked, blocks lapse.
        Costs the entries due by ``now`` (see the module comment), not one per source."""
        out: list[Decision] = []
        due = self._due
        while due and due[0][0] <= now:
            _, arm, addr = heapq.heappop(due)
            src = self.sources.get(addr)
            if src is not None and src.armed == arm:
                out += self._check(src, now)
        for net, dec in list(self.manual.items()):
            if dec.until is not None and now >= dec.until:
                del self.manual[net]
                out.append(Decision(net, Action.RELEASE, None, dec.origin, "expired", now))
        return out

    def _check(self, src: Source, now: float) -> list[Decision]:
        """The transition ``src`` is due for at ``now``, or re-arm it for later."""
        p = self.policy
        if src.state is State.DEFLECTED:
            heard = src.last_decoy if src.last_decoy is not None else src.since
            if now - heard >= p.quiet_after:
                return self._fire(src, Trigger.QUIET, now, BLOCK_WHY[Trigger.QUIET])
            if now - src.since >= p.max_deflect:
                why = BLOCK_WHY[Trigger.DEFLECT_TIMEOUT]
                return self._fire(src, Trigger.DEFLECT_TIMEOUT, now, why)
        elif src.state is State.PROBING:
            last, closed = src.last_decoy, src.closed_at
            if (
                last is not None
                and closed is not None
                and last - closed <= p.probe_grace
                and src.after_close <= p.probe_after
                and now - last >= p.probe_quiet
            ):
                return self._fire(src, Trigger.QUIT, now, BLOCK_WHY[Trigger.QUIT])
            if now - src.since >= p.probe_for:
                why = "no sign it received the decoy's answer: left alone"
                return self._fire(src, Trigger.PROBE_TIMEOUT, now, why)
        elif src.state is State.BLOCKED:
            if src.until is not None and now >= src.until:
                return self._fire(src, Trigger.EXPIRED, now, "block expired")
        elif now - src.last_seen >= p.forget_after:  # watched or released
            self._forget(src)
            return []
        self._arm(src, now)
        return []

    def _next(self, src: Source, now: float) -> float | None:
        """The earliest moment ``src`` could change state with no input but time."""
        p = self.policy
        if src.state is State.DEFLECTED:
            heard = src.last_decoy if src.last_decoy is not None else src.since
            return min(heard + p.quiet_after, src.since + p.max_deflect)
        if src.state is State.PROBING:
            # A quit needs probe_quiet of silence after the last decoy packet (or after now,
            # when none came yet); a later packet only moves that later.
            last = src.last_decoy if src.last_decoy is not None else max(now, src.since)
            return min(last + p.probe_quiet, src.since + p.probe_for)
        if src.state is State.BLOCKED:
            return src.until
        return src.last_seen + p.forget_after

    def _arm(self, src: Source, now: float | None = None) -> None:
        """(Re-)arm ``src`` at its next deadline; ``now`` when re-arming from tick()."""
        when = self._next(src, src.since if now is None else now)
        if when is None:
            return
        if now is not None and when <= now:
            # A probe whose quit is not possible yet (no closing answer seen) but may be
            # later: look again shortly, as the per-second scan did. Always progress.
            when = now + RECHECK
        self._arms += 1
        src.armed = self._arms
        heapq.heappush(self._due, (when, self._arms, src.address))
        if len(self._due) > 2 * len(self.sources) + 1024:
            self._rearm_all()

    def _rearm_all(self) -> None:
        """Drop superseded entries: one live entry per source, rebuilt in O(n)."""
        self._due = []
        for src in self.sources.values():
            when = self._next(src, src.since)
            if when is not None:
                self._arms += 1
                src.armed = self._arms
                self._due.append((when, self._arms, src.address))
        heapq.heapify(self._due)

    def manual_decision(
        self,
        action: Action,
        target: Network,
        now: float,
        *,
        duration: float | None = None,
        reason: str = "",
        origin: str = "cli",
    ) -> list[Decision]:
        """An operator's block/deflect/allow/release of an address or prefix."""
        if action in (Action.BLOCK, Action.DEFLECT):
            why = self._protected_net(target)
            if why:
                raise UsageError(f"refusing to {action} {target}: {why}")
        until = None if duration is None else now + duration
        dec = Decision(target, action, until, origin, reason or f"{action} by operator", now)
        out = [dec]
        if action is Action.ALLOW:
            self.allow.append(target)
            self.manual.pop(target, None)
            # Anything inside the new allowlist entry is released at once.
            for addr, src in list(self.sources.items()):
                if addr.version == target.version and addr in target:
                    if src.state in (State.DEFLECTED, State.BLOCKED):
                        out.append(
                            Decision(single(addr), Action.RELEASE, None, origin, "allowlisted", now)
                        )
                    self._forget(src)
        elif action is Action.RELEASE:
            self.manual.pop(target, None)
            self.allow = [n for n in self.allow if n != target]
            for addr, src in self.sources.items():
                if addr.version == target.version and addr in target:
                    self._move(src, State.RELEASED)
                    src.since, src.until = now, None
                    self._arm(src)
        else:
            self.manual[target] = dec
        return out

    def remote_decision(self, dec: Decision, now: float) -> list[Decision]:
        """A decision taken from another node (origin "fleet:NODE", already judged by
        fleet.rules): a block is held like an operator's, unless this node protects the
        target, its operator decided on it, or the engine blocks it itself; a release
        undoes only what that same node asked for, never a local decision."""
        held = self.manual.get(dec.target)
        if dec.action is Action.RELEASE:
            if held is None or held.origin != dec.origin:
                return []
            del self.manual[dec.target]
            return [Decision(dec.target, Action.RELEASE, None, dec.origin, dec.reason, now)]
        if self._protected_net(dec.target):
            return []
        if dec.target.num_addresses == 1:
            addr = dec.target.network_address
            src = self.sources.get(addr)
            if self.protected(addr) or (src is not None and src.state is State.BLOCKED):
                return []
        if held is not None and (
            not held.origin.startswith("fleet:")
            or (held.action, held.until) == (dec.action, dec.until)
        ):
            return []  # the local operator's decision wins; a repeat changes nothing
        self.manual[dec.target] = dec
        return [dec]

    # -- state machine ---------------------------------------------------------------------
    def _fire(self, src: Source, trigger: Trigger, now: float, reason: str) -> list[Decision]:
        step = TRANSITIONS.get((src.state, trigger))
        if step is None:
            return []  # e.g. already deflected or blocked: nothing new to do
        state, action = step
        self._move(src, state)
        src.since, src.last_decoy, src.closed_at = now, None, None
        src.after_close = 0
        if trigger is Trigger.PROBE:
            src.probed_at = now
            src.until = now + self.policy.probe_for + self.policy.probe_quiet + 60.0
        elif action is Action.DEFLECT:
            src.offences += 1
            src.until = now + self.policy.deflect_ttl()
        elif action is Action.BLOCK:
            if trigger is Trigger.QUIT:
                src.offences += 1  # proven by quitting: now an offence
            src.until = now + self.policy.block_ttl(src.address, src.offences)
        else:
            src.until = None
        src.note(reason)
        self._arm(src)
        return [
            Decision(single(src.address), action, src.until, "engine", f"{trigger}: {reason}", now)
        ]

    def _move(self, src: Source, state: State) -> None:
        self.states[src.state] -= 1
        self.states[state] += 1
        src.state = state

    def _forget(self, src: Source) -> None:
        del self.sources[src.address]
        self.states[src.state] -= 1

    def _bound(self) -> None:
        """Make room for one more: forget the least recently seen watched/released records
        (deflected, probing and blocked ones never; with none idle the table grows)."""
        excess = len(self.sources) + 1 - self.policy.max_sources
        if excess <= 0 or not (self.states[State.WATCHED] + self.states[State.RELEASED]):
            return
        # Evict a tenth more than needed at once so the O(n) scan is rare.
        idle = (s for s in self.sources.values() if s.state in (State.WATCHED, State.RELEASED))
        n = excess + self.policy.max_sources // 10
        for src in heapq.nsmallest(n, idle, key=lambda s: s.last_seen):
            self._forget(src)

    def restore(self, sources: Iterable[Source], manual: Iterable[Decision]) -> None:
        """Rebuild state from the store (after a restart)."""
        for src in sources:
            if not self.protected(src.address):
                old = self.sources.get(src.address)
                if old is not None:
                    self._forget(old)
                self.sources[src.address] = src
                self.states[src.state] += 1
        self._rearm_all()
        for dec in manual:
            if dec.action is Action.ALLOW:
                if dec.target not in self.allow:
                    self.allow.append(dec.target)
            else:
                self.manual[dec.target] = dec

    # -- views -----------------------------------------------------------------------------
    def counts(self) -> dict[Action, int]:
        """What active() would yield, by action, without walking the sources."""
        out = dict.fromkeys((Action.DEFLECT, Action.BLOCK, Action.ALLOW), 0)
        out[Action.BLOCK] = self.states[State.BLOCKED]
        out[Action.DEFLECT] = self.states[State.DEFLECTED] + self.states[State.PROBING]
        for dec in self.manual.values():
            out[dec.action] = out.get(dec.action, 0) + 1
        out[Action.ALLOW] += len(self.allow)
        return out

    def active(self) -> Iterator[Decision]:
        """Every decision currently in force (what the firewall should hold)."""
        for src in self.sources.values():
            held = _in_force(src)
            if held is not None:
                yield held
        yield from self.manual.values()
        for net in self.allow:
            yield Decision(net, Action.ALLOW, None, "config", "allowlist", 0.0)

    def holding(self, target: Network) -> list[Decision]:
        """What is still in force for exactly this target, weakest first: after a release
        of one hold (a fleet block lapsing, a probe ending) the firewall must keep the
        others (the engine's own block, an operator's or another node's), since a
        release clears the target from every set."""
        out: list[Decision] = []
        if target.num_addresses == 1:
            src = self.sources.get(target.network_address)
            held = None if src is None else _in_force(src)
            if held is not None:
                out.append(held)
        dec = self.manual.get(target)
        if dec is not None:
            out.append(dec)
        if target in self.allow:
            out.append(Decision(target, Action.ALLOW, None, "config", "allowlist", 0.0))
        strength = {Action.DEFLECT: 0, Action.BLOCK: 1, Action.ALLOW: 2}
        return sorted(out, key=lambda d: strength.get(d.action, -1))


def _in_force(src: Source) -> Decision | None:
    if src.state not in (State.DEFLECTED, State.BLOCKED, State.PROBING):
        return None
    action = Action.BLOCK if src.state is State.BLOCKED else Action.DEFLECT
    reason = src.reasons[-1] if src.reasons else ""
    return Decision(single(src.address), action, src.until, "engine", reason, src.since)


def block_trigger(d: Decision) -> Trigger | None:
    """What put the engine's block ``d`` in force (QUIET, QUIT, DEFLECT_TIMEOUT), read
    from its reason; None for anything else (an operator's block, a deflect...)."""
    if d.action is not Action.BLOCK or d.origin != "engine":
        return None
    for trigger, why in BLOCK_WHY.items():
        if d.reason in (why, f"{trigger}: {why}"):
            return trigger
    return None


def address(text: str) -> Address:
    return ipaddress.ip_address(text)
