"""Decisions to firewall, for real: nftables in a namespace the test creates."""

from __future__ import annotations

import pytest

from sipdeflect.decisions import Action, Decision, parse_target
from sipdeflect.enforce import FirewallEnforcer
from sipdeflect.errors import UsageError
from sipdeflect.firewall.backend import Runner, get_backend
from sipdeflect.firewall.model import FirewallSettings, SetName
from sipdeflect.firewall.plan import plan_setup
from sipdeflect.lab.netns import Netns

T0 = 1_750_000_000.0


def _d(target: str, action: Action, until: float | None) -> Decision:
    return Decision(parse_target(target), action, until, "engine", "test", T0)


def test_enforce_and_reconcile_with_nftables(netns_ok: None) -> None:
    with Netns("enf") as ns:
        st = FirewallSettings()
        be = get_backend("nftables", st, Runner(netns=ns.name))
        be.apply(plan_setup(st))
        enf = FirewallEnforcer(be, clock=lambda: T0)
        enf.enforce(
            [
                _d("203.0.113.66", Action.DEFLECT, T0 + 375),
                _d("203.0.113.67", Action.BLOCK, T0 + 3600),
                _d("2001:db8::66", Action.BLOCK, T0 + 60),
                _d("198.51.100.0/24", Action.ALLOW, None),
                _d("203.0.113.68", Action.BLOCK, T0 + 60),
                _d("203.0.113.68", Action.RELEASE, None),  # later decision wins
            ]
        )
        got = {(r.set, str(r.target)): r for r in be.list()}
        assert set(got) == {
            (SetName.DEFLECT, "203.0.113.66/32"),
            (SetName.BLOCK, "203.0.113.67/32"),
            (SetName.BLOCK, "2001:db8::66/128"),
            (SetName.ALLOW, "198.51.100.0/24"),
        }
        assert got[(SetName.DEFLECT, "203.0.113.66/32")].timeout == 375
        assert got[(SetName.BLOCK, "203.0.113.67/32")].timeout == 3600
        assert got[(SetName.ALLOW, "198.51.100.0/24")].timeout is None
        # The scanner gave up in the decoy: blocked; deflect entry left is harmless.
        enf.enforce([_d("203.0.113.66", Action.BLOCK, T0 + 3600)])
        assert (SetName.BLOCK, "203.0.113.66/32") in {(r.set, str(r.target)) for r in be.list()}
        # Restart: exactly what is in force, nothing stale.
        enf.reconcile(
            [_d("203.0.113.66", Action.BLOCK, T0 + 3000), _d("198.51.100.0/24", Action.ALLOW, None)]
        )
        assert {(r.set, str(r.target)) for r in be.list()} == {
            (SetName.BLOCK, "203.0.113.66/32"),
            (SetName.ALLOW, "198.51.100.0/24"),
        }


def test_never_loopback_or_multicast() -> None:
    enf = FirewallEnforcer(get_backend("dry-run", FirewallSettings()), clock=lambda: T0)
    for bad in ("127.0.0.1", "224.0.0.5"):
        with pytest.raises(UsageError):
            enf.plan([_d(bad, Action.BLOCK, T0 + 10)])
