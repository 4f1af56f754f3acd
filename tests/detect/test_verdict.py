"""The policy's fast paths (one table lookup per event, levels memoised by evidence
counts) against a plain model of the rules, over random event streams."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta

import pytest

from sipdeflect.decisions import Level
from sipdeflect.detect.events import Event, EventKind
from sipdeflect.detect.swarm import SwarmPolicy
from sipdeflect.detect.verdict import Evidence, Policy, Verdicts


class Model:
    """The policy as its comments state it, with no shortcuts."""

    def __init__(self, p: Policy) -> None:
        self.p = p
        self.times: dict[object, dict[Evidence, list[float]]] = {}
        self.level: dict[object, Level] = {}
        self.probed: dict[object, float] = {}
        self.trusted: dict[object, float] = {}
        self.since: dict[object, float] = {}  # when its level last rose

    def feed(self, ev: Event) -> tuple[Level, bool] | None:
        p, now, src = self.p, ev.time.timestamp(), ev.source
        if ev.kind is EventKind.AUTH_SUCCEEDED and ev.verified:
            self.trusted[src] = max(self.trusted.get(src, 0.0), now + p.trust_for)
            self.times.setdefault(src, {}).pop(Evidence.UNPROVEN, None)
            return None
        if ev.kind is EventKind.ATTACKED_ACCOUNT and now < self.trusted.get(src, 0.0):
            return None  # its own account, likely: it logged in (swarm.known)
        cls = p.evidence.get((ev.kind, ev.verified))
        if cls is None:
            return None
        times = self.times.setdefault(src, {})
        level = self.level.setdefault(src, Level.NONE)
        if level and now - self.since[src] >= p.window:
            level = self.level[src] = Level.NONE  # judged afresh a window after its rise
        if cls is Evidence.UNPROVEN and now < self.trusted.get(src, 0.0):
            return None
        probing = cls is Evidence.UNPROVEN and p.probe_at > 0 and level < Level.SUSPECT
        cap = max((r.level for r in p.rules if cls in r.needs), default=Level.NONE)
        if level >= cap and not probing:
            return None
        mine = times.setdefault(cls, [])
        mine += [now] * p.weights.get(ev.kind, 1)
        del mine[: max(0, len(mine) - p.keep().get(cls, 1))]
        for ts in times.values():
            ts[:] = [t for t in ts if t > now - p.window]
        for rule in p.rules:
            if all(len(times.get(c, [])) >= n for c, n in rule.needs.items()):
                new = rule.level
                break
        else:
            new = Level.NONE
        if new > level:
            self.level[src] = new
            self.since[src] = now
            if not (ev.kind is EventKind.ATTACKED_ACCOUNT and probing and new <= Level.WATCH):
                return new, False
        if probing and now - self.probed.get(src, float("-inf")) >= p.probe_window:
            if sum(1 for t in mine if t > now - p.probe_window) >= p.probe_at:
                self.probed[src] = now
                return self.level[src], True
        return None


# The swarm rule (per-prefix counts over many sources) is held to its own model in
# test_swarm.py; here the random streams' one /24 would trip it.
NO_PREFIX = SwarmPolicy(prefix_sources=0)
POLICIES = [
    Policy(swarm=NO_PREFIX),
    Policy(probe_at=0, swarm=NO_PREFIX),
    Policy(window=30, probe_window=10, probe_at=2, swarm=NO_PREFIX),
    Policy(window=5, trust_for=20, swarm=NO_PREFIX),
    Policy(window=9, probe_window=3, probe_at=2, swarm=NO_PREFIX),  # steps on the horizon
]


@pytest.mark.parametrize("policy", POLICIES)
def test_verdicts_match_the_plain_model(policy: Policy) -> None:
    rnd = random.Random(7)
    kinds = list(EventKind)
    for _ in range(60):
        srcs = [ipaddress.ip_address(f"192.0.2.{i}") for i in range(1, rnd.randrange(2, 12))]
        t = datetime(2024, 1, 1, tzinfo=UTC)
        v, m = Verdicts(policy), Model(policy)
        for _ in range(rnd.randrange(1, 300)):
            t += timedelta(seconds=rnd.choice([0, 0.5, 3, 9, 40, 200, 700]))
            ev = Event(
                t, rnd.choice(kinds), rnd.choice(srcs), None, None, "x", "", rnd.random() < 0.5
            )
            got = v.feed(ev)
            assert (None if got is None else (got.level, got.probe)) == m.feed(ev)
        for s in srcs:
            assert v.level(s) == m.level.get(s, Level.NONE)


def test_a_source_that_comes_back_after_the_window_is_flagged_again() -> None:
    """Levels used to stick for good, so an attacker whose block lapsed was never flagged
    (and deflected, then blocked longer) again when it came back."""
    v = Verdicts(Policy())
    a = ipaddress.ip_address("203.0.113.9")
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def failures(start: datetime) -> list[Level | None]:
        out = []
        for i in range(5):
            when = start + timedelta(seconds=i)
            got = v.feed(Event(when, EventKind.AUTH_FAILED_WITH_CREDENTIALS, a, 5060, "1001",
                               "x", "", True))  # fmt: skip
            out.append(None if got is None else got.level)
        return out

    assert failures(t) == [Level.SUSPECT, None, None, None, Level.ATTACKER]
    assert failures(t + timedelta(minutes=5)) == [None] * 5  # within the window: nothing new
    assert failures(t + timedelta(hours=2)) == [Level.SUSPECT, None, None, None, Level.ATTACKER]
