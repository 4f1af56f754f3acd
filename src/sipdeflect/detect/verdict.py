# Who would be flagged: a pure, table-driven policy from Events to per-source levels
# (watch < suspect < attacker, the engine's Level). Each event is first classed as evidence
# (EVIDENCE table): CREDENTIALED (credentials answered the PBX's own challenge and failed:
# a spoofer never sees the challenge, so it cannot produce this), PROVEN (misbehaviour
# from an address proven by TCP or a challenge round trip), UNPROVEN (anything a forged
# UDP source could cause), each with a weight (WEIGHTS). A source reaches the highest level
# whose rule is met within the sliding window (RULES). Nothing UNPROVEN alone lifts a source
# above "watch", so forged packets cannot get a bystander flagged. Enough UNPROVEN weight
# in a minute (PROBE) asks the engine for a *probe* instead: a short deflect to the decoy
# that only becomes a block if the source proves it is listening by quitting on the decoy's
# answer (engine.py). A source whose credentials the PBX accepted (AUTH_SUCCEEDED) is a
# customer: for `trust_for` its UNPROVEN evidence is ignored, so nobody can get a phone
# that logs in probed or flagged by forging packets from its address.
# A level lasts a window from when it was reached; then the source is judged afresh, so one
# that returns after its block lapsed is flagged again (and the engine blocks it longer).
# Distributed brute force (swarm.py): a verified failed login on an account or prefix that
# many addresses are failing on flags its source at once, unless it ever logged in.
# Memory: a capped table of sources (watch-level ones are forgotten first).
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Address, Event, EventKind
from sipdeflect.detect.swarm import Swarm, SwarmPolicy

_SUCCEEDED = EventKind.AUTH_SUCCEEDED
_CRED = EventKind.AUTH_FAILED_WITH_CREDENTIALS
_ATTACKED = EventKind.ATTACKED_ACCOUNT
# What feed() needs to know about one (kind, verified): (class index, weight, timestamps
# kept, level cap, unproven); see Verdicts.retune().
_Info = tuple[int, int, int, Level, bool]
_SUSPECT = Level.SUSPECT


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
    EventKind.CHALLENGES_IGNORED,
    EventKind.ATTACKED_ACCOUNT,
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


# Weight of one event: how much evidence of its class it counts as. A scanner's
# User-Agent or a burst of ignored challenges say more than one 404.
WEIGHTS: dict[EventKind, int] = {
    EventKind.SCANNER_USER_AGENT: 2,
    EventKind.ENUMERATION: 2,
    EventKind.CHALLENGES_IGNORED: 2,
    EventKind.REQUEST_FLOOD: 4,
    # One request for an account under distributed attack is enough for a probe (the
    # default probe_at): the bot's credentialed attempt then meets the decoy, not the PBX.
    EventKind.ATTACKED_ACCOUNT: 4,
}


@dataclass(frozen=True, slots=True)
class LevelRule:
    level: Level
    needs: Mapping[Evidence, int]  # at least this much of each (weighted), within the window
    reason: str


# Checked in order; the first rule met gives the level. Highest levels first.
RULES: tuple[LevelRule, ...] = (
    LevelRule(Level.ATTACKER, {Evidence.CREDENTIALED: 5}, "5 failed logins after a challenge"),
    # The failed login proves the address is the sender's (it saw our challenge), so the
    # scanner traits it showed before (User-Agent, ignored challenges) are its own too.
    LevelRule(
        Level.ATTACKER,
        {Evidence.CREDENTIALED: 1, Evidence.UNPROVEN: 2},
        "a failed login after a challenge, from a scanner",
    ),
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
    weights: Mapping[EventKind, int] = field(default_factory=lambda: WEIGHTS)
    max_sources: int = 20_000  # sources remembered (~700 B each); watch-level forgotten first
    # UNPROVEN weight within probe_window that asks for a probe (0: never probe). The
    # defaults catch the write-up's flooder and svwar -m INVITE within a few packets.
    probe_at: int = 4
    probe_window: float = 60.0
    trust_for: float = 86_400.0  # a login accepted by the PBX shields a source this long
    swarm: SwarmPolicy = field(default_factory=SwarmPolicy)  # distributed brute force

    def keep(self) -> dict[Evidence, int]:
        """How many timestamps per evidence class the rules (and the probe) can need."""
        out: dict[Evidence, int] = {}
        for rule in self.rules:
            for ev, n in rule.needs.items():
                out[ev] = max(out.get(ev, 0), n)
        if self.probe_at:
            out[Evidence.UNPROVEN] = max(out.get(Evidence.UNPROVEN, 0), self.probe_at)
        return out


@dataclass(frozen=True, slots=True)
class Flag:
    """A source rose to ``level`` at ``time`` because of ``reason`` (the last event), or,
    with ``probe``, gathered enough forgeable evidence to be worth a probe (level unchanged)."""

    source: Address
    level: Level
    time: float  # epoch seconds
    reason: str
    event: Event
    probe: bool = False


class _State:
    __slots__ = (
        "counts",
        "first",
        "last",
        "level",
        "probed",
        "reason",
        "since",
        "times",
        "trusted_until",
    )

    def __init__(self, now: float, classes: int) -> None:
        # Timestamps per evidence class (indexed like Verdicts._classes), oldest first.
        self.times: tuple[list[float], ...] = tuple([] for _ in range(classes))
        self.counts: dict[str, int] = {}  # event kinds seen, for reports
        self.level = Level.NONE
        self.since = now
        self.first = now
        self.last = now
        self.reason = ""
        self.trusted_until = 0.0
        self.probed = float("-inf")  # when the last probe was asked for


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
        self.swarm = Swarm()
        self.retune(policy or Policy())
        self._state: dict[Address, _State] = {}
        self.forgotten = 0
        self._last_time: datetime | None = None  # the last event's time, and as a number
        self._last_ts = 0.0

    def retune(self, policy: Policy) -> None:
        """Use ``policy`` from now on (SIGHUP); what each source did so far is kept."""
        self.policy = policy
        # "Never logged in" means what the customer's shield means: within trust_for.
        self.swarm.retune(dataclasses.replace(policy.swarm, login_for=policy.trust_for))
        keep = policy.keep()
        # The highest level a rule that counts each evidence class can give: more of that
        # class cannot lift a source already there (only other rules could, unchanged).
        cap: dict[Evidence, Level] = dict.fromkeys(Evidence, Level.NONE)
        for rule in policy.rules:
            for cls in rule.needs:
                cap[cls] = max(cap[cls], rule.level)
        # Everything feed() needs to know about an event, looked up once per event:
        # kind -> [verified] -> (class index, weight, timestamps kept, level cap, unproven),
        # None for a (kind, verified) that is not evidence.
        self._classes: tuple[Evidence, ...] = tuple(Evidence)
        index = {cls: i for i, cls in enumerate(self._classes)}
        self._unproven = index[Evidence.UNPROVEN]
        self._info: dict[EventKind, tuple[_Info | None, _Info | None]] = {}
        for (kind, proven), cls in policy.evidence.items():
            info = (
                index[cls],
                policy.weights.get(kind, 1),
                keep.get(cls, 1),
                cap[cls],
                cls is Evidence.UNPROVEN,
            )
            pair = self._info.get(kind, (None, None))
            self._info[kind] = (pair[0], info) if proven else (info, pair[1])
        self._probe_on = policy.probe_at > 0
        # The level depends only on how many timestamps each class holds, and each class
        # holds at most its `keep`: levels are memoised by those counts (see _level).
        self._levels: dict[tuple[int, ...], tuple[Level, str]] = {}

    def feed(self, ev: Event) -> Flag | None:
        """Account one event; a Flag when its source reaches a higher level (or, once per
        probe window, enough forgeable evidence for a probe)."""
        kind = ev.kind
        if kind is _SUCCEEDED and ev.verified:
            self._trust(ev)
            return None
        pair = self._info.get(kind)
        info = None if pair is None else pair[1 if ev.verified else 0]
        if info is None:
            return None
        ci, weight, keep, cap, unproven = info
        # (a log's events share their time objects: a second's lines hold the same one)
        when = ev.time
        if when is self._last_time:
            now = self._last_ts
        else:
            now = self._last_ts = when.timestamp()
            self._last_time = when
        if kind is _ATTACKED and self.swarm.known(ev.source, now):
            return None  # it logged in before: a request for its own account, likely
        st = self._state.get(ev.source)
        if st is None:
            st = self._add(ev.source, now)
        else:
            if now > st.last:  # noqa: PLR1730 - a branch is cheaper than max() per event
                st.last = now
            if st.level and now - st.since >= self.policy.window:
                # What raised it has left the window: judge it afresh, so a source that
                # comes back after its block lapsed is flagged (and deflected) again.
                st.level = Level.NONE
        # A failure counts towards distributed attack until its source is an attacker (it
        # is counted by then, and deflected: the daemon's PBX never sees it fail again);
        # skipping the rest keeps a flood's policy cost near what it was (~1 us/event).
        swarm: str | None = None
        if kind is _CRED and ev.verified and st.level < Level.ATTACKER:
            swarm = self.swarm.failed(ev.account, ev.source, now)
        counts = st.counts
        counts[kind] = counts.get(kind, 0) + 1
        if unproven:
            if now < st.trusted_until:
                return None  # a customer the PBX let in: forged packets cannot touch it
            probing = self._probe_on and st.level < _SUSPECT
        else:
            probing = False
        if st.level >= cap and not probing:
            return None  # more of this evidence cannot lift it (nor is it kept)
        p = self.policy
        all_times = st.times
        times = all_times[ci]
        if weight == 1:
            times.append(now)
        else:
            times.extend([now] * weight)
        if len(times) > keep:
            del times[: len(times) - keep]
        horizon = now - p.window
        for ts in all_times:
            while ts and ts[0] <= horizon:
                del ts[0]
        level, reason = self._level(st)
        if swarm is not None and level < Level.ATTACKER:
            level, reason = Level.ATTACKER, swarm
        if level > st.level:
            st.level, st.since, st.reason = level, now, reason
            # A request for an account under distributed attack asks for its probe at
            # once: the bot's next packet (its credentials) must meet the decoy.
            if not (kind is _ATTACKED and probing and level <= Level.WATCH):
                return Flag(ev.source, level, now, reason, ev)
        if probing and now - st.probed >= p.probe_window:
            recent = sum(1 for t in times if t > now - p.probe_window)
            if recent >= p.probe_at:
                st.probed = now
                why = f"forgeable evidence (weight {recent} in {p.probe_window:g}s): probe"
                return Flag(ev.source, st.level, now, why, ev, probe=True)
        return None

    def _add(self, source: Address, now: float) -> _State:
        self._bound()
        st = self._state[source] = _State(now, len(self._classes))
        return st

    def _trust(self, ev: Event) -> None:
        now = ev.time.timestamp()
        self.swarm.logged_in(ev.source, now)
        st = self._state.get(ev.source)
        if st is None:
            st = self._add(ev.source, now)
        st.trusted_until = max(st.trusted_until, now + self.policy.trust_for)
        st.times[self._unproven].clear()  # what was forged before counts for nothing

    def trusted(self, source: Address, now: float) -> bool:
        st = self._state.get(source)
        return st is not None and now < st.trusted_until

    def _level(self, st: _State) -> tuple[Level, str]:
        key = tuple(map(len, st.times))
        got = self._levels.get(key)
        if got is None:
            got = self._levels[key] = self._rule_level(dict(zip(self._classes, key, strict=True)))
        return got

    def _rule_level(self, counts: Mapping[Evidence, int]) -> tuple[Level, str]:
        """The level and reason of the first rule that these evidence counts meet."""
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
            if st.level <= Level.WATCH and not st.trusted_until:
                victim = addr  # (a customer's trust is kept: it shields it from forgery)
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
