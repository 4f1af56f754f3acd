# The daemon's side of the firewall: Decisions in, one firewall Plan out, applied at once.
# Decisions are grouped per action so a batch (or a restart's reconcile of a million
# entries) becomes a few Put/Remove ops with parallel tuples, one transaction. Kernel
# timeouts are the time left until each decision's `until`, so a deflect or block lapses by
# itself even when the daemon is gone. reconcile() makes the sets hold exactly what is in
# force: what the kernel has but should not is removed, everything in force is put again.
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from sipdeflect.decisions import Action, Decision, Network
from sipdeflect.firewall.backend import Backend
from sipdeflect.firewall.model import MAX_TIMEOUT, Listed, SetName
from sipdeflect.firewall.plan import FlushFlows, Op, Plan, Put, Remove, check_enforceable

_SET = {Action.DEFLECT: SetName.DEFLECT, Action.BLOCK: SetName.BLOCK, Action.ALLOW: SetName.ALLOW}


class FirewallEnforcer:
    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock

    def _timeout(self, d: Decision, now: float) -> int | None:
        if d.until is None:
            return None
        return min(MAX_TIMEOUT, max(1, math.ceil(d.until - now)))

    def plan(self, decisions: Sequence[Decision]) -> Plan:
        now = self.clock()
        puts: dict[SetName, dict[Network, int | None]] = {s: {} for s in SetName}
        removes: dict[SetName, set[Network]] = {s: set() for s in SetName}
        flush: dict[Network, None] = {}
        for d in decisions:  # later decisions about a target win over earlier ones
            t = d.target
            for s in SetName:
                puts[s].pop(t, None)
                removes[s].discard(t)
            if d.action is Action.RELEASE:
                for s in SetName:
                    removes[s].add(t)
            else:
                puts[_SET[d.action]][t] = self._timeout(d, now)
                # Deflect leaves block; allow leaves both; block keeps a deflect entry,
                # which never matters: the drop happens before the redirect.
                if d.action is Action.DEFLECT:
                    removes[SetName.BLOCK].add(t)
                elif d.action is Action.ALLOW:
                    removes[SetName.BLOCK].add(t)
                    removes[SetName.DEFLECT].add(t)
            flush[t] = None
        acted = [*puts[SetName.DEFLECT], *puts[SetName.BLOCK]]
        check_enforceable(acted, allow=(), own=())  # never loopback, multicast, ...
        ops: list[Op] = [Remove(s, tuple(r)) for s, r in removes.items() if r]
        ops += [Put(s, tuple(p), tuple(p.values())) for s, p in puts.items() if p]
        if flush:
            ops.append(FlushFlows(tuple(flush)))
        return Plan(tuple(ops))

    def enforce(self, decisions: Sequence[Decision]) -> None:
        plan = self.plan(decisions)
        if plan.ops:
            self.backend.apply(plan)

    def reconcile(self, active: Sequence[Decision]) -> None:
        wanted = self.plan(active)
        want = {(op.set, t) for op in wanted.ops if isinstance(op, Put) for t in op.targets}
        stale: dict[SetName, list[Network]] = {}
        for row in self.backend.list():
            if (row.set, row.target) not in want:
                stale.setdefault(row.set, []).append(row.target)
        extra: list[Op] = [Remove(s, tuple(ts)) for s, ts in stale.items()]
        self.backend.apply(Plan((*extra, *wanted.ops)))

    def counters(self) -> list[Listed]:
        """What the block sets dropped, with the kernel's counters, for traffic
        accounting (Backend.dropped); empty where the backend has none."""
        return self.backend.dropped()
