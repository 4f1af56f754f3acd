# nftables backend: one `inet` table of our own, built and changed by pure functions that
# return libnftables JSON; apply() pipes one batch to `nft -j -f -` (one transaction).
#
# Layout: a filter chain on prerouting at priority raw (-300) returns for allowed sources
# and drops blocked ones *before conntrack*, so no `ct state established` accept in the
# host's ruleset can let a blocked flow through; a nat chain at dstnat (-100) redirects
# deflected sources' SIP ports to the decoy port. Single addresses live in plain hash
# sets (fast to fill: the 100k/1M path) and prefixes in separate interval sets, since
# interval sets are slow to grow (FIELD-NOTES). Every set has `flags timeout` and
# per-element counters. Adding an element that is present refreshes its timeout on
# Linux >= 6.10; older kernels keep the old timeout.
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from sipdeflect.errors import FirewallError
from sipdeflect.firewall import conntrack
from sipdeflect.firewall.backend import Runner, register
from sipdeflect.firewall.model import (
    Element,
    FirewallSettings,
    Listed,
    Network,
    SetName,
    is_single,
)
from sipdeflect.firewall.plan import FlushFlows, Plan, Put, Remove, Setup, Teardown

FAMILY = "inet"
FILTER_CHAIN, NAT_CHAIN = "pre_filter", "pre_nat"
PRIO_RAW, PRIO_DSTNAT = -300, -100
Cmd = dict[str, Any]


def set_name(s: SetName, version: int, single: bool) -> str:
    # allow holds few entries: one interval set per family, singles included.
    if s is SetName.ALLOW:
        return f"allow{version}"
    return f"{s}{version}" if single else f"{s}{version}_net"


def all_sets() -> list[tuple[str, SetName, int, bool]]:
    """(name, which set, ip version, interval?) for every kernel set we own."""
    out = [(set_name(SetName.ALLOW, v, False), SetName.ALLOW, v, True) for v in (4, 6)]
    for s in (SetName.DEFLECT, SetName.BLOCK):
        for v in (4, 6):
            out += [(set_name(s, v, True), s, v, False), (set_name(s, v, False), s, v, True)]
    return out


def _saddr(version: int, set_: str) -> Cmd:
    proto = "ip" if version == 4 else "ip6"
    left = {"payload": {"protocol": proto, "field": "saddr"}}
    return {"match": {"op": "==", "left": left, "right": f"@{set_}"}}


def _rule(table: str, chain: str, expr: list[Cmd]) -> Cmd:
    return {"add": {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": expr}}}


def setup_cmds(st: FirewallSettings) -> list[Cmd]:
    """Idempotent: `add` keeps existing sets and their elements; chains are refilled."""
    t = st.table
    cmds: list[Cmd] = [{"add": {"table": {"family": FAMILY, "name": t}}}]
    for name, _, v, interval in all_sets():
        flags = ["interval", "timeout"] if interval else ["timeout"]
        spec: Cmd = {
            "family": FAMILY,
            "table": t,
            "name": name,
            "type": "ipv4_addr" if v == 4 else "ipv6_addr",
            "flags": flags,
            "stmt": [{"counter": None}],
        }
        cmds.append({"add": {"set": spec}})
    for chain, kind, prio in ((FILTER_CHAIN, "filter", PRIO_RAW), (NAT_CHAIN, "nat", PRIO_DSTNAT)):
        spec = {
            "family": FAMILY,
            "table": t,
            "name": chain,
            "type": kind,
            "hook": "prerouting",
            "prio": prio,
            "policy": "accept",
        }
        cmds += [{"add": {"chain": spec}}, {"flush": {"chain": {**spec}}}]
    ports: Any = st.sip_ports[0] if len(st.sip_ports) == 1 else {"set": list(st.sip_ports)}
    for v in (4, 6):
        allow = set_name(SetName.ALLOW, v, False)
        cmds.append(_rule(t, FILTER_CHAIN, [_saddr(v, allow), {"return": None}]))
        cmds.extend(
            _rule(t, FILTER_CHAIN, [_saddr(v, set_name(SetName.BLOCK, v, single)), {"drop": None}])
            for single in (True, False)
        )
        cmds.append(_rule(t, NAT_CHAIN, [_saddr(v, allow), {"return": None}]))
        for single in (True, False):
            expr = [
                _saddr(v, set_name(SetName.DEFLECT, v, single)),
                {
                    "match": {
                        "op": "==",
                        "left": {"meta": {"key": "l4proto"}},
                        "right": {"set": ["udp", "tcp"]},
                    }
                },
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "th", "field": "dport"}},
                        "right": ports,
                    }
                },
                {"redirect": {"port": st.decoy_port}},
            ]
            cmds.append(_rule(t, NAT_CHAIN, expr))
    return cmds


def teardown_cmds(st: FirewallSettings) -> list[Cmd]:
    """Add-then-delete: deleting a missing table would fail; this never does."""
    table = {"family": FAMILY, "name": st.table}
    return [{"add": {"table": table}}, {"delete": {"table": table}}]


def elem_value(target: Network) -> Any:
    if is_single(target):
        return str(target.network_address)
    return {"prefix": {"addr": str(target.network_address), "len": target.prefixlen}}


def _elem(e: Element) -> Any:
    if e.timeout is None:
        return elem_value(e.target)
    return {"elem": {"val": elem_value(e.target), "timeout": e.timeout}}


def _element_cmd(verb: str, table: str, set_: str, elems: list[Any]) -> Cmd:
    return {verb: {"element": {"family": FAMILY, "table": table, "name": set_, "elem": elems}}}


def _by_set(s: SetName, items: Iterable[Any], target_of: Any) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for item in items:
        t = target_of(item)
        groups.setdefault(set_name(s, t.version, is_single(t)), []).append(item)
    return groups


def put_cmds(table: str, op: Put) -> list[Cmd]:
    groups = _by_set(op.set, op.elements, lambda e: e.target)
    return [_element_cmd("add", table, n, [_elem(e) for e in es]) for n, es in groups.items()]


def remove_cmds(table: str, op: Remove, present: dict[str, set[Network]]) -> list[Cmd]:
    """Hash sets: add-then-delete makes deleting an absent element safe. Interval sets
    (which would reject an overlapping add) only get deletes for members present."""
    cmds: list[Cmd] = []
    for name, targets in _by_set(op.set, op.targets, lambda t: t).items():
        if name in present:
            vals = [elem_value(t) for t in targets if t in present[name]]
            if vals:
                cmds.append(_element_cmd("delete", table, name, vals))
        else:
            vals = [elem_value(t) for t in targets]
            cmds += [
                _element_cmd("add", table, name, vals),
                _element_cmd("delete", table, name, vals),
            ]
    return cmds


def interval_sets_touched(plan: Plan) -> set[str]:
    names: set[str] = set()
    for op in plan.ops:
        if isinstance(op, Remove):
            names |= {set_name(op.set, t.version, is_single(t)) for t in op.targets}
    return {n for n, _, _, interval in all_sets() if interval} & names


def batch(plan: Plan, table: str, present: dict[str, set[Network]] | None = None) -> Cmd:
    """The whole plan as one libnftables JSON document (one transaction)."""
    cmds: list[Cmd] = []
    for op in plan.ops:
        if isinstance(op, Setup):
            cmds += setup_cmds(op.settings)
        elif isinstance(op, Teardown):
            cmds += teardown_cmds(op.settings)
        elif isinstance(op, Put):
            cmds += put_cmds(table, op)
        elif isinstance(op, Remove):
            cmds += remove_cmds(table, op, present or {})
    return {"nftables": cmds}


def parse_elements(doc: Any, names: dict[str, SetName]) -> list[Listed]:
    """`nft -j list ...` output -> Listed rows for the sets we know."""
    out: list[Listed] = []
    for item in doc.get("nftables", []):
        spec = item.get("set")
        if not spec or spec.get("name") not in names:
            continue
        for raw in spec.get("elem", []):
            body = raw["elem"] if isinstance(raw, dict) and "elem" in raw else {"val": raw}
            val = body["val"]
            if isinstance(val, dict):
                p = val["prefix"]
                target: Network = ipaddress.ip_network(f"{p['addr']}/{p['len']}")
            else:
                target = ipaddress.ip_network(val)
            counter = body.get("counter") or {}
            out.append(
                Listed(
                    set=names[spec["name"]],
                    target=target,
                    timeout=body.get("timeout"),
                    expires=body.get("expires"),
                    packets=counter.get("packets"),
                    bytes=counter.get("bytes"),
                )
            )
    return out


class NftablesBackend:
    name = "nftables"

    def __init__(self, settings: FirewallSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner

    def _nft_json(self, doc: Cmd) -> None:
        import json  # noqa: PLC0415

        self.runner.run(["nft", "-j", "-f", "-"], input_=json.dumps(doc, separators=(",", ":")))

    def installed(self) -> bool:
        self.runner.require("nft")
        doc = self.runner.run_json(["nft", "-j", "list", "tables", FAMILY])
        return any(
            "table" in i and i["table"]["name"] == self.settings.table
            for i in doc.get("nftables", [])
        )

    def _present(self, names: set[str]) -> dict[str, set[Network]]:
        if not names:
            return {}
        kinds = {n: s for n, s, _, _ in all_sets()}
        present: dict[str, set[Network]] = {}
        for n in sorted(names):
            doc = self.runner.run_json(["nft", "-j", "list", "set", FAMILY, self.settings.table, n])
            present[n] = {x.target for x in parse_elements(doc, {n: kinds[n]})}
        return present

    def apply(self, plan: Plan) -> None:
        needs_table = any(isinstance(op, Put | Remove) for op in plan.ops)
        sets_up = any(isinstance(op, Setup) for op in plan.ops)
        if needs_table and not sets_up and not self.installed():
            raise FirewallError(
                f"nftables table {FAMILY} {self.settings.table} is missing; "
                "run `sipdeflect firewall setup` first"
            )
        present = self._present(interval_sets_touched(plan)) if needs_table else {}
        doc = batch(plan, self.settings.table, present)
        if doc["nftables"]:
            self._nft_json(doc)
        for op in plan.ops:
            if isinstance(op, FlushFlows):
                conntrack.flush_flows(op.targets, self.runner.netns)

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        wanted = set(sets) if sets is not None else set(SetName)
        names = {n: s for n, s, _, _ in all_sets() if s in wanted}
        if not self.installed():
            return []
        out: list[Listed] = []
        for n in names:
            doc = self.runner.run_json(["nft", "-j", "list", "set", FAMILY, self.settings.table, n])
            out += parse_elements(doc, names)
        return out

    def show(self) -> str:
        if not self.installed():
            return f"(no table {FAMILY} {self.settings.table})"
        return self.runner.run(["nft", "list", "table", FAMILY, self.settings.table])


@register("nftables")
def _make(settings: FirewallSettings, runner: Runner) -> NftablesBackend:
    return NftablesBackend(settings, runner)
