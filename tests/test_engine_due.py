"""The engine's deadline heap (tick costs what is due) against the rule it replaced: a
scan of every source at every tick. Hypothesis drives both through the same random
stories (detections, probes, decoy packets with and without a closing answer, operator
releases, ticks at whole seconds) and they must decide the same things at the same times
(in any order within one tick: each decision is about its own source).
The reference scan below is the engine's tick before the heap, kept as the oracle."""

from __future__ import annotations

import heapq
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from sipdeflect.decisions import Action, Decision, Level
from sipdeflect.engine import Engine, Policy, State, Trigger

T0 = 1_750_000_000.0
ADDRS = [ipaddress.ip_address(f"203.0.113.{i}") for i in range(1, 6)]
POLICY = Policy(
    quiet_after=4.0, max_deflect=20.0, block_base=30.0, forget_after=90.0, probe_every=40.0
)


class ScanEngine(Engine):
    """The engine with its old tick: every source checked at every call."""

    def tick(self, now: float) -> list[Decision]:
        out: list[Decision] = []
        p = self.policy
        forget = []
        for src in list(self.sources.values()):
            if src.state is State.DEFLECTED:
                heard = src.last_decoy if src.last_decoy is not None else src.since
                if now - heard >= p.quiet_after:
                    out += self._fire(src, Trigger.QUIET, now, "went quiet in the decoy")
                elif now - src.since >= p.max_deflect:
                    out += self._fire(src, Trigger.DEFLECT_TIMEOUT, now, "kept sending")
            elif src.state is State.PROBING:
                last, closed = src.last_decoy, src.closed_at
                if (
                    last is not None
                    and closed is not None
                    and last - closed <= p.probe_grace
                    and src.after_close <= p.probe_after
                    and now - last >= p.probe_quiet
                ):
                    why = "quit on the decoy's answer: it was listening, so it is the sender"
                    out += self._fire(src, Trigger.QUIT, now, why)
                elif now - src.since >= p.probe_for:
                    why = "no sign it received the decoy's answer: left alone"
                    out += self._fire(src, Trigger.PROBE_TIMEOUT, now, why)
            elif src.state is State.BLOCKED and src.until is not None and now >= src.until:
                out += self._fire(src, Trigger.EXPIRED, now, "block expired")
            elif (
                src.state in (State.RELEASED, State.WATCHED)
                and now - src.last_seen >= p.forget_after
            ):
                forget.append(src.address)
        for addr in forget:
            del self.sources[addr]
        return out


def same(a: list[Decision], b: list[Decision]) -> bool:
    """The same decisions; within one tick their order does not matter (one per source)."""
    return sorted(map(repr, a)) == sorted(map(repr, b))


op = st.tuples(
    st.sampled_from(["signal", "attack", "probe", "decoy", "close", "release", "tick"]),
    st.integers(0, len(ADDRS) - 1),
    st.integers(0, 6),  # seconds to move on before the operation
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, min_size=1, max_size=120))
def test_the_heap_decides_what_the_full_scan_decides(ops: list[tuple[str, int, int]]) -> None:
    new, old = Engine(POLICY), ScanEngine(POLICY)
    now = T0
    for kind, i, wait in ops:
        # Time passes in whole-second ticks, as the daemon's ticker runs.
        for _ in range(wait):
            now += 1.0
            assert same(new.tick(now), old.tick(now)), now - T0
        a = ADDRS[i]
        for eng in (new, old):
            if kind == "signal":
                got = eng.signal(a, Level.SUSPECT, "suspect", now)
            elif kind == "attack":
                got = eng.signal(a, Level.ATTACKER, "attacker", now)
            elif kind == "probe":
                got = eng.probe(a, "forgeable", now)
            elif kind in ("decoy", "close"):
                eng.decoy_seen(a, now + 0.1, closes=kind == "close")
                got = []
            elif kind == "release":
                got = eng.manual_decision(Action.RELEASE, ipaddress.ip_network(a), now)
            else:
                got = eng.tick(now + 0.5)
            if eng is new:
                first = got
            else:
                assert same(got, first), (kind, now - T0)
        assert {a: s.state for a, s in new.sources.items()} == {
            a: s.state for a, s in old.sources.items()
        }
        # The kept counts (the gauges' source) equal a walk of what is in force.
        walked = dict.fromkeys((Action.DEFLECT, Action.BLOCK, Action.ALLOW), 0)
        for d in new.active():
            walked[d.action] += 1
        assert new.counts() == walked
        assert sum(new.states.values()) == len(new.sources)
    for _ in range(400):  # and everything left runs out the same way
        now += 1.0
        assert same(new.tick(now), old.tick(now))
    assert set(new.sources) == set(old.sources)


def test_superseded_entries_never_pile_up() -> None:
    """A scanner that keeps sending in the decoy re-arms itself many times; the heap stays
    within twice the sources (plus slack) whatever the churn."""
    eng = Engine(POLICY)
    for n in range(3000):
        a = ipaddress.ip_address(0xCB007100 + n % 50)  # 203.0.113.0 + n % 50
        eng.signal(a, Level.ATTACKER, "attacker", T0 + n)
        eng.decoy_seen(a, T0 + n)
        eng.tick(T0 + n)
        eng.manual_decision(Action.RELEASE, ipaddress.ip_network(a), T0 + n)
    assert len(eng._due) <= 2 * len(eng.sources) + 1024
    assert heapq.nsmallest(1, eng._due)[0][0] >= T0


def test_a_tick_touches_only_what_is_due() -> None:
    """100k blocked sources, none due: a tick pops nothing and decides nothing."""
    eng = Engine(Policy(block_base=3600.0))
    for n in range(100_000):
        a = ipaddress.ip_address(0xC6120000 + n)  # 198.18.0.0/15, inside no real network
        eng.signal(a, Level.ATTACKER, "attacker", T0)
    eng.tick(T0 + POLICY.quiet_after + 20)  # all go quiet in the decoy: blocked
    assert all(s.state is State.BLOCKED for s in eng.sources.values())
    before = list(eng._due)
    assert eng.tick(T0 + 100) == []
    assert eng._due == before  # nothing was due: the heap was not even touched
