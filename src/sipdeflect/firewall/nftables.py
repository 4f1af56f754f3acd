# nftables backend: one `inet` table of our own, built and changed by pure functions. The
# table's structure is libnftables JSON (`nft -j -f -`). Element changes are one
# transaction too: when every one is a single address in a hash set (the bulk block
# path), one netlink batch straight to the kernel (nfnl.py), which skips nft's parse;
# otherwise (prefixes, the allow sets) one script in nft's own language (`nft -f -`),
# which nft parses several times faster than JSON with per-element timeouts
# (bench/bench_firewall.py).
#
# Layout: a filter chain on prerouting at priority raw (-300) returns for allowed sources
# and drops blocked ones *before conntrack*, so no `ct state established` accept in the
# host's ruleset can let a blocked flow through; a nat chain at dstnat (-100) redirects
# deflected sources' SIP ports to the decoy port. Packets *to* a deflected address from
# the SIP ports (the real PBX answering) are dropped before conntrack too, on output (a
# local PBX) and prerouting (one behind this host): a PBX answer still in flight when the
# flow is flushed would otherwise create a conntrack entry PBX -> attacker whose reply
# direction the attacker's next packets match, un-NATed, straight back to the PBX. Single
# addresses live in plain hash sets (fast to fill: the 100k/1M path) and prefixes in
# separate interval sets, since interval sets are slow to grow (FIELD-NOTES). Every set
# has `flags timeout` and per-element counters. Adding an element that is present
# refreshes its timeout on Linux >= 6.10; older kernels keep the old timeout.
#
# What the blocks drop, per source, for traffic accounting: a blocked packet jumps to a
# chain that first `update`s a small dynamic set (dropped4/6: the sources dropped within
# DROPPED_TIMEOUT, each with its counter), then drops it in a rule of its own, so a full
# meter set (it fails open at its size) can cost an uncounted packet, never a drop. Reading it is a
# dump of the sources still sending, not of every block: a million-element block set took
# ~60 s to dump (the kernel restarts its walk for each ~32 KiB message).
from __future__ import annotations

import contextlib
import errno
import gc
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from sipdeflect.errors import FirewallError
from sipdeflect.firewall import conntrack, nfnl
from sipdeflect.firewall.backend import Runner, register
from sipdeflect.firewall.model import (
    FirewallSettings,
    Listed,
    Network,
    SetName,
    is_single,
)
from sipdeflect.firewall.plan import FlushFlows, Plan, Put, Remove, Setup, Teardown

FAMILY = "inet"
FILTER_CHAIN, NAT_CHAIN, OUT_CHAIN = "pre_filter", "pre_nat", "out_filter"
PRIO_RAW, PRIO_DSTNAT = -300, -100
DROPPED_TIMEOUT = 600  # seconds a dropped source stays metered after its last packet
DROPPED_SIZE = 65_536  # sources metered per family; past it drops go uncounted
Cmd = dict[str, Any]


def dropped_set(version: int) -> str:
    return f"dropped{version}"


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


def _saddr(version: int, set_: str, field: str = "saddr") -> Cmd:
    proto = "ip" if version == 4 else "ip6"
    left = {"payload": {"protocol": proto, "field": field}}
    return {"match": {"op": "==", "left": left, "right": f"@{set_}"}}


def _sip(ports: Any, field: str) -> list[Cmd]:
    """UDP or TCP, with the SIP ports as ``field`` (dport or sport)."""
    return [
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
                "left": {"payload": {"protocol": "th", "field": field}},
                "right": ports,
            }
        },
    ]


def _rule(table: str, chain: str, expr: list[Cmd]) -> Cmd:
    return {"add": {"rule": {"family": FAMILY, "table": table, "chain": chain, "expr": expr}}}


def setup_cmds(st: FirewallSettings, meters: bool = True) -> list[Cmd]:
    """Idempotent: `add` keeps existing sets and their elements; chains are refilled. The
    meter sets only with ``meters`` (when missing): the update rules make them `dynamic`,
    which 1.0.6's JSON cannot say, and adding a set that exists with other flags is
    refused (EEXIST)."""
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
    for v in (4, 6) if meters else ():
        meter: Cmd = {
            "family": FAMILY,
            "table": t,
            "name": dropped_set(v),
            "type": "ipv4_addr" if v == 4 else "ipv6_addr",
            "flags": ["timeout"],
            "timeout": DROPPED_TIMEOUT,
            "size": DROPPED_SIZE,
            "stmt": [{"counter": None}],
        }
        cmds.append({"add": {"set": meter}})
    for chain, kind, hook, prio in (
        (FILTER_CHAIN, "filter", "prerouting", PRIO_RAW),
        (NAT_CHAIN, "nat", "prerouting", PRIO_DSTNAT),
        (OUT_CHAIN, "filter", "output", PRIO_RAW),
    ):
        spec = {
            "family": FAMILY,
            "table": t,
            "name": chain,
            "type": kind,
            "hook": hook,
            "prio": prio,
            "policy": "accept",
        }
        cmds += [{"add": {"chain": spec}}, {"flush": {"chain": {**spec}}}]
    ports: Any = st.sip_ports[0] if len(st.sip_ports) == 1 else {"set": list(st.sip_ports)}
    for v in (4, 6):
        allow = set_name(SetName.ALLOW, v, False)
        cmds.append(_rule(t, FILTER_CHAIN, [_saddr(v, allow), {"return": None}]))
        # One lookup of the block set (its element counters count each match), then the
        # drop chain: count the source (a full meter only skips to the next rule), drop.
        drop = f"drop{v}"
        drop_chain = {"family": FAMILY, "table": t, "name": drop}
        src = {"payload": {"protocol": "ip" if v == 4 else "ip6", "field": "saddr"}}
        count = {"set": {"op": "update", "elem": src, "set": f"@{dropped_set(v)}"}}
        cmds += [{"add": {"chain": drop_chain}}, {"flush": {"chain": drop_chain}}]
        cmds += [_rule(t, drop, [count]), _rule(t, drop, [{"drop": None}])]
        for single in (True, False):
            block = _saddr(v, set_name(SetName.BLOCK, v, single))
            cmds.append(_rule(t, FILTER_CHAIN, [block, {"jump": {"target": drop}}]))
        cmds.append(_rule(t, NAT_CHAIN, [_saddr(v, allow), {"return": None}]))
        cmds.append(_rule(t, OUT_CHAIN, [_saddr(v, allow, "daddr"), {"return": None}]))
        for single in (True, False):
            deflect = set_name(SetName.DEFLECT, v, single)
            redirect = [_saddr(v, deflect), *_sip(ports, "dport")]
            cmds.append(_rule(t, NAT_CHAIN, [*redirect, {"redirect": {"port": st.decoy_port}}]))
            answer = [_saddr(v, deflect, "daddr"), *_sip(ports, "sport"), {"drop": None}]
            cmds += [_rule(t, FILTER_CHAIN, answer), _rule(t, OUT_CHAIN, answer)]
    return cmds


def teardown_cmds(st: FirewallSettings) -> list[Cmd]:
    """Add-then-delete: deleting a missing table would fail; this never does."""
    table = {"family": FAMILY, "name": st.table}
    return [{"add": {"table": table}}, {"delete": {"table": table}}]


def elem_value(target: Network) -> Any:
    """An element in libnftables JSON (used when reading sets back)."""
    if is_single(target):
        return str(target.network_address)
    return {"prefix": {"addr": str(target.network_address), "len": target.prefixlen}}


def _elem_text(t: Network) -> str:
    return str(t.network_address) if t.prefixlen == t.max_prefixlen else t.with_prefixlen


_SET_NAMES = {
    (s, v, single): set_name(s, v, single)
    for s in SetName
    for v in (4, 6)
    for single in (True, False)
}


def _group(s: SetName, targets: Iterable[Network]) -> dict[str, list[Network]]:
    groups: dict[str, list[Network]] = {}
    for t in targets:
        name = _SET_NAMES[s, t.version, t.prefixlen == t.max_prefixlen]
        groups.setdefault(name, []).append(t)
    return groups


def put_lines(table: str, op: Put) -> list[str]:
    """`add element` lines in nft's own language: for a million elements nft parses this
    several times faster than the JSON equivalent with per-element timeouts."""
    groups: dict[str, list[str]] = {}
    names = _SET_NAMES
    suffix: dict[int | None, str] = {None: ""}
    ntoa, ntop = socket.inet_ntoa, socket.inet_ntop
    for t, timeout in zip(op.targets, op.timeouts, strict=True):
        v = t.version
        single = t.prefixlen == t.max_prefixlen
        if single:  # measured twice as fast as str(address); same text nft reads
            packed = t.network_address.packed
            text = ntoa(packed) if v == 4 else ntop(socket.AF_INET6, packed)
        else:
            text = t.with_prefixlen
        if timeout not in suffix:
            suffix[timeout] = f" timeout {timeout}s"
        groups.setdefault(names[op.set, v, single], []).append(text + suffix[timeout])
    return [
        f"add element {FAMILY} {table} {n} {{ {', '.join(items)} }}" for n, items in groups.items()
    ]


def remove_lines(table: str, op: Remove, present: dict[str, set[Network]]) -> list[str]:
    """Hash sets: add-then-delete makes deleting an absent element safe (nft 1.0.6 has no
    `destroy`). Interval sets (which would reject an overlapping add) only get deletes for
    members present."""
    lines: list[str] = []
    for name, targets in _group(op.set, op.targets).items():
        if name in present:
            vals = [_elem_text(t) for t in targets if t in present[name]]
            if vals:
                lines.append(f"delete element {FAMILY} {table} {name} {{ {', '.join(vals)} }}")
        else:
            items = ", ".join(_elem_text(t) for t in targets)
            lines += [
                f"add element {FAMILY} {table} {name} {{ {items} }}",
                f"delete element {FAMILY} {table} {name} {{ {items} }}",
            ]
    return lines


def element_script(plan: Plan, table: str, present: dict[str, set[Network]] | None = None) -> str:
    """Every element change of the plan as one nft script (one transaction with `nft -f`)."""
    lines: list[str] = []
    for op in plan.ops:
        if isinstance(op, Put):
            lines += put_lines(table, op)
        elif isinstance(op, Remove):
            lines += remove_lines(table, op, present or {})
    return "\n".join(lines) + "\n" if lines else ""


def _runs(
    s: SetName, targets: Iterable[Network], timeouts: Iterable[int | None]
) -> list[nfnl.ElemRun] | None:
    """Netlink runs adding targets to the hash sets of `s`, or None if any is a prefix.
    One pass with cheap checks: this is the per-element cost of the bulk path."""
    v4: list[int] = []
    v6: list[bytes] = []
    t4: list[int | None] = []
    t6: list[int | None] = []
    ip4 = ipaddress.IPv4Network
    for t, x in zip(targets, timeouts, strict=True):
        if type(t) is ip4:
            if t.prefixlen != 32:
                return None
            v4.append(int(t.network_address))
            t4.append(x)
        else:
            if t.prefixlen != 128:
                return None
            v6.append(t.network_address.packed)
            t6.append(x)
    runs: list[nfnl.ElemRun] = []
    for version, size, keys, tmos in ((4, 4, v4, t4), (6, 16, v6, t6)):
        if not keys:
            continue
        packed = struct.pack(f">{len(keys)}I", *keys) if version == 4 else b"".join(v6)
        name = _SET_NAMES[s, version, True]
        for has, sub_keys, sub_tmos in _split_timeouts(packed, size, tmos):
            runs.append(nfnl.ElemRun(False, name, size, sub_keys, _ms(sub_tmos) if has else None))
    return runs


def _split_timeouts(
    keys: bytes, size: int, tmos: list[int | None]
) -> list[tuple[bool, bytes, list[int]]]:
    """(with timeout?, keys, timeouts): elements without a timeout carry no attribute."""
    if None not in tmos:
        return [(True, keys, tmos)]  # type: ignore[list-item]
    if all(x is None for x in tmos):
        return [(False, keys, [])]
    out = []
    for has in (True, False):
        idx = [i for i, x in enumerate(tmos) if (x is not None) == has]
        sub = b"".join(keys[i * size : (i + 1) * size] for i in idx)
        out.append((has, sub, [tmos[i] or 0 for i in idx]))
    return out


def _ms(tmos: list[int]) -> int | bytes:
    """One value for all when they agree (the usual bulk ban), else one each."""
    first = tmos[0]
    if tmos.count(first) == len(tmos):
        return first * 1000
    return struct.pack(f">{len(tmos)}Q", *(x * 1000 for x in tmos))


def netlink_runs(plan: Plan) -> list[nfnl.ElemRun] | None:
    """Every element change of the plan as netlink runs, in order, or None when one needs
    nft: a prefix, or the allow sets (interval sets). Removes are add-then-delete, like
    the nft script, so removing an absent element is not an error."""
    runs: list[nfnl.ElemRun] = []
    for op in plan.ops:
        if isinstance(op, Put | Remove):
            if op.set is SetName.ALLOW:
                return None
            tmos = op.timeouts if isinstance(op, Put) else (None,) * len(op.targets)
            got = _runs(op.set, op.targets, tmos)
            if got is None:
                return None
            if isinstance(op, Remove):
                got += [nfnl.ElemRun(True, r.set, r.key_len, r.keys) for r in got]
            runs += got
    return runs


def interval_sets_touched(plan: Plan) -> set[str]:
    names: set[str] = set()
    for op in plan.ops:
        if isinstance(op, Remove):
            names |= {set_name(op.set, t.version, is_single(t)) for t in op.targets}
    return {n for n, _, _, interval in all_sets() if interval} & names


def batch(plan: Plan, meters: bool = True) -> Cmd:
    """The plan's structural changes (setup, teardown) as one libnftables JSON document;
    ``meters``: whether a setup adds the meter sets (see setup_cmds)."""
    cmds: list[Cmd] = []
    torn = False
    for op in plan.ops:
        if isinstance(op, Setup):
            cmds += setup_cmds(op.settings, meters or torn)
        elif isinstance(op, Teardown):
            cmds += teardown_cmds(op.settings)
            torn = True
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


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Building a million acyclic objects triggers the cyclic collector over and over
    (measured: 5.3 s of CPU for a million rows with it, 2.1 s without)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def listed_rows(s: SetName, found: nfnl.Elements) -> list[Listed]:
    """A netlink dump of one hash set as the Listed rows parse_elements gives for the
    same set: whole seconds, rounded down as nft prints them; 0 means none."""
    net: type[Network] = ipaddress.IPv4Network if found.key_len == 4 else ipaddress.IPv6Network
    with _no_gc():
        return [
            Listed(s, net(k), t // 1000 if t else None, x // 1000 if x else None, p, b)
            for k, t, x, p, b in zip(
                found.keys, found.timeouts, found.expires, found.packets, found.bytes, strict=True
            )
        ]


class NftablesBackend:
    name = "nftables"

    def __init__(self, settings: FirewallSettings, runner: Runner) -> None:
        self.settings = settings
        self.runner = runner
        self.last_route: str | None = None  # how the last apply sent elements: netlink/nft

    def _nft_json(self, doc: Cmd) -> None:
        import json  # noqa: PLC0415

        self.runner.run(["nft", "-j", "-f", "-"], input_=json.dumps(doc, separators=(",", ":")))

    def installed(self) -> bool:
        """Whether our table exists. Asks for the small allow set only: `nft list tables`
        (even with -t) fetches every set element first, which took over a minute with a
        million blocks in the table."""
        return self._has(set_name(SetName.ALLOW, 4, False))

    def _has(self, set_: str) -> bool:
        """Whether our table holds this small set (nft lists only it; see installed())."""
        self.runner.require("nft")
        try:
            self.runner.run(["nft", "-j", "list", "set", FAMILY, self.settings.table, set_])
        except FirewallError as exc:
            if "No such file or directory" in str(exc):
                return False
            raise
        return True

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
        missing = FirewallError(
            f"nftables table {FAMILY} {self.settings.table} is missing; "
            "run `sipdeflect firewall setup` first"
        )
        touched = interval_sets_touched(plan) if needs_table else set()
        if touched and not sets_up and not self.installed():
            raise missing
        present = self._present(touched)
        # Structure first (JSON), then every element change (one netlink batch or one nft
        # script): each is one transaction; a plan mixing both (setup + restore) is
        # applied as two.
        doc = batch(plan, meters=sets_up and not self._has(dropped_set(4)))
        if doc["nftables"]:
            self._nft_json(doc)
        try:
            self.last_route = self._elements(plan, present)
        except FirewallError:
            # Only now ask whether the table is there: one process less per decision.
            if needs_table and not sets_up and not self.installed():
                raise missing from None
            raise
        for op in plan.ops:
            if isinstance(op, FlushFlows):
                conntrack.flush_flows(op.targets, self.runner.netns)

    def _elements(self, plan: Plan, present: dict[str, set[Network]]) -> str | None:
        """Apply the plan's element changes as one transaction; which route took them."""
        runs = netlink_runs(plan) if self.runner.netlink else None
        if runs:
            table = self.settings.table
            try:
                nfnl.send(
                    nfnl.encode_batch(table, runs), table, self.runner.netns, self.runner.timeout
                )
            except nfnl.Unavailable:
                pass  # no netlink socket here (privilege, seccomp...): nft says why
            else:
                return "netlink"
        script = element_script(plan, self.settings.table, present)
        if not script:
            return None
        self.runner.run(["nft", "-f", "-"], input_=script)
        return "nft"

    def dropped(self) -> list[Listed]:
        """Per source, what the block sets dropped (see the top): the dropped4/6 meters,
        whose elements are the sources still sending, reported as block-set rows."""
        if not self.runner.netlink:
            return self.list([SetName.BLOCK])
        out: list[Listed] = []
        try:
            for v in (4, 6):
                found = nfnl.list_set(
                    self.settings.table, dropped_set(v), self.runner.netns, self.runner.timeout
                )
                out += listed_rows(SetName.BLOCK, found)
        except nfnl.Unavailable:
            return self.list([SetName.BLOCK])
        except nfnl.DumpError as exc:
            if exc.errno == errno.ENOENT:  # a table set up before the meters: the old way
                return self.list([SetName.BLOCK]) if self.installed() else []
            raise
        return out

    def list(self, sets: Iterable[SetName] | None = None) -> list[Listed]:
        """Hash sets (single addresses: up to a million blocks) over netlink when it is
        available, one dump each; interval sets (small) and everything else with
        `nft -j list set`, which needs ~75 s for a million elements."""
        wanted = set(sets) if sets is not None else set(SetName)
        names = {n: s for n, s, _, _ in all_sets() if s in wanted}
        hashed = [n for n, _, _, interval in all_sets() if n in names and not interval]
        got: dict[str, list[Listed]] = {}
        if self.runner.netlink:
            try:
                for n in hashed:
                    found = nfnl.list_set(
                        self.settings.table, n, self.runner.netns, self.runner.timeout
                    )
                    got[n] = listed_rows(names[n], found)
            except nfnl.Unavailable:
                got = {}  # no netlink socket here (privilege, seccomp...): nft says why
            except nfnl.DumpError as exc:
                # Only now ask whether the table is there: one process less per listing.
                if exc.errno == errno.ENOENT and not self.installed():
                    return []
                raise
        if not got and not self.installed():
            return []
        for n in names:
            if n not in got:
                doc = self.runner.run_json(
                    ["nft", "-j", "list", "set", FAMILY, self.settings.table, n]
                )
                got[n] = parse_elements(doc, names)
        return [x for n in names for x in got[n]]

    def show(self) -> str:
        if not self.installed():
            return f"(no table {FAMILY} {self.settings.table})"
        return self.runner.run(["nft", "list", "table", FAMILY, self.settings.table])


@register("nftables")
def _make(settings: FirewallSettings, runner: Runner) -> NftablesBackend:
    return NftablesBackend(settings, runner)
