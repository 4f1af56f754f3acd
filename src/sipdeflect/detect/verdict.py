# Who would be flagged: a pure, table-driven policy from Events to per-source levels
# (watch < suspect < attacker, the engine's Level). Each event is first classed as evidence
# (EVIDENCE table): CREDENTIALED (credentials answered the PBX's own challenge and failed:
# a spoofer never sees the challenge, so it cannot produce this), PROVEN (misbehaviour
# from an address proven by TCP or a challenge round trip), UNPROVEN (anything a forged
# UDP source could cause). A source reaches the highest level whose rule is met within
# the sliding window (RULES). By default nothing UNPROVEN lifts a source above "watch", so
# forged packets cannot get a bystander deflected. Memory: a capped table of sources
# (watch-level ones are forgotten first).
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Address, Event, EventKind


class Evidence(StrEnum):
    CREDENTIALED = "credentialed"
    PROVEN = "proven"
    UNPROVEN = "unproven"


_ABUSE = (
    EventKind.AUTH_FAILED,
    EventKind.UNKNOWN_ACCOUNT,
    EventKind.ACL_REJECT,
    EventKind.UNKNOWN_EXTENSION,
    EventKind.REJECTED,
    EventKind.REQUEST_FLOOD,
    EventKind.ENUMERATION,
    EventKind.SCANNER_USER_AGENT,
)
# (kind, verified) -> evidence class. Kinds absent here (challenge_sent, request_seen) are
# context for detectors, not evidence against a source.
EVIDENCE: dict[tuple[EventKind, bool], Evidence] = {
    (EventKind.AUTH_FAILED_WITH_CREDENTIALS, True): Evidence.CREDENTIALED,
    (EventKind.AUTH_FAILED_WITH_CREDENTIALS, False): Evidence.UNPROVEN,
    (EventKind.LOG_INJECTION, True): Evidence.UNPROVEN,
    (EventKind.LOG_INJECTION, False): Evidence.UNPROVEN,
    **{(k, True): Evidence.PROVEN for k in _ABUSE},
    **{(k, False): Evidence.UNPROVEN for k in _ABUSE},
}


@dataclass(frozen=True, slots=True)
class LevelRule:
    level: Level
    needs: Mapping[Evidence, int]  # at least this many of each, within the window
    reason: str


# Checked in order; the first rule met gives the level. Highest levels first.
RULES: tuple[LevelRule, ...] = (
    LevelRule(Level.ATTACKER, {Evidence.CREDENTIALED: 5}, "5 failed logins after a challenge"),
    LevelRule(
        Level.ATTACKER,
        {Evidence.CREDENTIALED: 2, Evidence.PROVEN: 3},
        "failed logins after a challenge, and proven scanning",
    ),
    LevelRule(Level.SUSPECT, {Evidence.CREDENTIALED: 1}, "a failed login after a challenge"),
    LevelRule(Level.SUSPECT, {Evidence.PROVEN: 5}, "scanning from a proven address"),
    LevelRule(Level.WATCH, {Evidence.PROVEN: 1}, "a rejected request"),
    LevelRule(Level.WATCH, {Evidence.UNPROVEN: 1}, "unproven (forgeable) evidence"),
)


@dataclass(frozen=True, slots=True)
class Policy:
    window: float = 600.0  # seconds of evidence that count
    rules: tuple[LevelRule, ...] = RULES
    evidence: Mapping[tuple[EventKind, bool], Evidence] = field(default_factory=lambda: EVIDENCE)
    max_sources: int = 20_000  # sources remembered (~700 B each); watch-level forgotten first

    def keep(self) -> dict[Evidence, int]:
        """How many timestamps per evidence class the rules can ever need."""
        out: dict[Evidence, int] = {}
        for rule in self.rules:
            for ev, n in rule.needs.items():
                out[ev] = max(out.get(ev, 0), n)
        return out


@dataclass(frozen=True, slots=True)
class Flag:
    """A source rose to ``level`` at ``time`` because of ``reason`` (the last event)."""

    source: Address
    level: Level
    time: float  # epoch seconds
    reason: str
    event: Event


class _State:
    __slots__ = ("counts", "first", "last", "level", "reason", "since", "times")

    def __init__(self, now: float) -> None:
        self.times: dict[Evidence, list[float]] = {}
        self.counts: dict[str, int] = {}  # event kinds seen, for reports
        self.level = Level.NONE
        self.since = now
        self.first = now
        self.last = now
        self.reason = ""


@dataclass(frozen=True, slots=True)
class Summary:
    source: Address
    level: Level
    since: float
    first: float
    last: float
    reason: str
    counts: Mapping[str, int]


class Verdicts:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._keep = self.policy.keep()
        # The highest level a rule that counts each evidence class can give: more of that
        # class cannot lift a source already there (only other rules could, unchanged).
        self._cap: dict[Evidence, Level] = {}
        for rule in self.policy.rules:
            for cls in rule.needs:
                self._cap[cls] = max(self._cap.get(cls, Level.NONE), rule.level)
        self._state: dict[Address, _State] = {}
        self.forgotten = 0

    def feed(self, ev: Event) -> Flag | None:
        """Account one event; a Flag when its source reaches a higher level."""
        cls = self.policy.evidence.get((ev.kind, ev.verified))
        if cls is None:
            return None
        now = ev.time.timestamp()
        st = self._state.get(ev.source)
        if st is None:
            self._bound()
            st = self._state[ev.source] = _State(now)
        st.last = max(st.last, now)
        counts = st.counts
        counts[ev.kind] = counts.get(ev.kind, 0) + 1
        if st.level >= self._cap.get(cls, Level.NONE):
            return None  # more of this evidence cannot lift it (nor is it kept)
        times = st.times.get(cls)
        if times is None:
            times = st.times[cls] = []
        times.append(now)
        if len(times) > self._keep.get(cls, 1):
            del times[0]
        horizon = now - self.policy.window
        for ts in st.times.values():
            while ts and ts[0] <= horizon:
                del ts[0]
        level, reason = self._level(st)
        if level > st.level:
            st.level, st.since, st.reason = level, now, reason
            return Flag(ev.source, level, now, reason, ev)
        return None

    def _level(self, st: _State) -> tuple[Level, str]:
        counts = {cls: len(ts) for cls, ts in st.times.items()}
        for rule in self.policy.rules:
            if all(counts.get(cls, 0) >= n for cls, n in rule.needs.items()):
                return rule.level, rule.reason
        return Level.NONE, ""

    def _bound(self) -> None:
        """Make room for one more source: forget the oldest watch-level one (dict order is
        first-seen order; one hash per event instead of an LRU touch), or, when none among
        the 64 oldest is at watch, the oldest of all. Suspects and attackers hold evidence
        a spoofer cannot forge, so floods of forged sources churn only watch entries."""
        if len(self._state) < self.policy.max_sources:
            return
        victim: Address | None = None
        for i, (addr, st) in enumerate(self._state.items()):
            if victim is None:
                victim = addr
            if st.level <= Level.WATCH:
                victim = addr
                break
            if i >= 64:
                break
        if victim is not None:
            del self._state[victim]
            self.forgotten += 1

    def level(self, source: Address) -> Level:
        st = self._state.get(source)
        return Level.NONE if st is None else st.level

    def __len__(self) -> int:
        return len(self._state)

    def summaries(self, at_least: Level = Level.WATCH) -> Iterator[Summary]:
        """Sources at or above a level, highest level first, then earliest."""
        rows = [(a, s) for a, s in self._state.items() if s.level >= at_least]
        rows.sort(key=lambda r: (-r[1].level, r[1].since))
        for addr, st in rows:
            yield Summary(addr, st.level, st.since, st.first, st.last, st.reason, dict(st.counts))
