"""fleet.rules (pure): what is shared, what a receiver accepts, what it refuses as hostile;
and Engine.remote_decision: local protection wins over the fleet."""

from __future__ import annotations

import ipaddress

import pytest

from sipdeflect.decisions import Action, Decision, Level, single
from sipdeflect.engine import Engine
from sipdeflect.fleet.rules import Refused, Row, Rules, basis, judge, latest, to_share

NOW = 1_000_000.0
RULES = Rules(node="pbx2")
A = ipaddress.ip_address("203.0.113.66")


def row(**kw: object) -> Row:
    base: dict[str, object] = {
        "seq": 7,
        "node": "pbx1",
        "target": "203.0.113.66/32",
        "action": "block",
        "until": NOW + 3600,
        "basis": "attacker",
        "reason": "quiet: went quiet in the decoy",
        "at": NOW - 1,
    }
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


def dec(action: Action, reason: str, origin: str = "engine") -> Decision:
    return Decision(single(A), action, NOW + 60, origin, reason, NOW)


def test_basis_names_how_a_decision_was_proven() -> None:
    assert basis(dec(Action.DEFLECT, "detected: auth failed"), Level.ATTACKER) == "attacker"
    assert basis(dec(Action.DEFLECT, "detected: many"), Level.WATCH) == "watch"
    assert basis(dec(Action.BLOCK, "quit: it was listening"), Level.WATCH) == "quit"
    assert basis(dec(Action.DEFLECT, "probe: forgeable"), Level.WATCH) == "probe"
    assert basis(dec(Action.BLOCK, "x", origin="cli"), None) == "operator"
    assert basis(dec(Action.RELEASE, "expired: block expired"), None) == "release"


def test_share_only_proven_decisions_and_never_what_came_from_the_fleet() -> None:
    assert to_share(dec(Action.DEFLECT, "detected: a"), Level.ATTACKER, RULES) == "attacker"
    assert to_share(dec(Action.DEFLECT, "detected: a"), Level.WATCH, RULES) is None
    assert to_share(dec(Action.DEFLECT, "probe: forgeable"), Level.WATCH, RULES) is None
    assert to_share(dec(Action.RELEASE, "probe-timeout: left alone"), None, RULES) is None
    assert to_share(dec(Action.RELEASE, "expired: block expired"), None, RULES) == "release"
    assert to_share(dec(Action.BLOCK, "pbx1: x", origin="fleet:pbx1"), None, RULES) is None
    assert to_share(dec(Action.ALLOW, "customer", origin="cli"), None, RULES) is None
    watchers = Rules(node="n", share=frozenset({"watch"}))
    assert to_share(dec(Action.DEFLECT, "detected: a"), Level.WATCH, watchers) == "watch"


def test_an_accepted_row_becomes_a_block_from_its_node() -> None:
    d = judge(row(action="deflect"), RULES, NOW)
    assert isinstance(d, Decision)
    assert (d.action, d.origin, d.until) == (Action.BLOCK, "fleet:pbx1", NOW + 3600)
    assert d.reason.startswith("pbx1: ")
    rel = judge(row(action="release", until=None, basis="release"), RULES, NOW)
    assert isinstance(rel, Decision)
    assert rel.action is Action.RELEASE


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"node": "pbx2"}, None),  # our own row
        ({"basis": "watch"}, None),  # mere watch levels are not accepted by default
        ({"basis": "probe"}, None),
        ({"until": NOW - 1}, None),  # over already (catching up through history)
    ],
)
def test_rows_not_for_us_are_ignored_quietly(kw: dict[str, object], why: None) -> None:
    assert judge(row(**kw), RULES, NOW) is why


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"target": "0.0.0.0/0"}, "wider than /24"),
        ({"target": "10.0.0.0/8"}, "wider than /24"),
        ({"target": "::/0"}, "wider than /48"),
        ({"target": "203.0.113.999"}, "malformed address"),
        ({"target": "203.0.113.66/24"}, "malformed address"),  # host bits set
        ({"target": "x" * 5000}, "malformed address"),
        ({"target": "127.0.0.1/32"}, "special address"),
        ({"target": "224.0.0.1/32"}, "special address"),
        ({"until": NOW + 10 * 365 * 86400}, "beyond max_ttl"),
        ({"until": None}, "no expiry"),
        ({"action": "allow"}, "never taken from the fleet"),
        ({"action": "nuke"}, "unknown action"),
        ({"basis": "trust-me"}, "unknown basis"),
        ({"node": "evil\nnode"}, "malformed node name"),
        ({"at": NOW + 86400}, "in the future"),
    ],
)
def test_hostile_rows_are_refused_with_a_reason(kw: dict[str, object], why: str) -> None:
    got = judge(row(**kw), RULES, NOW)
    assert isinstance(got, Refused), got
    assert why in got.why
    assert "\n" not in got.line()


def test_accept_from_limits_the_nodes_taken() -> None:
    only3 = Rules(node="pbx2", accept_from=frozenset({"pbx3"}))
    assert judge(row(), only3, NOW) is None
    assert isinstance(judge(row(node="pbx3"), only3, NOW), Decision)


def fleet_block(target: str = "203.0.113.66/32", node: str = "pbx1") -> Decision:
    d = judge(row(target=target, node=node), RULES, NOW)
    assert isinstance(d, Decision)
    return d


def test_remote_block_is_held_and_released_only_by_its_node() -> None:
    e = Engine()
    d = fleet_block()
    assert e.remote_decision(d, NOW) == [d]
    assert e.remote_decision(d, NOW) == []  # a repeat (catch-up after reconnect): nothing
    assert any(x.target == d.target and x.action is Action.BLOCK for x in e.active())
    other = judge(row(node="pbx3", action="release", until=None, basis="release"), RULES, NOW)
    assert isinstance(other, Decision)
    assert e.remote_decision(other, NOW) == []  # pbx3 cannot release pbx1's block
    mine = judge(row(action="release", until=None, basis="release"), RULES, NOW)
    assert isinstance(mine, Decision)
    assert [x.action for x in e.remote_decision(mine, NOW)] == [Action.RELEASE]
    assert not any(x.action is Action.BLOCK for x in e.active())


def test_local_allowlist_own_addresses_and_operator_win_over_the_fleet() -> None:
    e = Engine(allow=[ipaddress.ip_network("203.0.113.64/28")], own=[A])
    assert e.remote_decision(fleet_block(), NOW) == []
    e2 = Engine(own=[ipaddress.ip_address("203.0.113.10")])
    assert e2.remote_decision(fleet_block("203.0.113.0/24"), NOW) == []  # contains own
    e3 = Engine()
    e3.manual_decision(Action.DEFLECT, single(A), NOW, duration=60)
    assert e3.remote_decision(fleet_block(), NOW) == []  # the operator's decision stays
    assert e3.manual[single(A)].origin == "cli"


def test_a_remote_release_never_touches_a_local_decision() -> None:
    e = Engine()
    e.manual_decision(Action.BLOCK, single(A), NOW, duration=60)
    rel = judge(row(action="release", until=None, basis="release"), RULES, NOW)
    assert isinstance(rel, Decision)
    assert e.remote_decision(rel, NOW) == []
    assert e.manual[single(A)].origin == "cli"


def test_catching_up_applies_each_targets_outcome_not_every_step() -> None:
    rows = [
        row(seq=1, target="203.0.113.1/32"),
        row(seq=2, target="203.0.113.2/32"),
        row(seq=3, target="203.0.113.1/32", action="release", until=None),
        row(seq=4, target="203.0.113.2/32", node="pbx3"),
    ]
    assert [r.seq for r in latest(rows)] == [2, 3, 4]
